"""`safesail serve`: run the OpenAI-compatible guard proxy (uvicorn) with audit log and OpenTelemetry."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from safesail_guard.cli.common import fail, user_errors

if TYPE_CHECKING:
    from safesail_guard.server.auth import KeyStore
    from safesail_guard.server.config import Mode, ServerConfig
    from safesail_guard.telemetry import TelemetryHandle

MODE_HELP = "local: host the model with live hooks (can steer); upstream: forward to --upstream-url and guard."


def serve(
    db: Annotated[Path | None, typer.Option(help="Neuron database directory (default: the shipped one).")] = None,
    policy: Annotated[str, typer.Option(help="Policy: default, monitor, strict, or a YAML file.")] = "default",
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "local",
    model: Annotated[str, typer.Option(help="Local model: 'embedded', a HF directory, a .gguf file or a cached id.")] = "embedded",
    host: Annotated[str, typer.Option(help="Address to bind. Non-loopback addresses need API keys.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 = any free port).")] = 8000,
    served_model_name: Annotated[str | None, typer.Option(help="Model id clients use (default: the model's name).")] = None,
    upstream_url: Annotated[str | None, typer.Option(help="Upstream OpenAI-compatible base URL, e.g. http://host:8080/v1.")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="Model id to request upstream (default: the client's).")] = None,
    upstream_key_env: Annotated[str, typer.Option(help="Env variable that holds the upstream API key.")] = "SAFESAIL_UPSTREAM_API_KEY",
    api_keys_file: Annotated[Path | None, typer.Option(help="Client API keys, one per line ('id: key' or 'key').")] = None,
    audit_db: Annotated[Path | None, typer.Option(help="Audit log SQLite file (default: $SAFESAIL_AUDIT_DB or the XDG state dir).")] = None,
    audit_text: Annotated[str, typer.Option(help="What the audit log keeps of judged text: full, hash or none.")] = "hash",
    retention_days: Annotated[float | None, typer.Option(help="Delete audit records older than this many days.")] = 30.0,
    max_concurrent: Annotated[int, typer.Option(min=1, help="Generations at once (local mode: keep 1).")] = 1,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests allowed to wait; beyond: 429.")] = 64,
    max_tokens: Annotated[int, typer.Option(min=1, help="Largest max_tokens a request may ask for.")] = 1024,
    timeout: Annotated[float, typer.Option(min=1, help="Per-request time limit in seconds.")] = 300.0,
    threads: Annotated[int | None, typer.Option(min=1, help=(
        "torch CPU threads for the model (default: torch's choice, one per core). On a machine shared with "
        "other heavy work, 1 avoids oversubscription (measured: docs/results/proxy.md)."))] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the guard proxy: POST /v1/chat/completions, /v1/models, /v1/safesail/score, /healthz, /readyz."""
    from safesail_guard.audit import AuditConfig
    from safesail_guard.server.auth import KeyStore
    from safesail_guard.server.config import Limits, ServerConfig, is_loopback
    from safesail_guard.telemetry import configure_telemetry

    with user_errors():
        audit_kw: dict[str, Any] = {"store_text": audit_text, "retention_days": retention_days}
        if audit_db is not None:
            audit_kw["path"] = audit_db
        cfg = ServerConfig(host=host, port=port, mode=cast("Mode", mode), model=model, db=db, policy=policy,
                           served_model_name=served_model_name, upstream_url=upstream_url,
                           upstream_model=upstream_model, upstream_api_key_env=upstream_key_env,
                           api_keys_file=api_keys_file,
                           limits=Limits(max_concurrent=max_concurrent, max_queue=max_queue, max_tokens=max_tokens,
                                         default_max_tokens=min(256, max_tokens), request_timeout_s=timeout),
                           audit=AuditConfig(**audit_kw))
        keys = KeyStore.load(cfg.api_keys_file, cfg.api_keys_env)
        if not is_loopback(cfg.host) and not keys.enabled:
            fail(f"refusing to bind {cfg.host} without API keys: anyone on the network could use the model. "
                 f"Pass --api-keys-file or set ${cfg.api_keys_env}, or bind 127.0.0.1")
        # before the policy check (which reads the database): a bad OTEL_* variable is a TelemetryConfigError
        # (a ValueError naming the variable), so it becomes one red line here, not a traceback from run_server
        handle = configure_telemetry() if cfg.telemetry else None
    try:
        with user_errors():
            check_policy(cfg)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        run_server(cfg, keys, handle, log_level=log_level)
    finally:
        if handle is not None:
            handle.shutdown()


def check_policy(cfg: ServerConfig) -> None:
    """Compile the policy against the database's features before serving, so a typo, an unknown feature or
    steering in upstream mode fails at startup and not on the first request (no model needed)."""
    from safesail_guard.events import FeatureCatalog
    from safesail_guard.policy import compile_policy_source
    from safesail_guard.runtime.detection_head import scorer_from_db
    from safesail_guard.server.app import check_no_steering
    from safesail_neuron_db import NeuronDB, default_database_path

    with NeuronDB.open(cfg.db or default_database_path()) as db:
        catalog = FeatureCatalog.from_db(db)
        compiled = compile_policy_source(cfg.policy, catalog, scorer_from_db(db, catalog))
    if cfg.mode == "upstream":
        check_no_steering(compiled)


def run_server(cfg: ServerConfig, keys: KeyStore, handle: TelemetryHandle | None, *,
               log_level: str = "info") -> None:
    """Print the banner and run uvicorn until interrupted; ``handle`` is the configured telemetry (the caller
    shuts it down)."""
    import uvicorn

    from safesail_guard.server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    redact_url_credentials_in_logs()
    app = create_app(cfg, keys=keys)
    base = f"http://{_url_host(cfg.host)}:{cfg.port}"
    telemetry = handle.describe() if handle is not None else "telemetry off"
    typer.echo(_banner(cfg, base, telemetry, keys))
    # keep-alive longer than uvicorn's 5 s default: a client that reuses a connection just as the server
    # closes it sees "Server disconnected without sending a response" (seen once in the load benchmark)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level,
                timeout_keep_alive=30)


class RedactUrlCredentials(logging.Filter):
    """Remove ``user:password@`` from URLs in a logger's records.

    httpx logs every request at INFO as ``HTTP Request: POST http://user:password@host/v1/chat/completions``,
    and the INFO level `run_server` sets lets that into the server log: an ``--upstream-url`` that carries
    credentials would be written out on every upstream call.
    """

    _USERINFO = re.compile(r"(?<=://)[^/@\s]+@")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._USERINFO.sub("", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACTED_LOGGERS = ("httpx", "httpcore")
"""Loggers whose records `redact_url_credentials_in_logs` cleans (the HTTP client of upstream mode)."""


def redact_url_credentials_in_logs() -> None:
    """Add `RedactUrlCredentials` to the `REDACTED_LOGGERS` (once)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlCredentials) for f in logger.filters):
            logger.addFilter(RedactUrlCredentials())


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _banner(cfg: ServerConfig, base: str, telemetry: str, keys: KeyStore) -> str:
    from safesail_guard.models import EMBEDDED_ALIASES, EMBEDDED_NAME

    auth = '-H "Authorization: Bearer $KEY" ' if keys.enabled else ""
    model = cfg.served_model_name or (cfg.upstream_model if cfg.mode == "upstream" else None) or (
        EMBEDDED_NAME if cfg.model in EMBEDDED_ALIASES else "<id from /v1/models>")
    lines = [
        f"safesail-guard proxy ({cfg.mode} mode, policy {cfg.policy}) on {base}",
        f"  OpenAI base URL:  {base}/v1",
        f"  dashboard:        {base}/ui",
        f"  health:           {base}/healthz   ready: {base}/readyz (the model loads in the background)",
        f"  audit log:        {cfg.audit.path}  (safesail audit list --db {cfg.audit.path})",
        f"  telemetry:        {telemetry.removeprefix('telemetry:').strip()}",
        "  try:",
        f"    curl -s {base}/v1/chat/completions {auth}-H 'Content-Type: application/json' \\",
        f"      -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
    ]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Attach ``serve`` to the main app."""
    app.command("serve")(serve)
