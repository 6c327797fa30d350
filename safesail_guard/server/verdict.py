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


@dataclass
class Verdict:
    """One stage's decision, risk score and evidence."""

    stage: str  # "prompt" | "final"
    decision: Any  # policy Decision or None (no policy)
    risk: RiskScore | None = None
    text: str = ""  # what this stage judged (audit log: stored or hashed by configuration)
    tokens: list[TokenActivations] = field(default_factory=list)

    @property
    def action(self) -> str:
        """The decision's action (``allow`` without a policy)."""
        return self.decision.action if self.decision is not None else "allow"

    @property
    def rules(self) -> list[str]:
        """Rules that matched."""
        return self.decision.rules() if self.decision is not None else []

    @property
    def score(self) -> float | None:
        """Risk score in [0, 1] (None without a risk head)."""
        return self.risk.score if self.risk is not None else None

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
        return {
            "decision": self.action,
            "rules": [{"rule": m.rule, "kind": m.kind, "action": m.action, "scope": m.scope, "span": list(m.span),
                       "span_text": m.span_text, "reason": m.reason} for m in d.matches] if d is not None else [],
            "score": self.score,
            "concepts": self.concepts,
            "top_features": self.top_features(),
            "language": d.language.to_dict() if d is not None else None,
            "damped": [x.to_dict() for x in d.damped] if d is not None else [],
        }


def safesail_field(*, request_id: str, policy: str, mode: str, prompt: Verdict, final: Verdict | None,
                   steering: list[dict[str, Any]] | None = None, tokens: list[TokenActivations] | None = None,
                   guard_ms: float | None = None) -> dict[str, Any]:
    """The namespaced ``safesail`` object added to completions (and to the last stream chunk)."""
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
    if tokens is not None:
        body["tokens"] = [t.to_dict() for t in tokens]
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
