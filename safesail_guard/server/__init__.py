"""The OpenAI-compatible guard proxy (`safesail serve`).

Where things are: `app` (the factory `create_app` and its lifespan), `state` (what the routes share), `routes`
(health, models, chat, score) and `ui_routes` (the dashboard), `chat_request` (from HTTP request to `ChatJob`),
`responses` (JSON completion and SSE stream), `recording` (audit records and span events), `verdict` (the
``safesail`` field and headers; the verdict itself is `runtime/verdict.py`), `openai_schema` (the wire format
and local-mode field rules), `openapi`, `errors`, `auth`, `limits`, `config`; the backends: `jobs` (job records,
cancel tokens, the model thread), `backend` (their shared base), `local_backend` (+ `stop_matcher`) and
`upstream_backend` (+ `upstream_reply`, `upstream_release`).
"""

from safesail_guard.server.app import create_app
from safesail_guard.server.config import Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app"]
