"""`GuardBackend`: what answers a chat, and what its two kinds share.

A backend turns a `ChatJob` (`server/jobs.py`) into an `Outcome`, whole (`complete`) or as a stream of
`StreamItem`s (`stream`), after `prepare` checked and tokenised the prompt. Two kinds exist:
`LocalBackend` (`server/local_backend.py`: the guarded model generates, with live hooks, blocking at the
token and steering) and `UpstreamBackend` (`server/upstream_backend.py`: another OpenAI-compatible server
generates and the local model scores). Both own the local `GuardedModel` and run its work on the one
`ModelWorker` thread; this base holds what they share: prompt encoding with its limits, batch scoring, the
pivot translation a ``multilingual_gap`` rule asks for, and building a stage's `Verdict` (the verdict's own
computation lives in `runtime/verdict.py`).

The routes (`server/routes.py`) see a backend only through this class; `ServerState.backend` is typed by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from safesail_guard.chat_template import ChatFormatError
from safesail_guard.runtime.guard import GuardError
from safesail_guard.runtime.prompts import plain_prompt_text, policy_prompt_text
from safesail_guard.runtime.verdict import Stage, Verdict
from safesail_guard.server.errors import bad_request
from safesail_guard.server.jobs import ChatJob, ModelWorker, Outcome, StreamItem

if TYPE_CHECKING:
    from safesail_guard.chat_template import EncodedText
    from safesail_guard.events import TokenActivations
    from safesail_guard.policy import Decision
    from safesail_guard.runtime.generation import GuardedModel
    from safesail_guard.runtime.guard import Guard
    from safesail_guard.runtime.pivot import PivotOutcome
    from safesail_guard.runtime.result import GuardResult

DEFAULT_REFUSAL = "I can't help with that."
"""The refusal when a blocking policy gives no message of its own."""


def check_prompt_tokens(n: int, limit: int) -> None:
    """400 when the prompt is longer than the server allows."""
    if n > limit:
        raise bad_request(f"messages: the prompt has {n} tokens after the chat template; this server accepts at "
                          f"most {limit}", param="messages", code="context_length_exceeded")


class GuardBackend:
    """What both backends share: the local guarded model (scorer, and generator in local mode) on its thread."""

    mode = ""
    upstream_model: str | None = None  # upstream mode: the model id requested upstream (None: the client's)

    def __init__(self, guarded: GuardedModel, worker: ModelWorker, *, model_id: str) -> None:
        self.guarded = guarded
        self.guard: Guard = guarded.guard
        self.worker = worker
        self.model_id = model_id
        self.policy_name = guarded.policy.name if guarded.policy is not None else "none"

    # ------------------------------------------------------------------------------------- the interface
    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Check what the backend cannot do and tokenise the prompt (400s naming the field); returns the
        prompt's token count."""
        raise NotImplementedError

    async def complete(self, job: ChatJob) -> Outcome:
        """The whole answer."""
        raise NotImplementedError

    def stream(self, job: ChatJob) -> AsyncGenerator[StreamItem, None]:
        """The answer as stream items (see `server/jobs.py`)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the backend holds beyond the model (the upstream HTTP client)."""

    async def score(self, prompts: Sequence[Any]) -> list[GuardResult | Exception]:
        """Scan prompts in batches on the model thread, under the server's policy."""
        return await self.worker.run(self.guard.scan_batch, prompts, policy=self.guarded.policy)

    # ---------------------------------------------------------------------------------------- shared
    def encode_prompt(self, messages: list[dict[str, str]]) -> EncodedText:
        """The prompt's tokens after the chat template (model thread only); a message the template drops is a
        400 naming it, never passed unread."""
        try:
            enc, _ = self.guard.encode_prompt(messages)
        except ChatFormatError as e:
            raise bad_request(str(e), param=e.param or "messages") from None
        return enc

    def verdict(self, stage: Stage, decision: Decision | None, tokens: Sequence[TokenActivations], text: str,
                pivot: PivotOutcome | None = None) -> Verdict:
        """The verdict of ``stage``, its risk scored by the guard's risk head (`Verdict.of`)."""
        return Verdict.of(stage, decision, tokens, risk_head=self.guard.risk_head, text=text, pivot=pivot)

    def _start_decision(self, messages: list[dict[str, str]]) -> Decision | None:
        """The policy's decision before any token is read (language rules: does it ask for a pivot?)."""
        pol = self.guarded.policy
        if pol is None:
            return None
        try:
            return pol.start(prompt_text=policy_prompt_text(messages)).snapshot()
        except GuardError as e:
            raise bad_request(str(e), param="messages") from None

    async def _pivot(self, messages: list[dict[str, str]], decision: Decision | None) -> PivotOutcome | None:
        """When ``decision`` asks for a pivot translation (a ``multilingual_gap`` rule with ``pivot:``), translate
        the prompt (off the model thread: it is a network call) and scan the translation with the same policy on
        the model thread; the `PivotOutcome`, or None when none was asked for. A failed translation is recorded
        in the outcome and the original decision stands (`runtime/pivot.py`)."""
        if decision is None or not decision.pivot_requested or decision.pivot is None:
            return None
        from safesail_guard.runtime.pivot import PivotOutcome, translate

        text, model, error = await asyncio.to_thread(translate, plain_prompt_text(messages), decision.pivot)
        if text is None:
            return PivotOutcome(None, None, None, model, error)
        sub = await self.worker.run(self.guard.scan, text, policy=self.guarded.policy, pivot=False)
        return PivotOutcome(text, sub.decision, sub.risk, model)

    @staticmethod
    def _refusal(verdict: Verdict) -> str:
        return verdict.refusal or DEFAULT_REFUSAL


__all__ = ["DEFAULT_REFUSAL", "GuardBackend", "check_prompt_tokens"]
