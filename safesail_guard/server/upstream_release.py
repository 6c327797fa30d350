"""Releasing an upstream reply only as far as the guard scanned it.

`ScanLimit` feeds a `ResponseMonitor` (`runtime/monitor.py`) no more of the reply than the scoring model's
context holds; `ScannedChoice` is one choice once scanned (its verdict and how many characters passed);
`released_delta` turns the monitor's released text into a stream delta, `json_choice` a scanned choice into the
JSON reply's choice, `worst_choice` picks the verdict that stands for the reply, and `upstream_notes` says what
the guard did to it (the ``safesail.upstream`` field). Used by `server/upstream_backend.py` on the replies that
`server/upstream_reply.py` parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safesail_guard.runtime.verdict import Verdict
from safesail_guard.server.upstream_reply import UpstreamReply

SCAN_MARGIN_TOKENS = 8
"""Scoring-model positions kept free below its context when cutting a long reply (word-by-word tokenization
in the monitor can differ from tokenizing the whole text by a token or two)."""


class ScanLimit:
    """Feeds a `ResponseMonitor` no more reply tokens than the scoring model's context holds.

    Past its context the scorer's positions are out of range and its features mean nothing, so a longer reply
    is cut there: what the client gets is the scanned prefix, with ``finish_reason`` ``length`` (`truncated`).
    Counting is cheap: the tokens at the last exact count plus the UTF-8 bytes fed since (each byte is at most one
    token) bound the reply's tokens; only when that bound passes the budget is the text so far tokenized again
    (near the cut, a few times per reply). Should the monitor's word-by-word tokenization still run past the
    context (text without spaces fed in many pieces can split into more tokens than the whole), the step that did
    is not released: the reply ends before it."""

    def __init__(self, mon: Any, tokenizer: Any, context: int) -> None:
        self.mon = mon
        self.tok = tokenizer
        self.context = context
        self.budget = context - mon.prompt_tokens - SCAN_MARGIN_TOKENS if context else None
        self.text = ""
        self.bound = 0  # an upper bound on the tokens of `text`
        self.truncated = False

    def feed(self, piece: str) -> Any:
        """Feed ``piece`` (or the part of it that fits); returns the monitor's step."""
        from safesail_guard.runtime.monitor import MonitorStep

        if self.truncated:
            return MonitorStep("", False)
        if self.budget is not None:
            self.bound += len(piece.encode("utf-8")) + 1  # +1: the piece can re-split the word it continues
            if self.bound > self.budget:
                cut, self.bound = self._cut(self.text + piece)
                if cut is not None:
                    piece, self.truncated = piece[:max(0, cut - len(self.text))], True
        self.text += piece
        step = self.mon.feed(piece) if piece else MonitorStep("", False)
        if self.truncated and not step.blocked:  # the reply ends here: release the held-back last word
            end = self.mon.finish()
            step = MonitorStep(step.text + end.text, end.blocked)
        return self._checked(step)

    def finish(self) -> Any:
        """The reply is complete (see `ResponseMonitor.finish`)."""
        from safesail_guard.runtime.monitor import MonitorStep

        return MonitorStep("", False) if self.truncated else self._checked(self.mon.finish())

    def _checked(self, step: Any) -> Any:
        """``step``, or nothing (and the end of the reply) when its tokens ran past the scorer's context."""
        from safesail_guard.runtime.monitor import MonitorStep

        if self.context and self.mon.prompt_tokens + self.mon.response_tokens > self.context:
            self.truncated = True
            return MonitorStep("", step.blocked)
        return step

    def _cut(self, text: str) -> tuple[int | None, int]:
        """The character where the first token past the budget starts (None when the text fits), and the
        number of tokens of ``text``."""
        budget = max(0, int(self.budget or 0))
        try:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            n = len(enc["input_ids"])
            return (None if n <= budget else int(enc["offset_mapping"][budget][0])), n
        except (NotImplementedError, TypeError, KeyError):  # slow tokenizers have no offsets
            ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
            return (None if len(ids) <= budget else len(self.tok.decode(ids[:budget]))), len(ids)


@dataclass
class ScannedChoice:
    """One scanned choice."""

    reply: UpstreamReply
    verdict: Verdict
    released: int  # characters of reply.text that passed
    blocked: bool
    truncated: bool
    guard_seconds: float


def json_choice(index: int, s: ScannedChoice, finish: str, dropped: set[str]) -> dict[str, Any]:
    """A choice as released: the text that passed, tool calls that passed whole."""
    r = s.reply
    fields = r.fields(0, s.released)
    msg: dict[str, Any] = {"role": "assistant"}
    for name in ("content", "refusal"):
        msg[name] = fields.get(name, "" if name in r.present else None)
    for name in ("reasoning_content", "reasoning"):
        if name in r.present:
            msg[name] = fields.get(name, "")
    calls, fc, cut = r.tool_calls(s.released, stream=False)
    if calls:
        msg["tool_calls"] = calls
    if fc is not None:
        msg["function_call"] = fc
    if cut:
        dropped.add(f"choices[{index}].tool_calls (cut at the scoring model's context)")
    return {"index": index, "message": msg, "logprobs": None, "finish_reason": "length" if s.truncated else finish}


def released_delta(reply: UpstreamReply, text: str) -> dict[str, str]:
    """The delta for ``text``, the next characters of the reply the monitor released (text fields only; tool
    calls go out whole at the end)."""
    start, reply.emitted = reply.emitted, reply.emitted + len(text)
    return reply.fields(start, reply.emitted)


def worst_choice(scans: list[ScannedChoice]) -> ScannedChoice:
    """The choice whose verdict stands for the reply: the first block, else the most severe."""
    from safesail_guard.policy import SEVERITY

    return max(scans, key=lambda s: (s.blocked, SEVERITY[s.verdict.action]))


def upstream_notes(scans: list[ScannedChoice], dropped: set[str], *, many: bool) -> dict[str, Any]:
    notes: dict[str, Any] = {}
    if many:
        notes["choices"] = [{"index": i, "decision": s.verdict.action, "rules": s.verdict.rules,
                             "score": s.verdict.score, "truncated": s.truncated} for i, s in enumerate(scans)]
    if dropped:
        notes["dropped"] = sorted(dropped)
    if any(s.truncated for s in scans):
        notes["truncated"] = "the reply was cut where the guard's scoring model's context ends"
    return notes


__all__ = ["SCAN_MARGIN_TOKENS", "ScanLimit", "ScannedChoice", "json_choice", "released_delta", "upstream_notes",
           "worst_choice"]
