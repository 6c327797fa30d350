"""The OpenAI-compatible guard proxy (`safesail serve`): app factory, wire format, backends, auth and limits."""

from safesail_guard.server.app import create_app
from safesail_guard.server.config import Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app"]
