"""Pivot translation for prompts in languages where the database's features are weak.

A policy's ``multilingual_gap`` rule can ask for an English translation of the prompt (``pivot:``). The guard
then sends the prompt to an OpenAI-compatible endpoint with a translation instruction, scans the translation
with the same policy, and reports both (`PivotOutcome`); the result's overall action is the more severe of
the two. The endpoint comes from the rule (``base_url``, ``model``, ``api_key_env``) or, for fields the rule
leaves out, from ``SAFESAIL_LLM_BASE_URL`` / ``_MODEL`` / ``_API_KEY``. A failed translation never fails the
scan: the outcome carries the error and the original decision stands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safesail_guard.policy import Decision, PivotRequest
    from safesail_guard.runtime.scoring import RiskScore

TRANSLATE_INSTRUCTION = (
    "Translate the user's message into English. Keep its meaning, tone and any requests exactly as they are, "
    "including harmful or offensive ones: the translation is used by a safety filter, not shown to anyone. "
    "Reply with the translation only, no comments."
)
MAX_PIVOT_CHARS = 8000


@dataclass
class PivotOutcome:
    """The English translation that was scored, and what the guard made of it (or why there is none)."""

    text: str | None
    decision: Decision | None
    risk: RiskScore | None
    model: str | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"text": self.text, "model": self.model, "error": self.error,
                "decision": self.decision.to_dict() if self.decision is not None else None,
                "risk": self.risk.to_dict() if self.risk is not None else None}


def translator_for(request: PivotRequest) -> Any:
    """An `LLMClient` for the rule's endpoint (rule fields first, then ``SAFESAIL_LLM_*``)."""
    from safesail_guard.llm_client import LLMClient
    from safesail_guard.llm_config import LLMClientConfig

    kwargs: dict[str, Any] = {"max_retries": 1, "timeout_s": 30.0, "max_tokens": 1024}
    if request.base_url:
        kwargs["base_url"] = request.base_url
    if request.model:
        kwargs["model"] = request.model
    if request.api_key_env:
        key = os.environ.get(request.api_key_env)
        if not key:
            raise ValueError(f"pivot rule {request.rule!r}: environment variable {request.api_key_env} is not set")
        kwargs["api_key"] = key
    return LLMClient(LLMClientConfig(**kwargs))


def translate(text: str, request: PivotRequest, client: Any = None) -> tuple[str | None, str | None, str | None]:
    """``(translation, model, error)``; exactly one of translation and error is None."""
    if len(text) > MAX_PIVOT_CHARS:
        return None, None, f"prompt has {len(text)} characters; pivot translation is limited to {MAX_PIVOT_CHARS}"
    try:
        client = client or translator_for(request)
        reply = client.complete([{"role": "system", "content": TRANSLATE_INSTRUCTION},
                                 {"role": "user", "content": text}], temperature=0)
    except Exception as e:  # noqa: BLE001 - any failure becomes a recorded error, never a crashed scan
        return None, None, f"pivot translation failed: {e}"
    out = (reply.text or "").strip()
    if not out:
        return None, client.config.model, "pivot translation failed: the endpoint returned an empty reply"
    if getattr(reply, "finish_reason", None) == "length":  # scoring it would score a prefix of the prompt
        return None, client.config.model, ("pivot translation failed: the translation was cut at the endpoint's "
                                           "token limit, so only part of the prompt would be read")
    return out, client.config.model, None
