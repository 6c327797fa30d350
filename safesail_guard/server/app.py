"""The guard proxy's app factory: `create_app` builds an OpenAI-compatible FastAPI app with a lifespan (no module
globals).

The lifespan owns the `ServerState` (`server/state.py`): API keys, admission, audit log and telemetry are ready
before the first request; the model, database and policy load on the model thread in the background
(`/readyz` says when) into a `LocalBackend` or `UpstreamBackend`; the audit log's retention runs every
`RETENTION_EVERY_S`. The app's parts live beside this module: error handlers (`server/errors.py`), the proxy's
routes (`server/routes.py`, which answer through `server/responses.py`), the dashboard (`server/ui_routes.py`)
and the OpenAPI schema (`server/openapi.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from safesail_guard.server.config import ServerConfig
from safesail_guard.server.errors import install_error_handlers
from safesail_guard.server.limits import Admission
from safesail_guard.server.openapi import install_openapi
from safesail_guard.server.routes import add_routes
from safesail_guard.server.state import ServerState
from safesail_guard.server.ui_routes import install_ui

if TYPE_CHECKING:
    from safesail_guard.audit import AuditLog
    from safesail_guard.policy import CompiledPolicy
    from safesail_guard.runtime.generation import GuardedModel
    from safesail_guard.server.auth import KeyStore
    from safesail_guard.server.backend import GuardBackend
    from safesail_guard.server.jobs import ModelWorker
    from safesail_guard.telemetry import GuardTelemetry

log = logging.getLogger("safesail.server")

RETENTION_EVERY_S = 6 * 3600
"""How often a running server applies the audit log's retention (it is also applied when the log opens)."""


def create_app(config: ServerConfig | None = None, *, guarded: GuardedModel | None = None,
               audit: AuditLog | None = None, telemetry: GuardTelemetry | None = None, keys: KeyStore | None = None,
               backend: GuardBackend | None = None) -> FastAPI:
    """Build the proxy app. ``guarded`` (a `GuardedModel`), ``audit`` (an `AuditLog`), ``telemetry`` (a
    `GuardTelemetry`), ``keys`` (a `KeyStore`) and ``backend`` may be given ready-made (tests, embedding);
    otherwise the lifespan builds them from ``config`` (the model loads on a background thread; /readyz says
    when it is done)."""
    config = config or ServerConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from safesail_guard.audit import AuditLog
        from safesail_guard.server.auth import KeyStore
        from safesail_guard.server.jobs import ModelWorker
        from safesail_guard.telemetry import GuardTelemetry

        st = ServerState(
            config,
            keys=keys if keys is not None else KeyStore.load(config.api_keys_file, config.api_keys_env),
            admission=Admission(config.limits.max_concurrent, config.limits.max_queue),
            audit=audit if audit is not None else AuditLog(config.audit),
            telemetry=telemetry if telemetry is not None else GuardTelemetry())
        app.state.safesail = st
        worker = ModelWorker()
        loader: asyncio.Task[None] | None = None
        if backend is not None:
            st.backend = backend
        elif guarded is not None:  # nothing to load: ready before the first request
            await _load_backend(st, worker, guarded)
        else:
            loader = asyncio.create_task(_load_backend(st, worker, guarded))
        retention = asyncio.create_task(_retention_loop(st)) if config.audit.retention_days else None
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
            if loader is not None and not loader.done():
                loader.cancel()
            if st.backend is not None:
                await st.backend.aclose()
            worker.shutdown()
            if audit is None:
                st.audit.close()

    app = FastAPI(title="safesail-guard", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible proxy that watches an LLM's safety features token by token.")
    install_error_handlers(app)
    add_routes(app)
    install_ui(app)
    install_openapi(app)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("safesail-guard")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return "0"


async def _retention_loop(st: ServerState) -> None:
    """Delete audit records older than the configured retention, every `RETENTION_EVERY_S`."""
    while True:
        await asyncio.sleep(RETENTION_EVERY_S)
        try:
            n = await asyncio.to_thread(st.audit.apply_retention)
            if n:
                log.info("audit retention: deleted %d records older than %g days", n,
                         st.config.audit.retention_days)
        except Exception as e:  # noqa: BLE001 - a failed purge must not stop the server; it retries later
            log.error("audit retention failed: %s", e)


async def _load_backend(st: ServerState, worker: ModelWorker, guarded: GuardedModel | None) -> None:
    """Load model, database and policy on the model thread; failures are reported by /readyz."""
    from safesail_guard.runtime.generation import GuardedModel
    from safesail_guard.server.local_backend import LocalBackend
    from safesail_guard.server.upstream_backend import UpstreamBackend

    cfg = st.config
    try:
        if guarded is None:
            guarded = await worker.run(GuardedModel.from_db, cfg.db, cfg.model, policy=cfg.policy)
        name = cfg.served_model_name or (cfg.upstream_model if cfg.mode == "upstream" else None) or \
            guarded.guard.model_name or "safesail-local"
        if cfg.mode == "local":
            st.backend = LocalBackend(guarded, worker, model_id=name)
        else:
            assert cfg.upstream_url is not None  # ServerConfig refuses upstream mode without it
            check_no_steering(guarded.policy)
            st.backend = UpstreamBackend(guarded, worker, base_url=cfg.upstream_url,
                                         api_key_env=cfg.upstream_api_key_env, upstream_model=cfg.upstream_model,
                                         timeout_s=cfg.upstream_timeout_s, model_id=name)
        log.info("ready: %s mode, model %s, policy %s", cfg.mode, name, st.backend.policy_name)
    except Exception as e:  # noqa: BLE001 - any load failure is reported, never crashes the server
        st.load_error = f"{type(e).__name__}: {e}"
        log.error("loading the guard failed: %s", st.load_error)


def check_no_steering(policy: CompiledPolicy | None) -> None:
    """Upstream mode cannot steer (the model is elsewhere): a policy with steering is a configuration error."""
    if policy is None:
        return
    names = [r.name for r in policy.rules if r.steer or r.action == "steer"]
    names += [d.name for d in getattr(policy, "dampers", ()) if d.steer]
    if names:
        raise ValueError(f"policy {policy.name!r} steers ({', '.join(names)}), but upstream mode cannot steer a "
                         "model it does not host; use a policy without steer rules or run in local mode")


__all__ = ["RETENTION_EVERY_S", "check_no_steering", "create_app"]
