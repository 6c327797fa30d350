"""`UpstreamBackend`: another OpenAI-compatible server answers; the local scoring model guards prompt and reply.

The prompt (messages, and the request's other text an upstream model reads: `request_side_text`) is scanned
before anything is forwarded; what the guard cannot scan in the reply is refused up front
(`check_upstream_support`). The reply is parsed by `server/upstream_reply.py` and released only as far as the
guard scanned it (`server/upstream_release.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from safesail_guard.chat_template import ChatFormatError, check_text
from safesail_guard.runtime.generation import GuardedModel
from safesail_guard.runtime.normalized import merge_normalized
from safesail_guard.runtime.prompts import plain_prompt_text
from safesail_guard.runtime.verdict import Verdict
from safesail_guard.server.backend import GuardBackend, check_prompt_tokens
from safesail_guard.server.errors import APIError, bad_request
from safesail_guard.server.jobs import Cancelled, ChatJob, ModelWorker, Outcome, StreamItem
from safesail_guard.server.upstream_release import (
    SCAN_MARGIN_TOKENS, ScanLimit, ScannedChoice, json_choice, released_delta, upstream_notes, worst_choice,
)
from safesail_guard.server.upstream_reply import (
    FINISH_REASONS, TOP_LEVEL_KEPT, UpstreamReply, error_message, is_empty, parse_choices, read_chunk,
    upstream_json, usage_counts,
)

if TYPE_CHECKING:
    from safesail_guard.runtime.result import GuardResult

T = TypeVar("T")

UPSTREAM_REFUSED = ("logprobs", "top_logprobs", "prompt_logprobs")
"""Request parameters refused in upstream mode: log-probabilities carry the reply's tokens again and the
alternatives the model did not pick, text the guard does not scan."""


REQUEST_TEXT_FIELDS = ("tools", "functions", "tool_choice", "function_call", "response_format", "prediction")
"""Request fields besides the messages whose text an upstream model reads."""
REQUEST_FIELDS_LABEL = "in the request's " + "/".join(REQUEST_TEXT_FIELDS)


def request_side_text(body: dict[str, Any]) -> str:
    """The text of `REQUEST_TEXT_FIELDS` present in ``body``, as compact JSON lines ('' when none has any)."""
    parts = []
    for name in REQUEST_TEXT_FIELDS:
        value = body.get(name)
        if not is_empty(value):
            parts.append(f"{name}: {json.dumps(value, ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(parts)


def check_upstream_support(job: ChatJob) -> None:
    """400 for what upstream mode cannot guard: log-probabilities (the reply's tokens again, and alternatives
    the model did not pick), audio output (not text), and several streamed choices (one scoring model watches one
    reply at a time)."""
    body = job.body
    for name in REQUEST_TEXT_FIELDS:  # scanned with the prompt (`request_side_text`): it must be readable text
        if not is_empty(body.get(name)):
            try:
                check_text(json.dumps(body[name], ensure_ascii=False), name)
            except ChatFormatError as e:
                raise bad_request(str(e), param=name) from None
    for name in UPSTREAM_REFUSED:
        if not is_empty(body.get(name)) and body.get(name) != 0:
            raise bad_request(f"{name}: not supported in upstream mode; log-probabilities carry text the guard does "
                              "not scan", param=name, code="unsupported_parameter")
    if not is_empty(body.get("audio")):
        raise bad_request("audio: audio output cannot be scanned by the guard", param="audio",
                          code="unsupported_parameter")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise bad_request("modalities: only text output can be scanned by the guard", param="modalities",
                          code="unsupported_parameter")
    n = body.get("n")
    if job.stream and isinstance(n, int) and n > 1:
        raise bad_request("n: a guarded stream carries one choice; use n=1 or stream=false", param="n",
                          code="unsupported_parameter")


class UpstreamBackend(GuardBackend):
    """Forward to another OpenAI-compatible server; guard prompt and response with the local scoring model.

    Every choice of the reply is scanned (its text fields and tool calls, see `UpstreamReply`); a block in any choice
    turns the whole reply into the refusal. Streams carry one choice (``n > 1`` with ``stream`` is refused with a
    400 naming ``n``: interleaved streamed choices would each need their own monitor and release bookkeeping,
    which is not implemented, and refusing is the fail-closed answer). Log-probabilities and audio are refused
    (text the guard does not scan); other fields the guard does not read are dropped and named in
    ``safesail.upstream.dropped``. A reply longer than the scoring model's context is cut there."""

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

    @property
    def context(self) -> int:
        """The scoring model's context (0 when it does not say)."""
        return int(getattr(self.guard.model.config, "max_position_embeddings", 0) or 0)

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

    def _scan_prompt(self, job: ChatJob) -> GuardResult:
        """Scan the messages, and the request's other client text the upstream model reads (tool and function
        definitions, a response_format schema, a predicted output) as one more plain text: its matches join the
        messages' decision and the higher risk wins."""
        res = self.guard.scan(job.messages, policy=self.guarded.policy, pivot=False)
        extra = request_side_text(job.body)
        if extra and res.decision is not None:
            sub = self.guard.scan(extra, policy=self.guarded.policy, pivot=False)
            if sub.decision is not None:
                res.decision = merge_normalized(res.decision, sub.decision, label=REQUEST_FIELDS_LABEL)
            if sub.risk is not None and (res.risk is None or sub.risk.score > res.risk.score):
                res.risk = sub.risk
        return res

    async def _prompt_verdict(self, job: ChatJob) -> Verdict:
        """Scan the prompt; when the policy asks for a pivot translation, scan that too: the stricter wins."""
        res = await self.worker.run(self._scan_prompt, job)
        pivot = await self._pivot(job.messages, res.decision)
        return Verdict("prompt", res.decision, res.risk, plain_prompt_text(job.messages), res.tokens, pivot)

    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Refuse what the guard cannot scan in the reply; count prompt tokens with the local tokenizer (the
        server's limit applies to what it scores, and the scoring model needs room for the reply)."""
        if job.steer:
            raise bad_request("safesail.steer: steering needs the model's hooks; this server runs in upstream mode",
                              param="safesail.steer")
        check_upstream_support(job)
        # counted only: the scans (`Guard.scan`, `ResponseMonitor`) tokenise the prompt with the reply they read
        n = len(await self.worker.run(self.encode_prompt, job.messages))
        check_prompt_tokens(n, max_prompt_tokens)
        if self.context and n + SCAN_MARGIN_TOKENS + 1 > self.context:
            raise bad_request(f"messages: the prompt has {n} tokens; the guard's scoring model reads at most "
                              f"{self.context} and needs room to scan the reply", param="messages",
                              code="context_length_exceeded")
        return n

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
            return upstream_json(r)

    async def _scan(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a scanning step on the model thread; a failure is a clear error (nothing unscanned goes out)."""
        try:
            return await self.worker.run(fn, *args)
        except (APIError, Cancelled):
            raise
        except Exception as e:  # noqa: BLE001 - any scan failure ends the reply with an error, never a pass
            raise APIError(500, f"the guard could not scan the reply ({type(e).__name__}: {e}); nothing unscanned "
                           "was released", code="scan_failed") from e

    # ------------------------------------------------------------------------------------------------ JSON
    async def complete(self, job: ChatJob) -> Outcome:
        """Scan the prompt, forward, scan every choice; a block anywhere replaces the reply with the refusal."""
        with job.stage("prompt_scoring"):
            pv = await self._prompt_verdict(job)
        if pv.action == "block":
            return Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv,
                           model=self.upstream_model or job.client_model)
        body = await asyncio.wait_for(self._post(job), timeout=self.timeout_s + 1)
        dropped: set[str] = set()
        choices = parse_choices(body, dropped)
        scans: list[ScannedChoice] = []
        with job.stage("response_scoring"):
            for reply, _ in choices:
                scans.append(await self._scan(self._scan_reply, job, reply))
                if scans[-1].blocked:
                    break  # the whole reply becomes the refusal: the other choices need no verdict
        worst = worst_choice(scans)
        final = worst.verdict
        final.pivot = pv.pivot
        usage = usage_counts(body.get("usage"))
        named = body.get("model")
        model = named if isinstance(named, str) else (self.upstream_model or job.client_model)
        out: dict[str, Any] = {k: v for k, v in body.items()
                               if k in TOP_LEVEL_KEPT and isinstance(v, (str, int, float))}
        dropped.update(f"body.{k}" for k, v in body.items()
                       if k not in (*out, "choices", "usage") and not is_empty(v))
        out.setdefault("object", "chat.completion")
        out["model"] = model
        if worst.blocked:
            content, finish = self._refusal(final), "content_filter"
            out["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                               "logprobs": None, "finish_reason": finish}]
        else:
            out["choices"] = [json_choice(i, s, fr, dropped) for i, (s, (_, fr)) in enumerate(zip(scans, choices))]
            first = out["choices"][0]
            content, finish = first["message"].get("content") or "", first["finish_reason"]
        if usage:
            out["usage"] = usage
        notes = upstream_notes(scans, dropped, many=len(choices) > 1)
        return Outcome(content, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                       pv, final, guard_seconds=sum(s.guard_seconds for s in scans),
                       tokens=final.shown_tokens() if job.want_tokens else None, upstream_body=out, model=model,
                       upstream=notes)

    def _scan_reply(self, job: ChatJob, reply: UpstreamReply) -> ScannedChoice:
        """Scan one whole choice (model thread)."""
        from safesail_guard.runtime.monitor import ResponseMonitor

        with ResponseMonitor(self.guard, job.messages, policy=self.guarded.policy) as mon:
            limit = ScanLimit(mon, self.guard.tokenizer, self.context)
            step = limit.feed(reply.text)
            released, blocked = len(step.text), step.blocked
            if not blocked:
                step = limit.finish()
                released, blocked = released + len(step.text), step.blocked
            toks = list(mon.session.tokens)
            verdict = self.verdict("final", mon.decision(), toks, reply.text)
            return ScannedChoice(reply, verdict, released, blocked, limit.truncated, mon.guard_seconds)

    # ---------------------------------------------------------------------------------------------- stream
    async def stream(self, job: ChatJob) -> AsyncGenerator[StreamItem, None]:
        """Scan the prompt, stream upstream, release reply text only after the guard passed it (tool calls once
        all of them passed)."""
        import httpx

        from safesail_guard.runtime.monitor import ResponseMonitor

        with job.stage("prompt_scoring"):
            pv = await self._prompt_verdict(job)
        model = self.upstream_model or job.client_model
        if pv.action == "block":
            yield "done", Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv, model=model)
            return
        yield "prompt", pv
        mon = await self._scan(partial(ResponseMonitor, self.guard, job.messages, policy=self.guarded.policy))
        limit = ScanLimit(mon, self.guard.tokenizer, self.context)
        reply = UpstreamReply()
        dropped: set[str] = set()
        finish: str | None = None
        usage: dict[str, Any] = {}
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
                    upstream_json(r)  # raises the mapped error
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
                        raise APIError(502, f"the upstream server failed mid-stream: {error_message(chunk)}",
                                       code="upstream_error")
                    feed, fr = read_chunk(chunk, reply, dropped)
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        usage = usage_counts(chunk["usage"])
                    finish = fr or finish
                    if feed:
                        step = await self._scan(limit.feed, feed)
                        delta = released_delta(reply, step.text)
                        if delta:
                            yield "delta", delta
                        if step.blocked or limit.truncated:
                            blocked = step.blocked
                            break
            if not blocked and not limit.truncated:
                step = await self._scan(limit.finish)
                delta = released_delta(reply, step.text)
                if delta:
                    yield "delta", delta
                blocked = step.blocked
            if not blocked:
                calls, fc, cut = reply.tool_calls(reply.emitted, stream=True)
                if cut:
                    dropped.add("tool_calls (cut at the scoring model's context)")
                if calls:
                    yield "delta", {"tool_calls": calls}
                if fc is not None:
                    yield "delta", {"function_call": fc}
            toks = list(mon.session.tokens)
            final = await self.worker.run(self.verdict, "final", mon.decision(), toks, reply.text, pv.pivot)
            guard_s = mon.guard_seconds
        except httpx.HTTPError as e:
            if job.trace is not None:
                job.trace.upstream_response(error_type=type(e).__name__)
            raise self._upstream_error(e) from None
        finally:
            call.__exit__(None, None, None)
            await self.worker.run(mon.close)
        scanned = ScannedChoice(reply, final, reply.emitted, blocked, limit.truncated, guard_s)
        if blocked:
            content, fin = self._refusal(final), "content_filter"
        else:
            content = reply.fields(0, reply.emitted).get("content", "")
            fin = "length" if limit.truncated else (finish if finish in FINISH_REASONS else "stop")
        yield "done", Outcome(content, fin, int(usage.get("prompt_tokens") or 0),
                              int(usage.get("completion_tokens") or 0), pv, final, guard_seconds=guard_s, model=model,
                              tokens=final.shown_tokens() if job.want_tokens else None,
                              upstream=upstream_notes([scanned], dropped, many=False))


__all__ = ["REQUEST_TEXT_FIELDS", "UPSTREAM_REFUSED", "UpstreamBackend", "check_upstream_support",
           "request_side_text"]
