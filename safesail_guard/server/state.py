"""`ServerState`: what the proxy's routes share, owned by the app's lifespan (`server/app.py`), no module globals.

The lifespan builds it before the first request (keys, admission, audit log, telemetry) and sets ``backend``
once the model is loaded; every route module (`server/routes.py`, `server/ui_routes.py`) reads it through
`server_state` or, for routes that need the model, `ready_state` (503 while loading or after a failed load).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from safesail_guard.server.config import ServerConfig
from safesail_guard.server.errors import APIError
from safesail_guard.server.limits import Admission

if TYPE_CHECKING:
    from safesail_guard.audit import AuditLog
    from safesail_guard.server.auth import KeyStore
    from safesail_guard.server.backend import GuardBackend
    from safesail_guard.telemetry import GuardTelemetry


@dataclass
class ServerState:
    """Everything the routes share."""

    config: ServerConfig
    keys: KeyStore
    admission: Admission
    audit: AuditLog
    telemetry: GuardTelemetry
    backend: GuardBackend | None = None  # a LocalBackend or UpstreamBackend once loaded
    load_error: str | None = None
    started: float = field(default_factory=time.time)
    decisions: int = 0  # verdicts handed to the audit log (two per answered chat)

    @property
    def ready(self) -> bool:
        """True when requests can be served."""
        return self.backend is not None

    @property
    def served(self) -> GuardBackend:
        """The loaded backend (routes reach it after `ready_state`; before loading this is a programming error)."""
        if self.backend is None:
            raise RuntimeError("the backend is not loaded; call ready_state first")
        return self.backend


def server_state(request: Request) -> ServerState:
    """The app's state (set by the lifespan before the first request)."""
    st: ServerState = request.app.state.safesail
    return st


def ready_state(request: Request) -> ServerState:
    """The app's state once the model is loaded: 503 while it loads (with Retry-After) or after loading failed."""
    st = server_state(request)
    if not st.ready:
        if st.load_error:
            raise APIError(503, f"the guard failed to load: {st.load_error}", code="not_ready")
        raise APIError(503, "the model is still loading; retry shortly", code="not_ready",
                       headers={"Retry-After": "5"})
    return st


__all__ = ["ServerState", "ready_state", "server_state"]
