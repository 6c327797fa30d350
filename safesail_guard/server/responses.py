"""Answering a chat: the JSON completion (`complete_json`) and the SSE stream (`start_stream`).

Both run a `ChatJob` through the state's backend (`server/backend.py`: ``prepare``, then ``complete`` or
``stream``) under the request's deadline, record the verdicts (`server/recording.py`) before the answer that
depends on them leaves, and assemble the OpenAI wire format (`openai_schema.completion_body`, `chunk_body`,
`sse`) with the guard's ``safesail`` field and ``x-safesail-*`` headers (`server/verdict.py`). A stream's
headers go out once the prompt's verdict is known; errors after that are SSE error events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from safesail_guard.runtime.verdict import Verdict
from safesail_guard.server.chat_request import watch_disconnect
from safesail_guard.server.errors import APIError
from safesail_guard.server.jobs import Cancelled, ChatJob, Outcome, StreamItem
from safesail_guard.server.openai_schema import chunk_body, completion_body, new_completion_id, sse, stream_error
from safesail_guard.server.recording import local_stage, record_outcome, record_verdict
from safesail_guard.server.state import ServerState
from safesail_guard.server.verdict import safesail_field, verdict_headers

if TYPE_CHECKING:
    from safesail_guard.telemetry import RequestTrace

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def safesail_of(st: ServerState, job: ChatJob, out: Outcome) -> dict[str, Any]:
    """The ``safesail`` field of a finished chat."""
    return safesail_field(request_id=job.request_id, policy=st.served.policy_name, mode=st.config.mode,
                          prompt=out.prompt, final=out.final, steering=out.steering,
                          tokens=out.tokens if job.want_tokens else None, guard_ms=out.guard_seconds * 1000,
                          upstream=out.upstream, ignored=job.ignored)


# ----------------------------------------------------------------------------------------------------- JSON


async def complete_json(request: Request, st: ServerState, job: ChatJob, key_id: str | None,
                        trace: RequestTrace) -> Response:
    """The whole chat as one ``chat.completion`` (504 past the deadline, 499 when the client went away)."""
    t0 = time.perf_counter()
    be = st.served
    watcher = asyncio.create_task(watch_disconnect(request, job.cancel))
    try:
        with local_stage(be, trace, "safesail.prompt_scoring"):
            await be.prepare(job, st.config.limits.max_prompt_tokens)
        remaining = max(0.1, job.cancel.deadline - time.monotonic())
        with local_stage(be, trace, "safesail.generation"):
            out: Outcome = await asyncio.wait_for(be.complete(job), timeout=remaining)
    except (TimeoutError, asyncio.TimeoutError):
        job.cancel.cancel("timeout")
        raise APIError(504, f"the request did not finish within {st.config.limits.request_timeout_s:g} s",
                       code="timeout") from None
    except Cancelled as e:
        raise APIError(504 if e.args and e.args[0] == "timeout" else 499, f"generation stopped: {e}",
                       code="cancelled") from None
    finally:
        watcher.cancel()
        job.cancel.cancel("request ended")  # a no-op for a finished job; stops the model thread if we were cancelled
    latency = (time.perf_counter() - t0) * 1000
    await record_outcome(st, job, out, key_id, trace, latency)
    cid = new_completion_id()
    field_ = safesail_of(st, job, out)
    if out.upstream_body is not None:  # upstream mode: the backend built the reply from what passed the guard
        body = {"id": cid, "created": int(time.time()), **out.upstream_body, "safesail": field_}
    else:
        body = completion_body(cid=cid, model=out.model or job.client_model, content=out.content,
                               finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
                               completion_tokens=out.completion_tokens, safesail=field_)
    trace.finish(finish_reason=out.finish_reason, status_code=200, response_id=str(body.get("id", cid)))
    return JSONResponse(body, headers=verdict_headers(job.request_id, out.final, out.prompt))


# --------------------------------------------------------------------------------------------------- stream


async def start_stream(request: Request, st: ServerState, job: ChatJob, key_id: str | None, stack: AsyncExitStack,
                       trace: RequestTrace) -> Response:
    """Run until the prompt's verdict is known (it goes in the headers and the audit log), then stream. The
    response owns ``stack`` (slot, trace, the backend's stream) and closes it however the stream ends."""
    t0 = time.perf_counter()
    be = st.served
    try:
        # local mode: token count, then the prefill's verdict
        with local_stage(be, trace, "safesail.prompt_scoring"):
            await be.prepare(job, st.config.limits.max_prompt_tokens)
            items = be.stream(job)
            stack.push_async_callback(items.aclose)
            first = await asyncio.wait_for(items.__anext__(), timeout=max(0.1, job.cancel.deadline - time.monotonic()))
    except (TimeoutError, asyncio.TimeoutError):
        job.cancel.cancel("timeout")
        raise APIError(504, "the request timed out before the first token", code="timeout") from None
    except Cancelled as e:
        raise APIError(504, f"generation stopped: {e}", code="cancelled") from None
    kind, value = first
    prompt_verdict: Verdict = value if kind == "prompt" else value.prompt
    await record_verdict(st, job, prompt_verdict, key_id=key_id, trace=trace, model=job.client_model)
    headers = {**SSE_HEADERS, **verdict_headers(job.request_id, prompt_verdict)}
    include_usage = bool(job.body.get("stream_options", {}).get("include_usage")) if isinstance(
        job.body.get("stream_options"), dict) else False

    async def body() -> AsyncIterator[bytes]:
        cid, created = new_completion_id(), int(time.time())
        model = be.model_id if st.config.mode == "local" else (be.upstream_model or job.client_model)
        first_token = True
        try:
            async with stack:
                yield sse(chunk_body(cid=cid, model=model, created=created, delta={"role": "assistant", "content": ""}))
                pending = [first] if kind == "done" else []
                stack.enter_context(local_stage(be, trace, "safesail.generation"))
                async for k, v in _chain(pending, items):
                    if k == "delta":
                        if first_token:
                            trace.first_token()
                            first_token = False
                        delta = {"content": v} if isinstance(v, str) else v  # upstream: text fields, tool calls
                        yield sse(chunk_body(cid=cid, model=model, created=created, delta=delta))
                    elif k == "done":
                        out: Outcome = v
                        await record_outcome(st, job, out, key_id, trace, (time.perf_counter() - t0) * 1000,
                                             prompt_done=True)
                        if out.finish_reason == "content_filter":
                            yield sse(chunk_body(cid=cid, model=model, created=created,
                                                 delta={"content": out.content}))
                        yield sse(chunk_body(cid=cid, model=model, created=created, delta={},
                                             finish_reason=out.finish_reason, safesail=safesail_of(st, job, out)))
                        if include_usage:
                            yield sse(chunk_body(cid=cid, model=model, created=created, delta={}, empty_choices=True,
                                                 usage={"prompt_tokens": out.prompt_tokens,
                                                        "completion_tokens": out.completion_tokens,
                                                        "total_tokens": out.prompt_tokens + out.completion_tokens}))
                        trace.finish(finish_reason=out.finish_reason, status_code=200, response_id=cid)
                        break
                yield sse("[DONE]")
        except APIError as e:
            trace.finish(finish_reason=None, status_code=e.status, error_type=e.code or "api_error")
            yield stream_error(e)
            yield sse("[DONE]")
        except Cancelled as e:
            reason = str(e)
            trace.finish(finish_reason=None, status_code=504 if reason == "timeout" else 499,
                         error_type="timeout" if reason == "timeout" else "client_disconnected")
            if reason == "timeout":
                yield stream_error(APIError(504, "the request timed out during generation", code="timeout"))
                yield sse("[DONE]")

    return OwningStream(body(), stack, media_type="text/event-stream", headers=headers)


class OwningStream(StreamingResponse):
    """A stream that releases what its request holds (slot, model job, trace) even when the body is never
    iterated - e.g. the client vanished before the headers went out - so a lost client cannot leak a slot."""

    def __init__(self, content: Any, stack: AsyncExitStack, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._stack = stack

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._stack.aclose()  # a no-op when the body already closed it


async def _chain(first: list[StreamItem], rest: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
    for item in first:
        yield item
    if not first or first[-1][0] != "done":
        async for item in rest:
            yield item


__all__ = ["OwningStream", "SSE_HEADERS", "complete_json", "start_stream"]
