"""`LocalBackend`: the guarded model itself answers (live hooks on every prompt and decoded token, blocking at
the token, steering).

One request takes one path: `prepare` tokenises the prompt once (on the model thread) and keeps the encoding on
the job; the generation (`GuardedModel.stream`, `runtime/generation.py`) reads that encoding instead of encoding
again. The prompt's verdict comes from the stream's ``prompt`` event, the final one from its ``done`` event; a
pivot translation the policy asks for is made and scanned before generating (`GuardBackend._pivot`). Stop
sequences are applied by `StopMatcher` (`server/stop_matcher.py`); what a stop leaves is judged again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from safesail_guard.runtime.generation import ActiveSteer, GuardedModel
from safesail_guard.runtime.guard import GuardError
from safesail_guard.runtime.prompts import plain_prompt_text
from safesail_guard.runtime.verdict import Verdict
from safesail_guard.server.backend import GuardBackend, check_prompt_tokens
from safesail_guard.server.errors import bad_request
from safesail_guard.server.jobs import Cancelled, ChatJob, ModelWorker, Outcome, StreamItem
from safesail_guard.server.stop_matcher import StopMatcher

if TYPE_CHECKING:
    from safesail_guard.runtime.generation import Generation
    from safesail_guard.runtime.pivot import PivotOutcome
    from safesail_guard.server.openai_schema import SteerRequest


class LocalBackend(GuardBackend):
    """Generation by the guarded model itself (live hooks, blocking at the token, steering)."""

    mode = "local"

    def __init__(self, guarded: GuardedModel, worker: ModelWorker, *, model_id: str) -> None:
        super().__init__(guarded, worker, model_id=model_id)
        self.cancelled = 0  # generations stopped early (client gone or deadline)

    # ------------------------------------------------------------------------------------------ helpers
    def steer_ops(self, steer: list[SteerRequest]) -> list[ActiveSteer]:
        """Resolve requested steering to the database's features (400 for unknown ids)."""
        ops = []
        for i, s in enumerate(steer):
            info = self.guard.catalog.get(s.feature_id)
            if info is None:
                raise bad_request(f"safesail.steer[{i}].feature_id: unknown feature {s.feature_id!r}",
                                  param=f"safesail.steer[{i}].feature_id")
            ops.append(ActiveSteer(info.id, info.layer, s.op, float(s.value), 0))
        return ops

    def _run(self, job: ChatJob, emit: Callable[[StreamItem], None], pivot: PivotOutcome | None = None) -> Outcome:
        """The whole generation on the model thread; ``emit`` receives stream items as they happen. ``pivot``
        (the prompt's scanned translation, which did not block) joins the prompt and final verdicts."""
        job.cancel.check()
        ops = self.steer_ops(job.steer)
        stop = StopMatcher(job.stop)
        prompt_verdict: Verdict | None = None
        pieces: list[str] = []
        gen: Generation | None = None
        events = self.guarded.stream(job.messages, max_new_tokens=job.max_tokens, temperature=job.temperature,
                                     top_p=job.top_p, seed=job.seed, steer=ops, encoded=job.encoded)
        text = plain_prompt_text(job.messages)  # what the prompt verdict judged: every message's text
        try:
            for ev in events:
                if ev.kind == "prompt":
                    prompt_verdict = self.verdict("prompt", ev.decision, ev.tokens or [], text, pivot)
                    emit(("prompt", prompt_verdict))
                elif ev.kind == "delta":
                    out = stop.push(ev.text)
                    if out:
                        pieces.append(out)
                        emit(("delta", out))
                    if stop.hit:
                        break
                else:
                    gen = ev.generation
                    break
                job.cancel.check()
            else:  # pragma: no cover - stream always ends with done
                raise RuntimeError("generation ended without a result")
        except GuardError as e:
            raise bad_request(str(e), param="messages") from None
        except Cancelled:
            self.cancelled += 1
            raise
        finally:
            events.close()
        if stop.hit:
            return self._stopped(job, pieces, prompt_verdict, text, pivot)
        assert gen is not None  # the loop ends at "done" unless a stop sequence ended it
        tail = stop.flush()
        if tail and gen.finish_reason != "content_filter":
            pieces.append(tail)
            emit(("delta", tail))
        toks = gen.tokens
        if prompt_verdict is None:  # blocked while reading the prompt: the prompt stage is the block
            prompt_verdict = self.verdict("prompt", gen.decision, toks, text, pivot)
        final = self.verdict("final", gen.decision, toks, gen.completion, pivot)
        content = gen.text if gen.finish_reason == "content_filter" else "".join(pieces)
        return Outcome(content, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens, prompt_verdict, final,
                       [s.__dict__ for s in gen.steering], toks if job.want_tokens else None, gen.guard_seconds,
                       model=self.model_id)

    def _stopped(self, job: ChatJob, pieces: list[str], prompt_verdict: Verdict | None, text: str,
                 pivot: PivotOutcome | None = None) -> Outcome:
        """A stop sequence ended the generation: judge what was released (re-scan prompt + text). The re-scan
        reads the text cut at the stop sequence, whose last token can differ from the one generated; when it
        blocks, the answer is the refusal (in a stream, after the text already sent, as for any block)."""
        released = "".join(pieces)
        res = self.guard.scan(job.messages, policy=self.guarded.policy, response=released, pivot=False)
        final = self.verdict("final", res.decision, res.tokens, released, pivot)
        n_prompt = sum(1 for t in res.tokens if t.scope == "prompt")
        pv = prompt_verdict or self.verdict("prompt", res.decision, res.tokens, text, pivot)
        content, finish = released, "stop"
        if final.action == "block":
            content, finish = self._refusal(final), "content_filter"
        return Outcome(content, finish, n_prompt, len(res.tokens) - n_prompt, pv, final,
                       tokens=res.tokens if job.want_tokens else None, model=self.model_id)

    def _pivot_refusal(self, job: ChatJob, pivot: PivotOutcome) -> Outcome:
        """The prompt's pivot translation blocked: refuse before generating (the prompt itself is scanned for
        the verdict's evidence)."""
        res = self.guard.scan(job.messages, policy=self.guarded.policy, pivot=False)
        pv = self.verdict("prompt", res.decision, res.tokens, plain_prompt_text(job.messages), pivot)
        return Outcome(self._refusal(pv), "content_filter", len(res.tokens), 0, pv, pv,
                       tokens=res.tokens if job.want_tokens else None, model=self.model_id)

    async def _local_pivot(self, job: ChatJob) -> tuple[PivotOutcome | None, Outcome | None]:
        """The pivot translation the policy asks for (None when it does not), and the refusal when it blocks."""
        pivot = await self._pivot(job.messages, self._start_decision(job.messages))
        if pivot is not None and pivot.decision is not None and pivot.decision.action == "block":
            return pivot, await self.worker.run(self._pivot_refusal, job, pivot)
        return pivot, None

    # ------------------------------------------------------------------------------------------------ api
    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Tokenise the prompt once (kept on the job for the generation); 400 above the server's limit, or when
        the model's context cannot fit a reply."""
        job.encoded = await self.worker.run(self.encode_prompt, job.messages)
        n = len(job.encoded)
        check_prompt_tokens(n, max_prompt_tokens)
        context = int(getattr(self.guard.model.config, "max_position_embeddings", 0) or 0)
        if context and n + 1 > context:
            raise bad_request(f"messages: the prompt has {n} tokens; the model's context is {context}",
                              param="messages", code="context_length_exceeded")
        return n

    async def complete(self, job: ChatJob) -> Outcome:
        """Generate the whole reply."""
        pivot, refused = await self._local_pivot(job)
        if refused is not None:
            return refused
        return await self.worker.run(self._run, job, lambda _item: None, pivot)

    async def stream(self, job: ChatJob) -> AsyncGenerator[StreamItem, None]:
        """Generate, yielding stream items as the model thread produces them."""
        pivot, refused = await self._local_pivot(job)
        if refused is not None:
            yield "done", refused
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()

        def emit(item: StreamItem) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                emit(("done", self._run(job, emit, pivot)))
            except BaseException as e:  # noqa: BLE001 - handed to the event loop, re-raised there
                emit(("error", e))

        fut = asyncio.ensure_future(self.worker.run(work))
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    break
        finally:
            job.cancel.cancel("client gone")  # a no-op when finished; stops the model thread otherwise
            if not fut.done():
                await asyncio.shield(fut)


__all__ = ["LocalBackend"]
