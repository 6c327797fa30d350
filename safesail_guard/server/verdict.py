"""The wire forms of the guard's verdicts: the namespaced ``safesail`` field and the ``x-safesail-*`` headers.

A request's two `Verdict`s (``prompt`` and ``final``, computed in `runtime/verdict.py`) are written here as JSON
for the completion body and the last stream chunk (`safesail_field`, built by `server/responses.py`) and as
response headers (`verdict_headers`). What the client never got stays out of both: a block's own token, and the
text of rules that fired after it, are blanked (`Verdict.withheld_from`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safesail_guard.runtime.verdict import Verdict, max_score

if TYPE_CHECKING:
    from safesail_guard.events import TokenActivations
    from safesail_guard.policy import RuleMatch

SPAN_TEXT_CHARS = 200  # as the policy's matches: longer span texts keep their head and tail


def _span_text(v: Verdict, m: RuleMatch, cut: int | None) -> str:
    """A match's span text without the withheld tokens (a block's own token, and rules that fired on text
    after it, would otherwise show the client what the guard withheld)."""
    if cut is None or m.span[1] < cut:
        return m.span_text
    text = "".join(t.text for t in v.tokens if m.span[0] <= t.position < cut)
    return text if len(text) <= SPAN_TEXT_CHARS else text[:SPAN_TEXT_CHARS // 2] + " … " + text[-(
        SPAN_TEXT_CHARS // 2):]


def stage_summary(v: Verdict) -> dict[str, Any]:
    """One stage's summary inside the ``safesail`` field (``prompt`` and ``final``)."""
    d = v.decision
    cut = v.withheld_from
    return {
        "decision": v.action,
        "rules": [{"rule": m.rule, "kind": m.kind, "action": m.action, "scope": m.scope, "span": list(m.span),
                   "span_text": _span_text(v, m, cut), "reason": m.reason} for m in d.matches]
        if d is not None else [],
        "score": v.score,
        "concepts": v.concepts,
        "top_features": v.top_features(),
        "language": d.language.to_dict() if d is not None else None,
        "damped": [x.to_dict() for x in d.damped] if d is not None else [],
        "pivot": v.pivot_summary(),
    }


def safesail_field(*, request_id: str, policy: str, mode: str, prompt: Verdict, final: Verdict | None,
                   steering: list[dict[str, Any]] | None = None, tokens: list[TokenActivations] | None = None,
                   guard_ms: float | None = None, upstream: dict[str, Any] | None = None,
                   ignored: list[str] | None = None) -> dict[str, Any]:
    """The namespaced ``safesail`` object added to completions (and to the last stream chunk); ``upstream``
    (upstream mode) says what the guard did to the upstream reply: per-choice verdicts, fields it dropped
    because it does not scan them, and whether the reply was cut at the scoring model's context; ``ignored``
    (local mode) names the request fields the local model accepted without using them."""
    last = final or prompt
    body: dict[str, Any] = {
        "request_id": request_id, "policy": policy, "mode": mode,
        "decision": last.action, "blocked": last.action == "block",
        "rules": last.rules, "score": max_score(prompt, final), "prompt_score": prompt.score,
        "response_score": final.score if final is not None else None,
        "concepts": last.concepts or prompt.concepts,
        "top_features": last.top_features(), "prompt": stage_summary(prompt),
        "final": stage_summary(final) if final is not None else None,
        "steering": steering or [],
    }
    if guard_ms is not None:
        body["guard_ms"] = round(guard_ms, 3)
    if upstream:
        body["upstream"] = upstream
    if ignored:
        body["ignored"] = list(ignored)
    if tokens is not None:
        cut = last.withheld_from
        body["tokens"] = [t.to_dict() if cut is None or t.scope != "response" or t.position < cut
                          else {**t.to_dict(), "text": "", "token_id": None, "withheld": True} for t in tokens]
    return body


def verdict_headers(request_id: str, verdict: Verdict, prompt: Verdict | None = None) -> dict[str, str]:
    """Response headers: ``x-safesail-*`` (ASCII only; rule names are policy identifiers).

    ``verdict`` is the latest stage known when the headers go out (the final one on a JSON completion, the
    prompt one on a stream); ``prompt`` is the prompt stage when ``verdict`` is the final one. Scores mean one
    thing everywhere: ``x-safesail-score`` is always the *prompt* risk (known before anything streams), and
    ``x-safesail-response-score`` the response risk, present only when the response is complete (JSON)."""
    prompt_v = prompt if prompt is not None else verdict
    h = {"x-safesail-request-id": request_id, "x-safesail-decision": verdict.action,
         "x-safesail-stage": verdict.stage}
    if verdict.rules:
        h["x-safesail-rules"] = ",".join(verdict.rules)[:1000].encode("ascii", "replace").decode()
    if prompt_v.stage == "prompt" and prompt_v.score is not None:
        h["x-safesail-score"] = f"{prompt_v.score:.4f}"
    if verdict.stage == "final" and verdict.score is not None:
        h["x-safesail-response-score"] = f"{verdict.score:.4f}"
    return h


__all__ = ["safesail_field", "stage_summary", "verdict_headers"]
