"""`ServerConfig`: everything `safesail serve` can be told, with one default each.

Values come from CLI options (see `safesail_guard/cli/serve.py`); secrets never live here: API keys are read
from a file or an environment variable by `server/auth.py`, and the upstream key from the environment variable
named by ``upstream_api_key_env``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safesail_guard.audit import AuditConfig

Mode = Literal["local", "upstream"]

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True when ``host`` names only the local machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_upstream_url(url: str, key_env: str) -> None:
    """Refuse an upstream URL that is not http(s) with a host, or that carries credentials.

    Credentials in a URL (``https://user:pass@host``) would override the configured bearer key without a word
    (the HTTP client turns them into Basic auth) and reach every log line that prints the URL; the error never
    repeats them."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError("upstream_url is not a valid URL (expected https://host[:port]/v1)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"upstream_url must be an http(s) URL with a host, got scheme {parts.scheme!r} "
                         "(expected https://host[:port]/v1)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"upstream_url must not carry credentials (user:password@); put the upstream key in the "
                         f"environment variable {key_env} instead")


class Limits(BaseModel):
    """Request limits; a request over one gets an OpenAI-style 4xx naming the limit."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(1_000_000, ge=1_024, description="Largest request body accepted (413 above it).")
    max_prompt_tokens: int = Field(4_096, ge=16, description="Most prompt tokens after the chat template (400 above).")
    max_tokens: int = Field(1_024, ge=1, description="Largest max_tokens a request may ask for (400 above).")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request does not say.")
    max_concurrent: int = Field(1, ge=1, description=(
        "Requests admitted at once. All model work runs on one model thread: in upstream mode the streams' "
        "reply scans interleave there, each scan's hooks attached only around its own forward calls; in local "
        "mode a generation holds the model (and its hooks) from start to end, so generations still run one at a "
        "time and a value above 1 only moves waiting from the queue to the model thread (keep 1). A second scan "
        "hooking a model that carries one is an error (hooks.OverlappingScanError), never a silent share."))
    max_queue: int = Field(64, ge=0, description="Requests that may wait for a slot; beyond it: 429 with Retry-After.")
    request_timeout_s: float = Field(300.0, gt=0, description="Wall-clock limit per request, queueing included (504).")
    max_batch_items: int = Field(256, ge=1, description="Most items per /v1/safesail/score request.")


class ServerConfig(BaseModel):
    """How one guard proxy runs."""

    # hide_input_in_errors: a rejected upstream URL may hold credentials; errors never repeat the input
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Address to bind; non-loopback needs API keys.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 = any free port).")
    mode: Mode = Field("local", description="local: host the model with live hooks; upstream: forward to another server.")
    model: str = Field("embedded", description="The local model (generation in local mode, scoring in upstream mode).")
    db: Path | None = Field(None, description="Neuron database directory (None = the shipped one).")
    policy: str = Field("default", description="Policy: a shipped name (default, monitor, strict) or a YAML path.")
    served_model_name: str | None = Field(None, description=(
        "Model id clients send and /v1/models lists (default: the local model's name, or upstream_model)."))
    upstream_url: str | None = Field(None, description="Base URL of the upstream OpenAI-compatible API (…/v1).")
    upstream_model: str | None = Field(None, description="Model id to request upstream (default: the client's).")
    upstream_api_key_env: str = Field("SAFESAIL_UPSTREAM_API_KEY", description="Env variable holding the upstream key.")
    upstream_timeout_s: float = Field(120.0, gt=0, description="Timeout of one upstream call (504 when exceeded).")
    api_keys_file: Path | None = Field(None, description="File of client API keys, one per line (`id: key` or `key`).")
    api_keys_env: str = Field("SAFESAIL_API_KEYS", description="Env variable with comma-separated client API keys.")
    limits: Limits = Field(default_factory=Limits)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    telemetry: bool = Field(True, description="Configure the OpenTelemetry SDK from the OTEL_* variables.")

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if self.mode == "upstream" and not self.upstream_url:
            raise ValueError("upstream mode needs upstream_url (--upstream-url https://host/v1)")
        if self.mode == "local" and self.upstream_url:
            raise ValueError("upstream_url is set but mode is local; pass --mode upstream to forward requests")
        if self.upstream_url:
            check_upstream_url(self.upstream_url, self.upstream_api_key_env)
        if self.limits.default_max_tokens > self.limits.max_tokens:
            raise ValueError(f"default_max_tokens ({self.limits.default_max_tokens}) is above max_tokens "
                             f"({self.limits.max_tokens})")
        return self
