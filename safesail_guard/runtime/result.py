"""What one guard scan returns: :class:`GuardResult` (per-token events, decision, risk score) and
:class:`Truncation` (how an input longer than one forward pass was read).

``Guard.scan`` and ``Guard.scan_batch`` (``runtime/guard.py``) build these; the risk score comes from
``runtime/scoring.py``, the decision from a policy run (:mod:`safesail_guard.policy`), the pivot translation's
scan from ``runtime/pivot.py`` and the normalized reading's from ``runtime/normalized.py``. The CLI, the server
and the batch scorer (``runtime/batch_score.py``) read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safesail_guard.events import TokenActivations
from safesail_guard.policy import Decision, most_severe
from safesail_guard.runtime.normalized import NormalizedOutcome

if TYPE_CHECKING:
    from safesail_guard.runtime.pivot import PivotOutcome
    from safesail_guard.runtime.scoring import RiskScore


@dataclass
class Truncation:
    """What happened to an input longer than one forward pass allows."""

    strategy: str  # "none" | "chunked"
    tokens: int
    chunks: int
    max_tokens: int
    overlap: int = 0  # tokens of the previous chunk each later chunk re-reads as context (not scored twice)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"strategy": self.strategy, "tokens": self.tokens, "chunks": self.chunks, "max_tokens": self.max_tokens,
                "overlap": self.overlap}


@dataclass
class GuardResult:
    """Everything the guard saw for one input: per-token events, the policy's decision, the risk score.

    When the input hid words with invisible characters, compatibility forms or homoglyphs, ``normalized``
    holds the scan of its normalized reading, whose matches are merged into ``decision`` and whose risk
    replaces ``risk`` when higher (the stricter verdict wins).
    """

    tokens: list[TokenActivations]
    decision: Decision | None = None
    risk: RiskScore | None = None
    truncation: Truncation | None = None
    pivot: PivotOutcome | None = None
    normalized: NormalizedOutcome | None = None

    @property
    def action(self) -> str | None:
        """The decision's action, or the pivot translation's when that is more severe (None without a policy)."""
        if self.decision is None:
            return None
        actions = [self.decision.action]
        if self.pivot is not None and self.pivot.decision is not None:
            actions.append(self.pivot.decision.action)
        return most_severe(actions)

    @property
    def score(self) -> float | None:
        """The risk score, or the pivot translation's when higher (None without a risk head)."""
        if self.risk is None:
            return None
        if self.pivot is not None and self.pivot.risk is not None:
            return max(self.risk.score, self.pivot.risk.score)
        return self.risk.score
