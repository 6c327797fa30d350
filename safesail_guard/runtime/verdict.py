"""`Verdict`: the guard's judgement of one stage of a chat, and the summary every consumer reads from it.

A chat is judged in two stages: ``prompt`` (the chat as read, before anything is generated or forwarded) and
``final`` (prompt and response together, once the response is complete or blocked). A `Verdict` holds what
the runtime produced for a stage - the policy's `Decision`, the token events, the pivot translation's
`PivotOutcome` - and computes the summary from it: the risk score over the stage's tokens (`Verdict.of`), the
action (the stricter of the text's and its translation's), the matched rules, per-domain risk, the top
features, and where the client's view of the response ends (`withheld_from`).

Neighbours: the proxy's backends (`server/local_backend.py`, `server/upstream_backend.py`) build verdicts from
`GuardedModel.stream` events, `Guard.scan` results and `ResponseMonitor` decisions; `server/verdict.py` turns
them into the wire forms (the ``safesail`` field, ``x-safesail-*`` headers), `server/recording.py` into audit
records and span events. Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from safesail_guard.events import TokenActivations
from safesail_guard.runtime.scoring import RiskScore

if TYPE_CHECKING:
    from safesail_guard.policy import Decision
    from safesail_guard.runtime.detection_head import DetectionHead
    from safesail_guard.runtime.pivot import PivotOutcome
    from safesail_guard.runtime.scoring import RiskHead

Stage = Literal["prompt", "final"]
TOP_FEATURES = 8
"""Features listed per verdict (`Verdict.top_features`)."""
STAGE_SCOPES: dict[str, tuple[str, ...]] = {"prompt": ("prompt",), "final": ("response",)}
"""The token scopes whose activations a stage's risk score reads: the prompt's for ``prompt``, the response's
for ``final`` (the prompt's risk is already in the prompt verdict). With a detection head the final stage's
aggregate (mean or rolling window) runs over response tokens only, so the prompt never enters its windows."""


@dataclass
class Verdict:
    """One stage's decision, risk score and evidence."""

    stage: Stage
    decision: Decision | None  # None without a policy
    risk: RiskScore | None = None  # None without a risk head
    text: str = ""  # what this stage judged (the audit log stores or hashes it by configuration)
    tokens: list[TokenActivations] = field(default_factory=list)
    pivot: PivotOutcome | None = None  # the prompt's English translation and its decision, if the policy asked

    @classmethod
    def of(cls, stage: Stage, decision: Decision | None, tokens: Sequence[TokenActivations], *,
           risk_head: RiskHead | DetectionHead | None, text: str, pivot: PivotOutcome | None = None) -> Verdict:
        """The verdict of ``stage`` from its decision and token events; the risk score is ``risk_head``'s over
        the stage's scope (`STAGE_SCOPES`), None without a head. A detection head raises
        `MissingHeadTermsError` for a scoped token that was not scanned with it (never a silent zero)."""
        tokens = list(tokens)
        risk = risk_head.score(tokens, scopes=STAGE_SCOPES[stage]) if risk_head is not None else None
        return cls(stage, decision, risk, text, tokens, pivot)

    @property
    def _pivot_decision(self) -> Decision | None:
        return self.pivot.decision if self.pivot is not None else None

    @property
    def action(self) -> str:
        """The decision's action (``allow`` without a policy), or the pivot translation's when that is more
        severe (the policy's rule: the translation is scored with the same policy and the stricter one wins)."""
        from safesail_guard.policy import most_severe

        actions = [d.action for d in (self.decision, self._pivot_decision) if d is not None]
        return most_severe(actions) if actions else "allow"

    @property
    def blocked(self) -> bool:
        """True when the stage's action is ``block``."""
        return self.action == "block"

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
    def concepts(self) -> dict[str, float]:
        """Per-domain risk scores."""
        return dict(self.risk.concepts) if self.risk is not None else {}

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

    def shown_tokens(self) -> list[TokenActivations]:
        """The token events a client may see: all of them, or when a rule blocked, those up to the blocking
        token (the text after it was withheld, so its tokens are not shown either)."""
        d = self.decision
        block = next((m for m in d.matches if m.action == "block"), None) if d is not None else None
        if block is None:
            return self.tokens
        last = block.span[1] if block.span[1] >= 0 else -1
        return [t for t in self.tokens if t.position <= last]

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
            for c in self.risk.top_features:
                if c["id"] not in out:
                    out[c["id"]] = {k: c.get(k) for k in ("id", "layer", "index", "activation", "normalized",
                                                           "explanation", "position")} | {
                        "contribution": c.get("contribution")}
        return list(out.values())[:limit]

    def pivot_summary(self) -> dict[str, Any] | None:
        """The pivot translation's summary (its text is not included: it is model output the client never saw
        and, when it blocks, exactly what must not be shown)."""
        p = self.pivot
        if p is None:
            return None
        d = p.decision
        return {"model": p.model, "error": p.error, "decision": d.action if d is not None else None,
                "rules": d.rules() if d is not None else [],
                "score": p.risk.score if p.risk is not None else None}


def max_score(prompt: Verdict, final: Verdict | None) -> float | None:
    """The higher risk score of a request's two stages (None when neither has one)."""
    scores = [s for s in (prompt.score, final.score if final is not None else None) if s is not None]
    return max(scores) if scores else None


__all__ = ["STAGE_SCOPES", "Stage", "TOP_FEATURES", "Verdict", "max_score"]
