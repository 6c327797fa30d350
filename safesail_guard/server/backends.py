"""What answers a chat: `LocalBackend` (the guarded model itself) and `UpstreamBackend` (another server, guarded
by the local scoring model).

All model work - tokenizing, scanning, generating - runs on one worker thread (`ModelWorker`): the guard's hooks
are attached to the one shared model for the length of a sequence, and HF fast tokenizers must not be used from
two threads at once. The event loop stays free for I/O; `limits.Admission` decides who waits and who gets 429.

A backend turns a `ChatJob` into `Outcome`s. Streaming yields `("prompt", Verdict)` once the prompt passed the
policy (before any text), then `("delta", text)` pieces, then `("done", Outcome)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from safesail_guard.runtime.events import TokenActivations
from safesail_guard.runtime.generation import ActiveSteer, GuardedModel
from safesail_guard.runtime.guard import Guard, GuardError
from safesail_guard.server.errors import APIError, bad_request
from safesail_guard.server.verdict import Verdict

T = TypeVar("T")
StreamItem = tuple[str, Any]


def _stage(job: ChatJob, name: str) -> Any:
    """A telemetry stage span of the job's request (a no-op without telemetry)."""
    return job.trace.stage(name) if job.trace is not None else contextlib.nullcontext()


class Cancelled(Exception):
    """The client went away or the deadline passed; generation stopped."""


class ModelWorker:
    """The single thread that owns the model."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="safesail-model")

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn`` on the model thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kw))

    def shutdown(self) -> None:
        """Stop the thread after the current job (queued jobs are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class CancelToken:
    """Set when the client disconnects or the deadline passes; checked between decoded tokens."""

    deadline: float  # time.monotonic() limit
    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def cancel(self, reason: str) -> None:
        """Ask the generation to stop."""
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def check(self) -> None:
        """Raise `Cancelled` when cancelled or past the deadline."""
        if not self.event.is_set() and time.monotonic() > self.deadline:
            self.cancel("timeout")
        if self.event.is_set():
            raise Cancelled(self.reason)


@dataclass
class ChatJob:
    """One parsed chat request, ready for a backend."""

    request_id: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    steer: list[Any]  # SteerRequest
    want_tokens: bool
    body: dict[str, Any]  # the request JSON as received (upstream mode forwards it)
    client_model: str
    cancel: CancelToken
    stream: bool = False
    trace: Any = None  # telemetry.RequestTrace of the request (upstream calls become its CLIENT child spans)


@dataclass
class Outcome:
    """A finished chat."""

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt: Verdict
    final: Verdict
    steering: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[TokenActivations] | None = None
    guard_seconds: float = 0.0
    upstream_body: dict[str, Any] | None = None
    model: str = ""


class StopMatcher:
    """Cuts text at the first stop sequence, holding back a tail that could still become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._keep = max((len(s) for s in stops), default=1) - 1
        self._buf = ""
        self.hit = False

    def push(self, piece: str) -> str:
        """Add ``piece``; returns the text safe to emit now."""
        if self.hit:
            return ""
        if not self.stops:
            return piece
        self._buf += piece
        cuts = [i for i in (self._buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.hit = True
            out, self._buf = self._buf[:min(cuts)], ""
            return out
        cut = max(0, len(self._buf) - self._keep)
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out

    def flush(self) -> str:
        """The held-back tail at the end of the text."""
        out, self._buf = ("" if self.hit else self._buf), ""
        return out


def _verdict(guard: Guard, stage: str, decision: Any, tokens: list[TokenActivations], scopes: tuple[str, ...],
             text: str) -> Verdict:
    risk = guard.risk_head.score(tokens, scopes=scopes) if guard.risk_head is not None else None
    return Verdict(stage, decision, risk, text, tokens)


def _last_user(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m["role"] in ("user", "tool"):
            return m["content"]
    return ""


class _GuardBackend:
    """What both backends share: the local guarded model (scorer, and generator in local mode) on its thread."""

    mode = ""

    def __init__(self, guarded: GuardedModel, worker: ModelWorker, *, model_id: str) -> None:
        self.guarded = guarded
        self.guard = guarded.guard
        self.worker = worker
        self.model_id = model_id
        self.policy_name = guarded.policy.name if guarded.policy is not None else "none"

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens after the chat template (model thread only)."""
        enc, _ = self.guard.encode_prompt(messages)
        return len(enc)

    async def score(self, prompts: list[Any]) -> list[Any]:
        """Scan prompts in batches on the model thread, under the server's policy."""
        return await self.worker.run(self.guard.scan_batch, prompts, policy=self.guarded.policy)


class LocalBackend(_GuardBackend):
    """Generation by the guarded model itself (live hooks, blocking at the token, steering)."""

    mode = "local"

    def __init__(self, guarded: GuardedModel, worker: ModelWorker, *, model_id: str) -> None:
        super().__init__(guarded, worker, model_id=model_id)
        self.cancelled = 0  # generations stopped early (client gone or deadline)

    # ------------------------------------------------------------------------------------------ helpers
    def steer_ops(self, steer: list[Any]) -> list[ActiveSteer]:
        """Resolve requested steering to the database's features (400 for unknown ids)."""
        ops = []
        for i, s in enumerate(steer):
            info = self.guard.catalog.get(s.feature_id)
            if info is None:
                raise bad_request(f"safesail.steer[{i}].feature_id: unknown feature {s.feature_id!r}",
                                  param=f"safesail.steer[{i}].feature_id")
            ops.append(ActiveSteer(info.id, info.layer, s.op, float(s.value), 0))
        return ops

    def _run(self, job: ChatJob, emit: Callable[[StreamItem], None]) -> Outcome:
        """The whole generation on the model thread; ``emit`` receives stream items as they happen."""
        job.cancel.check()
        ops = self.steer_ops(job.steer)
        stop = StopMatcher(job.stop)
        prompt_verdict: Verdict | None = None
        pieces: list[str] = []
        events = self.guarded.stream(job.messages, max_new_tokens=job.max_tokens, temperature=job.temperature,
                                     top_p=job.top_p, seed=job.seed, steer=ops)
        user_text = _last_user(job.messages)
        try:
            for ev in events:
                if ev.kind == "prompt":
                    prompt_verdict = _verdict(self.guard, "prompt", ev.decision, ev.tokens or [], ("prompt",),
                                              user_text)
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
                    assert gen is not None
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
            return self._stopped(job, pieces, prompt_verdict, user_text)
        tail = stop.flush()
        if tail and gen.finish_reason != "content_filter":
            pieces.append(tail)
            emit(("delta", tail))
        toks = gen.tokens
        if prompt_verdict is None:  # blocked while reading the prompt: the prompt stage is the block
            prompt_verdict = _verdict(self.guard, "prompt", gen.decision, toks, ("prompt",), user_text)
        final = _verdict(self.guard, "final", gen.decision, toks, ("response",), gen.completion)
        content = gen.text if gen.finish_reason == "content_filter" else "".join(pieces)
        return Outcome(content, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens, prompt_verdict, final,
                       [s.__dict__ for s in gen.steering], toks if job.want_tokens else None, gen.guard_seconds,
                       model=self.model_id)

    def _stopped(self, job: ChatJob, pieces: list[str], prompt_verdict: Verdict | None, user_text: str) -> Outcome:
        """A stop sequence ended the generation: judge what was released (re-scan prompt + text)."""
        text = "".join(pieces)
        res = self.guard.scan(job.messages, policy=self.guarded.policy, response=text, pivot=False)
        final = _verdict(self.guard, "final", res.decision, res.tokens, ("response",), text)
        n_prompt = sum(1 for t in res.tokens if t.scope == "prompt")
        pv = prompt_verdict or _verdict(self.guard, "prompt", res.decision, res.tokens, ("prompt",), user_text)
        return Outcome(text, "stop", n_prompt, len(res.tokens) - n_prompt, pv, final,
                       tokens=res.tokens if job.want_tokens else None, model=self.model_id)

    # ------------------------------------------------------------------------------------------------ api
    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Count the prompt's tokens (400 above the limit, or when the model's context cannot fit a reply)."""
        n = await self.worker.run(self.count_prompt_tokens, job.messages)
        check_prompt_tokens(n, max_prompt_tokens)
        context = int(getattr(self.guard.model.config, "max_position_embeddings", 0) or 0)
        if context and n + 1 > context:
            raise bad_request(f"messages: the prompt has {n} tokens; the model's context is {context}",
                              param="messages", code="context_length_exceeded")
        return n

    async def complete(self, job: ChatJob) -> Outcome:
        """Generate the whole reply."""
        return await self.worker.run(self._run, job, lambda _item: None)

    async def stream(self, job: ChatJob) -> AsyncIterator[StreamItem]:
        """Generate, yielding stream items as the model thread produces them."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()

        def emit(item: StreamItem) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                emit(("done", self._run(job, emit)))
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


def check_prompt_tokens(n: int, limit: int) -> None:
    """400 when the prompt is longer than the server allows."""
    if n > limit:
        raise bad_request(f"messages: the prompt has {n} tokens after the chat template; this server accepts at "
                          f"most {limit}", param="messages", code="context_length_exceeded")


# ------------------------------------------------------------------------------------------------ upstream


class UpstreamBackend(_GuardBackend):
    """Forward to another OpenAI-compatible server; guard prompt and response with the local scoring model."""

    mode = "upstream"

    def __init__(self, guarded: GuardedModel, worker: ModelWorker, *, base_url: str, api_key_env: str,
                 upstream_model: str | None, timeout_s: float, model_id: str) -> None:
        import httpx

        super().__init__(guarded, worker, model_id=model_id)
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.upstream_model = upstream_model
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _body(self, job: ChatJob, stream: bool) -> dict[str, Any]:
        body = {k: v for k, v in job.body.items() if k != "safesail"}
        body["model"] = self.upstream_model or job.client_model
        body["stream"] = stream
        if stream:
            body.pop("stream_options", None)
        return body

    def _scan_prompt(self, job: ChatJob) -> Verdict:
        res = self.guard.scan(job.messages, policy=self.guarded.policy)
        d = res.decision
        return Verdict("prompt", d, res.risk, _last_user(job.messages), res.tokens)

    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Count prompt tokens with the local tokenizer (the server's limit applies to what it scores)."""
        if job.steer:
            raise bad_request("safesail.steer: steering needs the model's hooks; this server runs in upstream mode",
                              param="safesail.steer")
        n = await self.worker.run(self.count_prompt_tokens, job.messages)
        check_prompt_tokens(n, max_prompt_tokens)
        return n

    def _refusal(self, verdict: Verdict) -> str:
        d = verdict.decision
        return d.refusal if d is not None and d.refusal else "I can't help with that."

    def _upstream_error(self, exc: Exception) -> APIError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return APIError(504, f"the upstream server did not answer within {self.timeout_s:g} s",
                            code="upstream_timeout")
        return APIError(502, f"the upstream server could not be reached: {type(exc).__name__}",
                        code="upstream_unreachable")

    def _call_span(self, job: ChatJob) -> Any:
        """The upstream CLIENT span (a no-op without telemetry)."""
        if job.trace is None:
            return contextlib.nullcontext()
        return job.trace.upstream_call(self.upstream_model or job.client_model, f"{self.base_url}/chat/completions")

    def _traced_headers(self, job: ChatJob) -> dict[str, str]:
        h = self._headers()
        if job.trace is not None:
            job.trace.inject(h)
        return h

    async def _post(self, job: ChatJob) -> dict[str, Any]:
        import httpx

        with self._call_span(job):
            try:
                r = await self._client.post(f"{self.base_url}/chat/completions", json=self._body(job, False),
                                            headers=self._traced_headers(job))
            except httpx.HTTPError as e:
                if job.trace is not None:
                    job.trace.upstream_response(error_type=type(e).__name__)
                raise self._upstream_error(e) from None
            if job.trace is not None:
                job.trace.upstream_response(status_code=r.status_code)
            return _upstream_json(r)

    async def complete(self, job: ChatJob) -> Outcome:
        """Scan the prompt, forward, scan the reply; block by replacing the content."""
        with _stage(job, "prompt_scoring"):
            pv = await self.worker.run(self._scan_prompt, job)
        if pv.action == "block":
            return Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv,
                           model=self.upstream_model or job.client_model)
        body = await asyncio.wait_for(self._post(job), timeout=self.timeout_s + 1)
        content, finish = _first_choice(body)
        with _stage(job, "response_scoring"):
            final, guard_s = await self.worker.run(self._scan_reply, job, content)
        if final.action == "block":
            content, finish = self._refusal(final), "content_filter"
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return Outcome(content, finish or "stop", int(usage.get("prompt_tokens") or 0),
                       int(usage.get("completion_tokens") or 0), pv, final, guard_seconds=guard_s,
                       tokens=_shown_tokens(final) if job.want_tokens else None, upstream_body=body, model=str(body.get("model") or job.client_model))

    def _scan_reply(self, job: ChatJob, content: str) -> tuple[Verdict, float]:
        from safesail_guard.runtime.monitor import ResponseMonitor

        with ResponseMonitor(self.guard, job.messages, policy=self.guarded.policy) as mon:
            mon.feed(content)
            mon.finish()
            toks = list(mon.session.tokens)
            return _verdict(self.guard, "final", mon.decision(), toks, ("response",), content), mon.guard_seconds

    async def stream(self, job: ChatJob) -> AsyncIterator[StreamItem]:
        """Scan the prompt, stream upstream, release reply text only after the guard passed it."""
        import httpx

        from safesail_guard.runtime.monitor import ResponseMonitor

        with _stage(job, "prompt_scoring"):
            pv = await self.worker.run(self._scan_prompt, job)
        model = self.upstream_model or job.client_model
        if pv.action == "block":
            yield "done", Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv, model=model)
            return
        yield "prompt", pv
        mon = await self.worker.run(ResponseMonitor, self.guard, job.messages, policy=self.guarded.policy)
        finish: str | None = None
        usage: dict[str, Any] = {}
        text_parts: list[str] = []
        released: list[str] = []
        blocked = False
        call = self._call_span(job)
        call.__enter__()
        try:
            async with self._client.stream("POST", f"{self.base_url}/chat/completions",
                                           json=self._body(job, True), headers=self._traced_headers(job)) as r:
                if job.trace is not None:
                    job.trace.upstream_response(status_code=r.status_code)
                if r.status_code >= 400:
                    await r.aread()
                    _upstream_json(r)  # raises the mapped error
                async for line in r.aiter_lines():
                    job.cancel.check()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError:
                        raise APIError(502, "the upstream server sent an invalid stream chunk",
                                       code="upstream_bad_response") from None
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise APIError(502, f"the upstream server failed mid-stream: {_err_msg(chunk)}",
                                       code="upstream_error")
                    piece, fr = _chunk_piece(chunk)
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    finish = fr or finish
                    if piece:
                        text_parts.append(piece)
                        step = await self.worker.run(mon.feed, piece)
                        if step.text:
                            released.append(step.text)
                            yield "delta", step.text
                        if step.blocked:
                            blocked = True
                            break
            if not blocked:
                step = await self.worker.run(mon.finish)
                if step.text:
                    released.append(step.text)
                    yield "delta", step.text
                blocked = step.blocked
            toks = list(mon.session.tokens)
            final = await self.worker.run(_verdict, self.guard, "final", mon.decision(), toks, ("response",),
                                          "".join(text_parts))
            guard_s = mon.guard_seconds
        except httpx.HTTPError as e:
            if job.trace is not None:
                job.trace.upstream_response(error_type=type(e).__name__)
            raise self._upstream_error(e) from None
        finally:
            call.__exit__(None, None, None)
            await self.worker.run(mon.close)
        content = self._refusal(final) if blocked else "".join(released)
        yield "done", Outcome(content, "content_filter" if blocked else (finish or "stop"),
                              int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                              pv, final, guard_seconds=guard_s, model=model,
                              tokens=_shown_tokens(final) if job.want_tokens else None)


def _shown_tokens(verdict: Verdict) -> list[TokenActivations]:
    """The monitor's token events for the client: all of them, or when a rule blocked, those up to the blocking
    token (as in local mode; the upstream text after it was withheld, so its tokens are not shown either)."""
    d = verdict.decision
    block = next((m for m in d.matches if m.action == "block"), None) if d is not None else None
    if block is None:
        return verdict.tokens
    last = block.span[1] if block.span[1] >= 0 else -1
    return [t for t in verdict.tokens if t.position <= last]


def _err_msg(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", ""))[:300]
    return str(err)[:300]


def _upstream_json(r: Any) -> dict[str, Any]:
    """The upstream JSON body, or the mapped error: its 4xx pass through (with its message), 5xx become 502."""
    try:
        body = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if r.status_code >= 400:
        msg = _err_msg(body) if body is not None else r.text[:300]
        if r.status_code in (400, 401, 403, 404, 413, 422, 429):
            status = 502 if r.status_code in (401, 403) else r.status_code
            raise APIError(status, f"upstream rejected the request ({r.status_code}): {msg}", code="upstream_rejected")
        raise APIError(502, f"the upstream server failed ({r.status_code}): {msg}", code="upstream_error")
    if not isinstance(body, dict):
        raise APIError(502, "the upstream server returned a body that is not a JSON object",
                       code="upstream_bad_response")
    return body


def _first_choice(body: dict[str, Any]) -> tuple[str, str | None]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise APIError(502, "the upstream response has no choices", code="upstream_bad_response")
    msg = choices[0].get("message") or {}
    content = msg.get("content") if isinstance(msg, dict) else None
    if content is not None and not isinstance(content, str):
        raise APIError(502, "the upstream message content is not text", code="upstream_bad_response")
    return content or "", choices[0].get("finish_reason")


def _chunk_piece(chunk: Any) -> tuple[str, str | None]:
    if not isinstance(chunk, dict):
        return "", None
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", None
    delta = choices[0].get("delta") or {}
    piece = delta.get("content") if isinstance(delta, dict) else None
    return (piece if isinstance(piece, str) else ""), choices[0].get("finish_reason")
