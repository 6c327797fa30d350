"""Batch scoring: JSONL prompts in, one verdict record per prompt out (`safesail score`, `/v1/safesail/score`).

Input records: ``{"id": ..., "text": "..."}`` (a user prompt; the chat template is applied) or
``{"id": ..., "messages": [...]}`` (OpenAI chat format). Output records::

    {"id", "score", "decision", "concepts": {domain: score}, "top_features": [{"id", "layer", "index",
     "activation", "explanation"}], "rules": [...], "truncation": {...}, "pivot": {...}}

With a detection head, ``named_share`` and ``remainder_share`` (how much of the score named features carry and
how much the SAE error does) and ``head: "detection"`` are added, and every top feature carries its ``share``.
``truncation`` appears only for inputs scanned in chunks, ``pivot`` only when a multilingual-gap rule asked
for an English translation (``score`` and ``decision`` then take the more severe of original and translation),
``normalized`` only when the text hid words with invisible characters, compatibility forms or homoglyphs (its
normalized reading was scored too; ``score`` and ``decision`` already include it).

A record that cannot be parsed or scanned becomes ``{"id", "error"}`` and the rest of the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from safesail_guard.chat_template import ChatFormatError, check_text, validate_messages

MAX_TEXT_CHARS = 200_000


@dataclass
class ScoreItem:
    """One parsed input record."""

    id: Any
    prompt: str | list[dict[str, str]]


@dataclass
class ScoreError:
    """One input record that could not be used, with the reason."""

    id: Any
    error: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready output record."""
        return {"id": self.id, "error": self.error}


def parse_record(obj: Any, where: str) -> ScoreItem | ScoreError:
    """Validate one decoded input object; ``where`` (e.g. "line 7") names it in errors."""
    if not isinstance(obj, dict):
        return ScoreError(None, f"{where}: expected a JSON object with 'id' and 'text' or 'messages'")
    rid = obj.get("id", where)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        return ScoreError(where, f"{where}: 'id' must be a string or an integer")
    has_text, has_msgs = "text" in obj, "messages" in obj
    if has_text == has_msgs:
        return ScoreError(rid, f"{where}: give exactly one of 'text' and 'messages'")
    if has_text:
        text = obj["text"]
        if not isinstance(text, str):
            return ScoreError(rid, f"{where}: 'text' must be a string")
        if not text.strip():
            return ScoreError(rid, f"{where}: 'text' is empty")
        if len(text) > MAX_TEXT_CHARS:
            return ScoreError(rid, f"{where}: 'text' has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        try:
            check_text(text, "'text'")
        except ChatFormatError as e:
            return ScoreError(rid, f"{where}: {e}")
        return ScoreItem(rid, text)
    try:
        msgs = validate_messages(obj["messages"])
    except ChatFormatError as e:
        return ScoreError(rid, f"{where}: {e}")
    if not any(m["content"].strip() for m in msgs):
        return ScoreError(rid, f"{where}: every message is empty")
    if sum(len(m["content"]) for m in msgs) > MAX_TEXT_CHARS:
        return ScoreError(rid, f"{where}: messages exceed {MAX_TEXT_CHARS} characters")
    return ScoreItem(rid, msgs)


def parse_jsonl(lines: Iterable[str]) -> Iterator[ScoreItem | ScoreError]:
    """Parse JSONL lines (blank lines skipped); a bad line yields a `ScoreError` naming its line number."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield ScoreError(f"line {n}", f"line {n}: invalid JSON ({e.msg} at column {e.colno})")
            continue
        yield parse_record(obj, f"line {n}")


def result_record(rid: Any, result: Any) -> dict[str, Any]:
    """The output record of one scanned prompt (`GuardResult`)."""
    risk = result.risk
    decision = result.decision
    tops = []
    if risk is not None:
        tops = [{k: f[k] for k in ("id", "layer", "index", "activation", "explanation")} | {
            k: f[k] for k in ("contribution", "share") if k in f} for f in risk.top_features]
    rec: dict[str, Any] = {
        "id": rid,
        "score": result.score,
        "decision": result.action,
        "concepts": risk.concepts if risk is not None else {},
        "top_features": tops,
    }
    if risk is not None and hasattr(risk, "named_share"):  # a detection head's score
        rec |= {"head": "detection", "named_share": round(risk.named_share, 6),
                "remainder_share": round(risk.remainder_share, 6)}
    if decision is not None:
        rec["rules"] = [{"rule": m.rule, "action": m.action, "span": list(m.span), "span_text": m.span_text}
                        for m in decision.matches]
    if result.truncation is not None and result.truncation.strategy != "none":
        rec["truncation"] = result.truncation.to_dict()
    if getattr(result, "normalized", None) is not None:
        nd = result.normalized
        rec["normalized"] = {"decision": nd.decision.action if nd.decision is not None else None,
                             "score": nd.risk.score if nd.risk is not None else None}
    if result.pivot is not None:
        rec["pivot"] = {"text": result.pivot.text, "model": result.pivot.model, "error": result.pivot.error,
                        "decision": result.pivot.decision.action if result.pivot.decision is not None else None,
                        "score": result.pivot.risk.score if result.pivot.risk is not None else None}
    return rec


def score_items(guard: Any, items: Sequence[ScoreItem | ScoreError], *, policy: Any = None, batch_size: int = 8,
                progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Score parsed items in order; errors pass through as error records."""
    good = [(i, it) for i, it in enumerate(items) if isinstance(it, ScoreItem)]
    out: list[dict[str, Any] | None] = [it.to_dict() if isinstance(it, ScoreError) else None for it in items]
    results = guard.scan_batch([it.prompt for _, it in good], policy=policy, batch_size=batch_size,
                               progress=progress)
    for (i, it), r in zip(good, results):
        out[i] = ScoreError(it.id, str(r)).to_dict() if isinstance(r, Exception) else result_record(it.id, r)
    return [o for o in out if o is not None]
