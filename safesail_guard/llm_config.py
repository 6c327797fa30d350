"""Settings, results and errors of the OpenAI-compatible chat client (`safesail_guard.llm_client`).

:class:`LLMClientConfig` is the one pydantic-settings class for an LLM endpoint (env prefix ``SAFESAIL_LLM_``);
:class:`Completion` is one reply, :class:`LLMUsage` the client's cumulative accounting and :class:`LLMError` a
request that failed (its message names the URL, status and the server's message, never the API key). They live
in the online package because the guard's pivot (`safesail_guard.runtime.pivot`) asks an LLM on the scan path;
the offline pipeline's explainer, simulator, SpScore and pair generator (`safesail_training`) import them from
here as well. No transport code here, so a caller that only reads settings or results imports nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Completion", "LLMClientConfig", "LLMError", "LLMUsage", "Message"]

Message = Mapping[str, Any]
"""One chat message: ``{"role": "system" | "user" | "assistant" | ..., "content": str}``."""


class LLMClientConfig(BaseSettings):
    """Where the LLM lives and how hard to try. Read from ``SAFESAIL_LLM_*`` environment variables or kwargs."""

    model_config = SettingsConfigDict(env_prefix="SAFESAIL_LLM_", extra="forbid")

    base_url: str = Field(
        description="API root of the OpenAI-compatible server, ending before /chat/completions, "
        "e.g. http://127.0.0.1:8080/v1 (llama.cpp, vLLM) or http://127.0.0.1:11434/v1 (Ollama).",
    )
    model: str = Field(description="Model name sent in every request and recorded in outputs (e.g. 'qwen2.5-7b').")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token. When unset, OPENAI_API_KEY is used if present; local servers usually need none. "
        "Never logged and redacted from error messages.",
    )
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Per-attempt limit in seconds on connecting and on receiving the whole reply.",
    )
    max_retries: int = Field(
        default=4,
        ge=0,
        le=20,
        description="Retries after the first attempt for connection errors, timeouts, HTTP 408, 429 and 5xx.",
    )
    backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="Base delay: retry i waits a random time in [b*2^(i-1)/2, b*2^(i-1)], capped at backoff_max_s; "
        "a Retry-After header from the server takes precedence (also capped).",
    )
    backoff_max_s: float = Field(default=60.0, ge=0, description="Upper bound in seconds on any single retry delay.")
    concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Most requests in flight at once from this client (complete_many and concurrent complete calls).",
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature sent with every request.")
    max_tokens: int | None = Field(
        default=1024,
        ge=1,
        description="Completion token limit sent with every request; None leaves it to the server.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Directory for the on-disk response cache (one JSON file per request, keyed by a SHA-256 of "
        "model, messages and parameters). None disables caching. With temperature > 0 a cached sample is reused.",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {value!r}")
        if value.endswith("/chat/completions"):
            raise ValueError(
                f"base_url must be the API root (e.g. http://127.0.0.1:8080/v1), not the endpoint; got {value!r}"
            )
        return value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be a non-empty model name")
        return value.strip()

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> LLMClientConfig:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_s ({self.backoff_s})")
        if self.api_key is None:
            fallback = os.environ.get("OPENAI_API_KEY", "").strip()
            if fallback:
                self.api_key = SecretStr(fallback)
        return self


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion: the first choice's text and what the server reported about it."""

    text: str
    prompt_tokens: int | None
    """Prompt tokens from the server's ``usage``; None when the server did not report them."""
    completion_tokens: int | None
    """Completion tokens from the server's ``usage``; None when the server did not report them."""
    cached: bool
    """True when served from the on-disk cache without contacting the server."""
    model: str
    """Model name the server reported (falls back to the requested model)."""
    finish_reason: str | None = None
    """``stop``, ``length``, ... as reported; ``length`` means the text was cut by ``max_tokens``."""


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Cumulative accounting of one :class:`LLMClient`. Subtract two snapshots to get the cost of a step."""

    requests: int = 0
    """Calls to ``complete`` (including those answered from the cache or failed)."""
    cached_hits: int = 0
    """Calls answered from the on-disk cache."""
    http_attempts: int = 0
    """HTTP requests sent, retries included."""
    prompt_tokens: int = 0
    """Sum of reported prompt tokens over server replies (cache hits cost nothing)."""
    completion_tokens: int = 0
    """Sum of reported completion tokens over server replies."""
    responses_without_usage: int = 0
    """Server replies that did not report token usage; their tokens are unknown and not in the sums."""
    failures: int = 0
    """Calls that ended in :class:`LLMError`."""

    def __sub__(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class LLMError(Exception):
    """A chat completion that could not be obtained. ``str(err)`` names the URL, status and server message."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        retryable: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        """HTTP status, or None for connection errors, timeouts and unparseable replies."""
        self.retryable = retryable
        self.attempts = attempts

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (gave up after {self.attempts} attempts)"
        return self.message
