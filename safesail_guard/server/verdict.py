"""`Verdict`: the guard's judgement of one stage of a request, and its wire forms (``safesail`` field, headers).

A request has two stages: ``prompt`` (the chat read before anything is generated or forwarded) and ``final``
(prompt and response together, once the response is complete or blocked). Each is one audit record, one
span event and one entry in the ``safesail`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safesail_guard.runtime.events import TokenActivations
from safesail_guard.runtime.scoring import RiskScore

TOP_FEATURES = 8
SPAN_TEXT_CHARS = 200  # as policy.engine: longer span texts keep their head and tail


@dataclass
class Verdict:
    """One stage's decision, risk score and evidence."""

    stage: str  # "prompt" | "final"
    decision: Any  # policy Decision or None (no policy)
    risk: RiskScore | None = None
    text: str = ""  # what this stage judged (audit log: stored or hashed by configuration)
    tokens: list[TokenActivations] = field(default_factory=list)
    pivot: Any = None  # runtime.pivot.PivotOutcome: the prompt's English translation and its decision, if asked for

    @property
    def _pivot_decision(self) -> Any:
        return self.pivot.decision if self.pivot is not None else None

    @property
    def action(self) -> str:
        """The decision's action (``allow`` without a policy), or the pivot translation's when that is more
        severe (the policy's rule: the translation is scored with the same policy and the stricter one wins)."""
        from safesail_guard.policy import most_severe

        actions = [d.action for d in (self.decision, self._pivot_decision) if d is not None]
        return most_severe(actions) if actions else "allow"

    @property
    def refusal(self) -> str | None:
        """The refusal message of the blocking decision (the original's first, then the translation's)."""
        for d in (self.decision, self._pivot_decision):
            if d is not None and d.action == "block" and d.refusal:
                return d.refusal
        return None

    @property
    def rules(self) -> list[str]:
        """Rules that matched (on the text, then on its pivot translation)."""
        out = self.decision.rules() if self.decision is not None else []
        pd = self._pivot_decision
        if pd is not None:
            out += [r for r in pd.rules() if r not in out]
        return out

    @property
    def score(self) -> float | None:
        """Risk score in [0, 1] (None without a risk head); the pivot translation's when higher."""
        scores = [r.score for r in (self.risk, self.pivot.risk if self.pivot is not None else None) if r is not None]
        return max(scores) if scores else None

    @property
    def withheld_from(self) -> int | None:
        """Position of the first response token the client never got: the token where a block fired (it and
        everything after it were withheld). None when nothing in the response was blocked."""
        d = self.decision
        block = next((m for m in d.matches if m.action == "block"), None) if d is not None else None
        if block is None or block.span[1] < 0:
            return None
        pos = block.span[1]
        at = next((t for t in self.tokens if t.position == pos), None)
        if at is not None:
            return pos if at.scope == "response" else None
        n_prompt = sum(1 for t in self.tokens if t.scope == "prompt")
        return pos if self.tokens and pos >= n_prompt else None

    def _span_text(self, m: Any, cut: int | None) -> str:
        """A match's span text without the withheld tokens (a block's own token, and rules that fired on text
        after it, would otherwise show the client what the guard withheld)."""
        if cut is None or m.span[1] < cut:
            return m.span_text
        text = "".join(t.text for t in self.tokens if m.span[0] <= t.position < cut)
        return text if len(text) <= SPAN_TEXT_CHARS else text[:SPAN_TEXT_CHARS // 2] + " … " + text[-(
            SPAN_TEXT_CHARS // 2):]

    def pivot_dict(self) -> dict[str, Any] | None:
        """The pivot translation's summary (its text is not included: it is model output the client never saw
        and, when it blocks, exactly what must not be shown)."""
        p = self.pivot
        if p is None:
            return None
        d = p.decision
        return {"model": p.model, "error": p.error, "decision": d.action if d is not None else None,
                "rules": d.rules() if d is not None else [],
                "score": p.risk.score if p.risk is not None else None}

    @property
    def concepts(self) -> dict[str, float]:
        """Per-domain risk scores."""
        return dict(self.risk.concepts) if self.risk is not None else {}

    def top_features(self, limit: int = TOP_FEATURES) -> list[dict[str, Any]]:
        """The features behind the verdict: those in matched rules first (strongest first), then the risk
        score's largest contributors; one entry per feature id."""
        out: dict[str, dict[str, Any]] = {}
        if self.decision is not None:
            for m in self.decision.matches:
                for f in m.features:
                    cur = out.get(f.id)
                    if cur is None or f.normalized > cur["normalized"]:
                        out[f.id] = {"id": f.id, "layer": f.layer, "index": int(f.id.split("_")[-1]),
                                     "activation": round(f.activation, 5), "normalized": round(f.normalized, 5),
                                     "explanation": f.explanation, "position": f.position, "rule": m.rule}
        if self.risk is not None:
            for f in self.risk.top_features:
                if f["id"] not in out:
                    out[f["id"]] = {k: f.get(k) for k in ("id", "layer", "index", "activation", "normalized",
                                                           "explanation", "position")} | {
                        "contribution": f.get("contribution")}
        return list(out.values())[:limit]

    def to_dict(self) -> dict[str, Any]:
        """The stage's summary inside the ``safesail`` field."""
        d = self.decision
        cut = self.withheld_from
        return {
            "decision": self.action,
            "rules": [{"rule": m.rule, "kind": m.kind, "action": m.action, "scope": m.scope, "span": list(m.span),
                       "span_text": self._span_text(m, cut), "reason": m.reason} for m in d.matches]
            if d is not None else [],
            "score": self.score,
            "concepts": self.concepts,
            "top_features": self.top_features(),
            "language": d.language.to_dict() if d is not None else None,
            "damped": [x.to_dict() for x in d.damped] if d is not None else [],
            "pivot": self.pivot_dict(),
        }


def safesail_field(*, request_id: str, policy: str, mode: str, prompt: Verdict, final: Verdict | None,
                   steering: list[dict[str, Any]] | None = None, tokens: list[TokenActivations] | None = None,
                   guard_ms: float | None = None, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
    """The namespaced ``safesail`` object added to completions (and to the last stream chunk); ``upstream``
    (upstream mode) says what the guard did to the upstream reply: per-choice verdicts, fields it dropped
    because it does not scan them, and whether the reply was cut at the scoring model's context."""
    last = final or prompt
    body: dict[str, Any] = {
        "request_id": request_id, "policy": policy, "mode": mode,
        "decision": last.action, "blocked": last.action == "block",
        "rules": last.rules, "score": _max_score(prompt, final), "concepts": last.concepts or prompt.concepts,
        "top_features": last.top_features(), "prompt": prompt.to_dict(),
        "final": final.to_dict() if final is not None else None,
        "steering": steering or [],
    }
    if guard_ms is not None:
        body["guard_ms"] = round(guard_ms, 3)
    if upstream:
        body["upstream"] = upstream
    if tokens is not None:
        cut = last.withheld_from
        body["tokens"] = [t.to_dict() if cut is None or t.scope != "response" or t.position < cut
                          else {**t.to_dict(), "text": "", "token_id": None, "withheld": True} for t in tokens]
    return body


def _max_score(prompt: Verdict, final: Verdict | None) -> float | None:
    scores = [s for s in (prompt.score, final.score if final is not None else None) if s is not None]
    return max(scores) if scores else None


def verdict_headers(request_id: str, verdict: Verdict, prompt: Verdict | None = None) -> dict[str, str]:
    """Response headers: ``x-safesail-*`` (ASCII only; rule names are policy identifiers)."""
    score = verdict.score if prompt is None else _max_score(prompt, verdict)
    h = {"x-safesail-request-id": request_id, "x-safesail-decision": verdict.action,
         "x-safesail-stage": verdict.stage}
    if verdict.rules:
        h["x-safesail-rules"] = ",".join(verdict.rules)[:1000].encode("ascii", "replace").decode()
    if score is not None:
        h["x-safesail-score"] = f"{score:.4f}"
    return h
