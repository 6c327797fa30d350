"""The normalized reading of an input: the same text with its Unicode disguises removed, and how its verdict
joins the verdict of the text as written.

Text can hide words from the safety features with invisible characters, compatibility forms or homoglyphs.
``chat_template.normalized_view`` folds such text; :func:`normalized_prompt` applies it to a guard input (text or chat
messages) and returns None for the common case of an input without disguises. The guard
(``Guard.scan_normalized`` in ``runtime/guard.py``) scans that reading too, and :func:`merge_normalized` adds its
matches to the decision of the text as written, so the stricter verdict wins; guarded generation
(``runtime/generation.py``) and the server's request-field scan merge the same way. :class:`NormalizedOutcome`
is what a `GuardResult` (``runtime/result.py``) reports of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from safesail_guard.chat_template import normalized_messages, normalized_view, validate_messages
from safesail_guard.policy import BEFORE_TOKENS, Decision, most_severe
from safesail_guard.runtime.prompts import Prompt

if TYPE_CHECKING:
    from safesail_guard.runtime.scoring import RiskScore

NORMALIZED_READING = ("in the normalized reading (invisible characters removed, compatibility forms and "
                      "homoglyphs folded)")
"""How a match found only in the normalized reading says so in its reason."""


@dataclass
class NormalizedOutcome:
    """The input with its disguises removed (`chat_template.normalized_view`: invisible characters, compatibility forms,
    homoglyphs) and what the guard made of it. Its matches and risk are already merged into the result."""

    prompt: Any  # the normalized text or messages
    decision: Decision | None
    risk: RiskScore | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"prompt": self.prompt, "decision": self.decision.to_dict() if self.decision is not None else None,
                "risk": self.risk.to_dict() if self.risk is not None else None}


def normalized_prompt(prompt: Prompt) -> Prompt | None:
    """``prompt`` with its disguises removed (`chat_template.normalized_view`), or None when it has none."""
    if isinstance(prompt, str):
        return normalized_view(prompt)
    return normalized_messages(validate_messages(list(prompt)))


def merge_normalized(decision: Decision, view: Decision, *, label: str = NORMALIZED_READING) -> Decision:
    """``decision`` plus the matches of the normalized reading's ``view`` for rules that did not match already;
    the action is the more severe of the two (and the refusal the view's, when only the view blocked).

    The view's matches are relabelled: their reason says they come from the normalized reading, and their span
    is `BEFORE_TOKENS` (its positions are those of the normalized text, not of the tokens shown)."""
    seen = {m.rule for m in decision.matches}
    extra = tuple(replace(m, span=BEFORE_TOKENS, position=None,
                          reason=f"{label}: {m.reason}")
                  for m in view.matches if m.rule not in seen)
    if not extra:
        return decision
    matches = decision.matches + extra
    refusal = decision.refusal
    if refusal is None:
        refusal = next((m.message for m in matches if m.action == "block"), None)
    return replace(decision, action=most_severe([m.action for m in matches]), matches=matches, refusal=refusal)
