"""`ResponseMonitor`: guard a response that another model writes, as its text arrives in pieces.

Upstream mode forwards the chat to another server and must judge the reply while it streams. The monitor runs
the prompt through the local scoring model once (keeping the KV cache), then each arriving piece of reply text
is tokenized and fed through the guarded layers only (the pass stops after the deepest guarded layer, so the
layers above it and the LM head never run). Text is released to the client only after its tokens passed the
policy; when a rule blocks, everything from the blocking token on is withheld.

Tokenization is incremental and cut at word starts: text is fed up to the last whitespace that begins a new
word, and the unfinished word is held back until more text (or the end) arrives, because the next piece can
still change its tokens ("flou" + "r" tokenizes differently from "flour"). Tokenizers that split words at
whitespace first (byte-level BPE as in Llama 3, Qwen2 and SmolLM2, and SentencePiece) then give exactly the
tokens of the whole reply (tested). Text with no whitespace for `MAX_HOLD_CHARS` (e.g. Chinese) falls back
to holding back only the last token, where a split can differ slightly from tokenizing the whole reply.

The scoring model is shared: the server keeps one monitor per streaming request, and with ``max_concurrent`` above
1 the model thread runs forward calls of several monitors (and prompt scans) in between each other's. So a
monitor's hooks are attached only around each forward call it makes, and attaching is exclusive per model
(`hooks.exclusive_scan`): no other request's call ever reaches this monitor's tracker. A forward call that fails
(e.g. it cannot be placed in the sequence) poisons the monitor: later calls raise instead of releasing text
whose tokens were never scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from safesail_guard.hooks import run_until_hooks
from safesail_guard.runtime.guard import Guard, WatchSession
from safesail_guard.runtime.prompts import Prompt
from safesail_guard.runtime.prompts import policy_prompt_text as _prompt_text
from safesail_guard.runtime.tracker import cache_kwargs

MAX_HOLD_CHARS = 48
"""Longest unfinished word held back before falling back to holding back only the last token."""


@dataclass
class MonitorStep:
    """What one `feed` or `finish` call lets through: ``text`` is safe to release; ``blocked`` means stop."""

    text: str
    blocked: bool


class ResponseMonitor:
    """Incremental guard over one externally generated response; use as a context manager."""

    def __init__(self, guard: Guard, prompt: Prompt, *, policy: Any = None) -> None:
        self.guard = guard
        self._tok = guard.tokenizer
        enc, _ = guard.encode_prompt(prompt)
        self.prompt_tokens = len(enc)
        # the session's tracker is attached around each forward call (`_forward`), never in between
        self.session = WatchSession(guard, guard.compile(policy), self.prompt_tokens, _prompt_text(prompt))
        self.session.tracker.stop_at_deepest = True
        from transformers import DynamicCache

        self._cache = DynamicCache()
        self._text = ""  # the whole reply received so far
        self._fed_chars = 0  # reply characters whose tokens have been fed
        self._released_chars = 0
        self._starts: list[int] = []  # per fed response token: its first character in the reply
        self._blocked = False
        self._closed = False
        self._failed: BaseException | None = None  # the error of a failed forward call (the monitor is unusable)
        self._forward(enc.input_ids)
        if self.session.run is not None:  # the prompt is complete: decide the rules that score it as a whole
            self.session.run.end_prompt()

    # ------------------------------------------------------------------------------------------------ api
    def __enter__(self) -> ResponseMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def response_tokens(self) -> int:
        """Response tokens fed so far."""
        return len(self._starts)

    @property
    def guard_seconds(self) -> float:
        """Wall time spent in the guard's hooks and policy so far."""
        return self.session.tracker.stats.guard_seconds

    def feed(self, piece: str) -> MonitorStep:
        """Add a piece of reply text; returns the text now cleared for release (possibly empty)."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        self._check_failed()
        if self._blocked:
            return MonitorStep("", True)
        self._text += piece
        return self._advance(final=False)

    def finish(self) -> MonitorStep:
        """The reply is complete: feed what was held back and release the rest (unless blocked)."""
        if self._blocked or self._closed:
            return MonitorStep("", self._blocked)
        self._check_failed()
        return self._advance(final=True)

    def decision(self) -> Any:
        """The policy's decision over prompt and response so far (None without a policy)."""
        run = self.session.run
        return run.snapshot() if run is not None else None

    def close(self) -> None:
        """End the monitor (idempotent); its hooks are attached only during its own forward calls."""
        self._closed = True

    def _check_failed(self) -> None:
        if self._failed is not None:
            raise RuntimeError(f"the monitor failed earlier and scores nothing more: {self._failed}") from self._failed

    # ------------------------------------------------------------------------------------------ internals
    def _advance(self, final: bool) -> MonitorStep:
        pending = self._text[self._fed_chars:]
        cut = 0 if final else _word_start(pending)
        if cut:
            pending = pending[:cut]  # complete words only; the last one may still grow
        if pending:
            ids, starts = self._tokenize(pending)
            if not final and not cut:  # no word boundary: hold it all back, or all but the last token when long
                ids = ids[:-1] if len(pending) > MAX_HOLD_CHARS else []
            if ids:
                self._starts.extend(self._fed_chars + s for s in starts[:len(ids)])
                self._fed_chars += starts[len(ids)]
                self._forward(ids)
        limit = self._fed_chars
        run = self.session.run
        if run is not None and run.blocked is not None:
            self._blocked = True
            index = run.blocked.span[1] - self.prompt_tokens
            # release up to the blocking token's first character (nothing more for a block in the prompt)
            limit = max(self._starts[index] if 0 <= index < len(self._starts) else 0, self._released_chars)
        text = self._text[self._released_chars:limit]
        self._released_chars = max(self._released_chars, limit)
        return MonitorStep(text, self._blocked)

    def _tokenize(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids of ``text`` and the character each starts at (its end, for the last, is len(text))."""
        try:
            out = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(out["input_ids"])
            starts = [int(a) for a, _ in out["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError):  # slow tokenizers have no offsets: decode prefixes
            ids = list(self._tok(text, add_special_tokens=False)["input_ids"])
            starts, pos = [], 0
            for i in range(len(ids)):
                starts.append(min(pos, len(text)))
                pos = len(self._tok.decode(ids[:i + 1]))
        # extend with a sentinel so starts[len(ids)] is the end of the text
        return ids, [*starts, len(text)]

    @torch.no_grad()
    def _forward(self, ids: list[int]) -> None:
        """Run ``ids`` through the guarded layers with this monitor's hooks attached for this call only."""
        model = self.guard.model
        try:
            with self.session.tracker.attached(model):
                run_until_hooks(model, input_ids=torch.tensor([ids], dtype=torch.long), use_cache=True,
                                **cache_kwargs(model, self._cache))
        except BaseException as e:
            self._failed = e
            raise


def _word_start(text: str) -> int:
    """Index of the last whitespace that starts a new word (followed by a non-space); 0 when there is none."""
    for i in range(len(text) - 2, 0, -1):
        if text[i].isspace() and not text[i + 1].isspace():
            return i
    return 0
