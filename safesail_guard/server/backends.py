"""What answers a chat: `LocalBackend` (the guarded model itself) and `UpstreamBackend` (another server, guarded
by the local scoring model).

All model work - tokenizing, scanning, generating - runs on one worker thread (`ModelWorker`): the guard's hooks
are attached to the one shared model for the length of a sequence, and HF fast tokenizers must not be used from
two threads at once. The event loop stays free for I/O; `limits.Admission` decides who waits and who gets 429.

A backend turns a `ChatJob` into `Outcome`s. Streaming yields `("prompt", Verdict)` once the prompt passed the
policy (before any text), then `("delta", text)` pieces (upstream mode: `("delta", {field: text, ...})` for the
reply's text fields, and tool calls whole once they passed), then `("done", Outcome)`.
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

from safesail_guard.chat import ChatFormatError, check_text
from safesail_guard.runtime.events import TokenActivations
from safesail_guard.runtime.generation import ActiveSteer, GuardedModel
from safesail_guard.runtime.guard import Guard, GuardError, _plain_prompt_text, _prompt_text, merge_normalized
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
    upstream_body: dict[str, Any] | None = None  # upstream mode, JSON: the whole reply as released (scanned)
    model: str = ""
    upstream: dict[str, Any] | None = None  # upstream mode: per-choice verdicts, dropped fields, truncation


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
             text: str, pivot: Any = None) -> Verdict:
    risk = guard.risk_head.score(tokens, scopes=scopes) if guard.risk_head is not None else None
    return Verdict(stage, decision, risk, text, tokens, pivot)


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
        try:
            enc, _ = self.guard.encode_prompt(messages)
        except ChatFormatError as e:  # e.g. a message the chat template drops: refused, never passed unread
            raise bad_request(str(e), param=e.param or "messages") from None
        return len(enc)

    async def score(self, prompts: list[Any]) -> list[Any]:
        """Scan prompts in batches on the model thread, under the server's policy."""
        return await self.worker.run(self.guard.scan_batch, prompts, policy=self.guarded.policy)

    def _start_decision(self, messages: list[dict[str, str]]) -> Any:
        """The policy's decision before any token is read (language rules: does it ask for a pivot?)."""
        pol = self.guarded.policy
        if pol is None:
            return None
        try:
            return pol.start(prompt_text=_prompt_text(messages)).snapshot()
        except GuardError as e:
            raise bad_request(str(e), param="messages") from None

    async def _pivot(self, messages: list[dict[str, str]], decision: Any) -> Any:
        """When ``decision`` asks for a pivot translation (a ``multilingual_gap`` rule with ``pivot:``), translate
        the prompt (off the model thread: it is a network call) and scan the translation with the same policy on
        the model thread; the `PivotOutcome`, or None when none was asked for. A failed translation is recorded
        in the outcome and the original decision stands (`runtime/pivot.py`)."""
        if decision is None or not decision.pivot_requested or decision.pivot is None:
            return None
        from safesail_guard.runtime.pivot import PivotOutcome, translate

        text, model, error = await asyncio.to_thread(translate, _plain_prompt_text(messages), decision.pivot)
        if text is None:
            return PivotOutcome(None, None, None, model, error)
        sub = await self.worker.run(self.guard.scan, text, policy=self.guarded.policy, pivot=False)
        return PivotOutcome(text, sub.decision, sub.risk, model)

    @staticmethod
    def _refusal(verdict: Verdict) -> str:
        return verdict.refusal or "I can't help with that."


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

    def _run(self, job: ChatJob, emit: Callable[[StreamItem], None], pivot: Any = None) -> Outcome:
        """The whole generation on the model thread; ``emit`` receives stream items as they happen. ``pivot``
        (the prompt's scanned translation, which did not block) joins the prompt and final verdicts."""
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
                                              user_text, pivot)
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
            return self._stopped(job, pieces, prompt_verdict, user_text, pivot)
        tail = stop.flush()
        if tail and gen.finish_reason != "content_filter":
            pieces.append(tail)
            emit(("delta", tail))
        toks = gen.tokens
        if prompt_verdict is None:  # blocked while reading the prompt: the prompt stage is the block
            prompt_verdict = _verdict(self.guard, "prompt", gen.decision, toks, ("prompt",), user_text, pivot)
        final = _verdict(self.guard, "final", gen.decision, toks, ("response",), gen.completion, pivot)
        content = gen.text if gen.finish_reason == "content_filter" else "".join(pieces)
        return Outcome(content, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens, prompt_verdict, final,
                       [s.__dict__ for s in gen.steering], toks if job.want_tokens else None, gen.guard_seconds,
                       model=self.model_id)

    def _stopped(self, job: ChatJob, pieces: list[str], prompt_verdict: Verdict | None, user_text: str,
                 pivot: Any = None) -> Outcome:
        """A stop sequence ended the generation: judge what was released (re-scan prompt + text). The re-scan
        reads the text cut at the stop sequence, whose last token can differ from the one generated; when it
        blocks, the answer is the refusal (in a stream, after the text already sent, as for any block)."""
        text = "".join(pieces)
        res = self.guard.scan(job.messages, policy=self.guarded.policy, response=text, pivot=False)
        final = _verdict(self.guard, "final", res.decision, res.tokens, ("response",), text, pivot)
        n_prompt = sum(1 for t in res.tokens if t.scope == "prompt")
        pv = prompt_verdict or _verdict(self.guard, "prompt", res.decision, res.tokens, ("prompt",), user_text,
                                        pivot)
        content, finish = text, "stop"
        if final.action == "block":
            content, finish = self._refusal(final), "content_filter"
        return Outcome(content, finish, n_prompt, len(res.tokens) - n_prompt, pv, final,
                       tokens=res.tokens if job.want_tokens else None, model=self.model_id)

    def _pivot_refusal(self, job: ChatJob, pivot: Any) -> Outcome:
        """The prompt's pivot translation blocked: refuse before generating (the prompt itself is scanned for
        the verdict's evidence)."""
        res = self.guard.scan(job.messages, policy=self.guarded.policy, pivot=False)
        pv = _verdict(self.guard, "prompt", res.decision, res.tokens, ("prompt",), _last_user(job.messages), pivot)
        return Outcome(self._refusal(pv), "content_filter", len(res.tokens), 0, pv, pv,
                       tokens=res.tokens if job.want_tokens else None, model=self.model_id)

    async def _local_pivot(self, job: ChatJob) -> tuple[Any, Outcome | None]:
        """The pivot translation the policy asks for (None when it does not), and the refusal when it blocks."""
        pivot = await self._pivot(job.messages, self._start_decision(job.messages))
        if pivot is not None and pivot.decision is not None and pivot.decision.action == "block":
            return pivot, await self.worker.run(self._pivot_refusal, job, pivot)
        return pivot, None

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
        pivot, refused = await self._local_pivot(job)
        if refused is not None:
            return refused
        return await self.worker.run(self._run, job, lambda _item: None, pivot)

    async def stream(self, job: ChatJob) -> AsyncIterator[StreamItem]:
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


def check_prompt_tokens(n: int, limit: int) -> None:
    """400 when the prompt is longer than the server allows."""
    if n > limit:
        raise bad_request(f"messages: the prompt has {n} tokens after the chat template; this server accepts at "
                          f"most {limit}", param="messages", code="context_length_exceeded")


# ------------------------------------------------------------------------------------------------ upstream

TEXT_FIELDS = ("reasoning_content", "reasoning", "content", "refusal")
"""Text fields of an upstream message (or stream delta) that the guard scans and passes on, in scan order."""
MESSAGE_META = ("role", "tool_call_id", "name")
"""Message fields that carry no model text (neither scanned nor passed on, nor reported as dropped)."""
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
TOP_LEVEL_KEPT = ("id", "object", "created", "model", "system_fingerprint", "service_tier")
"""Top-level fields of an upstream completion passed to the client (scalars only); ``choices`` and ``usage`` are
rebuilt, anything else is dropped and named in ``safesail.upstream.dropped``."""
SCAN_MARGIN_TOKENS = 8
"""Scoring-model positions kept free below its context when cutting a long reply (word-by-word tokenization
in the monitor can differ from tokenizing the whole text by a token or two)."""
UPSTREAM_REFUSED = ("logprobs", "top_logprobs", "prompt_logprobs")
"""Request parameters refused in upstream mode: log-probabilities carry the reply's tokens again and the
alternatives the model did not pick, text the guard does not scan."""


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", [], {})


class _Reply:
    """One choice of an upstream reply as the guard reads it.

    Everything in the choice that reaches the client as text - the message's text fields (`TEXT_FIELDS`) and
    every tool call's name and arguments (and a legacy ``function_call``) - is appended, in arrival order, to one
    text that one `ResponseMonitor` scans (a newline between different fields). ``spans`` remember which field
    each character belongs to, so the monitor's released prefix maps back to fields: text fields are released
    as they pass, a tool call only once all of it passed."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[tuple[int, int, tuple[Any, ...]]] = []  # [start, end) in text, field key
        self.present: set[str] = set()  # text fields the upstream sent (even empty)
        self.tools: dict[int, dict[str, str]] = {}  # tool call index -> id, type, name, arguments
        self.function_call: dict[str, str] | None = None
        self.emitted = 0  # characters of text already handed out (streaming)

    def add(self, key: tuple[Any, ...], piece: str) -> str:
        """Append ``piece`` of field ``key``; returns what to feed the monitor (the piece, after a separator
        when the field changed)."""
        if not piece:
            return ""
        sep = "\n" if self.spans and self.spans[-1][2] != key else ""
        start = len(self.text) + len(sep)
        if not sep and self.spans:
            s0, _, k = self.spans[-1]
            self.spans[-1] = (s0, start + len(piece), k)
        else:
            self.spans.append((start, start + len(piece), key))
        self.text += sep + piece
        return sep + piece

    def add_text(self, name: str, value: Any, where: str) -> str:
        if value is None:
            return ""
        if name == "content" and isinstance(value, list):
            value = _parts_text(value, where)
        if not isinstance(value, str):
            raise _bad_upstream(f"{where}.{name} is not text")
        self.present.add(name)
        return self.add(("text", name), value)

    def add_tool(self, index: int, call: Any, where: str) -> str:
        """A tool call, or (streaming) a piece of one: name and arguments are scanned."""
        if not isinstance(call, dict):
            raise _bad_upstream(f"{where} is not an object")
        kind = call.get("type") or "function"
        fn = call.get("function")
        if kind != "function" or not isinstance(fn if fn is not None else {}, dict):
            raise _bad_upstream(f"{where} is a {kind!r} tool call, which the guard cannot scan")
        cur = self.tools.setdefault(index, {"id": "", "type": "function", "name": "", "arguments": ""})
        if isinstance(call.get("id"), str) and call["id"]:
            cur["id"] = call["id"]
        feed = ""
        for part in ("name", "arguments"):
            v = (fn or {}).get(part)
            if v is None:
                continue
            if not isinstance(v, str):
                raise _bad_upstream(f"{where}.function.{part} is not text")
            cur[part] += v
            feed += self.add(("tool", index, part), v)
        return feed

    def add_function_call(self, fc: Any, where: str) -> str:
        if fc is None:
            return ""
        if not isinstance(fc, dict):
            raise _bad_upstream(f"{where} is not an object")
        cur = self.function_call = self.function_call or {"name": "", "arguments": ""}
        feed = ""
        for part in ("name", "arguments"):
            v = fc.get(part)
            if v is None:
                continue
            if not isinstance(v, str):
                raise _bad_upstream(f"{where}.{part} is not text")
            cur[part] += v
            feed += self.add(("function_call", part), v)
        return feed

    def add_delta(self, delta: dict[str, Any], where: str, dropped: set[str], *, message: bool) -> str:
        """Read a message (JSON) or a stream delta; returns the text to feed the monitor."""
        feed = ""
        for name in TEXT_FIELDS:
            feed += self.add_text(name, delta.get(name), where)
        calls = delta.get("tool_calls")
        if not _empty(calls):
            if not isinstance(calls, list):
                raise _bad_upstream(f"{where}.tool_calls is not a list")
            for i, call in enumerate(calls):
                index = i if message else (call.get("index", i) if isinstance(call, dict) else i)
                if not isinstance(index, int):
                    raise _bad_upstream(f"{where}.tool_calls[{i}].index is not an integer")
                feed += self.add_tool(index, call, f"{where}.tool_calls[{i}]")
        feed += self.add_function_call(delta.get("function_call"), f"{where}.function_call")
        if not _empty(delta.get("audio")):
            raise _bad_upstream(f"{where}.audio: the upstream sent audio, which the guard cannot scan")
        for k, v in delta.items():
            if k not in (*TEXT_FIELDS, *MESSAGE_META, "tool_calls", "function_call", "audio") and not _empty(v):
                dropped.add(f"{'message' if message else 'delta'}.{k}")
        return feed

    def fields(self, start: int, end: int) -> dict[str, str]:
        """The text fields' characters in [start, end) of the scanned text (separators and tool calls left
        out), by field."""
        out: dict[str, str] = {}
        for s0, e0, key in self.spans:
            a, b = max(s0, start), min(e0, end)
            if key[0] == "text" and a < b:
                out[key[1]] = out.get(key[1], "") + self.text[a:b]
        return out

    def tool_calls(self, end: int, *, stream: bool) -> tuple[list[dict[str, Any]], dict[str, str] | None, bool]:
        """Tool calls (and a legacy function call) all of whose scanned text lies in [0, end), and whether one
        was left out because it did not."""
        last: dict[Any, int] = {}
        for _, e0, key in self.spans:
            if key[0] in ("tool", "function_call"):
                k = key[1] if key[0] == "tool" else "fc"
                last[k] = max(last.get(k, 0), e0)
        calls, cut = [], False
        for index in sorted(self.tools):
            if last.get(index, 0) > end:
                cut = True
                continue
            t = self.tools[index]
            call = {"id": t["id"] or f"call_{index}", "type": "function",
                    "function": {"name": t["name"], "arguments": t["arguments"]}}
            calls.append({"index": index, **call} if stream else call)
        fc = self.function_call
        if fc is not None and last.get("fc", 0) > end:
            fc, cut = None, True
        return calls, fc, cut


def _parts_text(parts: list[Any], where: str) -> str:
    out = []
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise _bad_upstream(f"{where}.content[{j}] is not a text part; the guard scans text only")
        out.append(p["text"])
    return "".join(out)


def _bad_upstream(what: str) -> APIError:
    return APIError(502, f"the upstream response cannot be scanned: {what}", code="upstream_bad_response")


class _ScanLimit:
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
class _Scanned:
    """One scanned choice."""

    reply: _Reply
    verdict: Verdict
    released: int  # characters of reply.text that passed
    blocked: bool
    truncated: bool
    guard_seconds: float


class UpstreamBackend(_GuardBackend):
    """Forward to another OpenAI-compatible server; guard prompt and response with the local scoring model.

    Every choice of the reply is scanned (its text fields and tool calls, see `_Reply`); a block in any choice
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

    def _scan_prompt(self, job: ChatJob) -> Any:
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
        return Verdict("prompt", res.decision, res.risk, _last_user(job.messages), res.tokens, pivot)

    async def prepare(self, job: ChatJob, max_prompt_tokens: int) -> int:
        """Refuse what the guard cannot scan in the reply; count prompt tokens with the local tokenizer (the
        server's limit applies to what it scores, and the scoring model needs room for the reply)."""
        if job.steer:
            raise bad_request("safesail.steer: steering needs the model's hooks; this server runs in upstream mode",
                              param="safesail.steer")
        check_upstream_support(job)
        n = await self.worker.run(self.count_prompt_tokens, job.messages)
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
            return _upstream_json(r)

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
        with _stage(job, "prompt_scoring"):
            pv = await self._prompt_verdict(job)
        if pv.action == "block":
            return Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv,
                           model=self.upstream_model or job.client_model)
        body = await asyncio.wait_for(self._post(job), timeout=self.timeout_s + 1)
        dropped: set[str] = set()
        choices = _parse_choices(body, dropped)
        scans: list[_Scanned] = []
        with _stage(job, "response_scoring"):
            for reply, _ in choices:
                scans.append(await self._scan(self._scan_reply, job, reply))
                if scans[-1].blocked:
                    break  # the whole reply becomes the refusal: the other choices need no verdict
        worst = _worst(scans)
        final = worst.verdict
        final.pivot = pv.pivot
        usage = _usage(body.get("usage"))
        model = body.get("model") if isinstance(body.get("model"), str) else (self.upstream_model or job.client_model)
        out = {k: v for k, v in body.items() if k in TOP_LEVEL_KEPT and isinstance(v, (str, int, float))}
        dropped.update(f"body.{k}" for k, v in body.items()
                       if k not in (*out, "choices", "usage") and not _empty(v))
        out.setdefault("object", "chat.completion")
        out["model"] = model
        if worst.blocked:
            content, finish = self._refusal(final), "content_filter"
            out["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                               "logprobs": None, "finish_reason": finish}]
        else:
            out["choices"] = [_json_choice(i, s, fr, dropped) for i, (s, (_, fr)) in enumerate(zip(scans, choices))]
            first = out["choices"][0]
            content, finish = first["message"].get("content") or "", first["finish_reason"]
        if usage:
            out["usage"] = usage
        notes = _notes(scans, dropped, many=len(choices) > 1)
        return Outcome(content, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                       pv, final, guard_seconds=sum(s.guard_seconds for s in scans),
                       tokens=_shown_tokens(final) if job.want_tokens else None, upstream_body=out, model=model,
                       upstream=notes)

    def _scan_reply(self, job: ChatJob, reply: _Reply) -> _Scanned:
        """Scan one whole choice (model thread)."""
        from safesail_guard.runtime.monitor import ResponseMonitor

        with ResponseMonitor(self.guard, job.messages, policy=self.guarded.policy) as mon:
            limit = _ScanLimit(mon, self.guard.tokenizer, self.context)
            step = limit.feed(reply.text)
            released, blocked = len(step.text), step.blocked
            if not blocked:
                step = limit.finish()
                released, blocked = released + len(step.text), step.blocked
            toks = list(mon.session.tokens)
            verdict = _verdict(self.guard, "final", mon.decision(), toks, ("response",), reply.text)
            return _Scanned(reply, verdict, released, blocked, limit.truncated, mon.guard_seconds)

    # ---------------------------------------------------------------------------------------------- stream
    async def stream(self, job: ChatJob) -> AsyncIterator[StreamItem]:
        """Scan the prompt, stream upstream, release reply text only after the guard passed it (tool calls once
        all of them passed)."""
        import httpx

        from safesail_guard.runtime.monitor import ResponseMonitor

        with _stage(job, "prompt_scoring"):
            pv = await self._prompt_verdict(job)
        model = self.upstream_model or job.client_model
        if pv.action == "block":
            yield "done", Outcome(self._refusal(pv), "content_filter", len(pv.tokens), 0, pv, pv, model=model)
            return
        yield "prompt", pv
        mon = await self._scan(partial(ResponseMonitor, self.guard, job.messages, policy=self.guarded.policy))
        limit = _ScanLimit(mon, self.guard.tokenizer, self.context)
        reply = _Reply()
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
                    feed, fr = _read_chunk(chunk, reply, dropped)
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        usage = _usage(chunk["usage"])
                    finish = fr or finish
                    if feed:
                        step = await self._scan(limit.feed, feed)
                        delta = _released(reply, step.text)
                        if delta:
                            yield "delta", delta
                        if step.blocked or limit.truncated:
                            blocked = step.blocked
                            break
            if not blocked and not limit.truncated:
                step = await self._scan(limit.finish)
                delta = _released(reply, step.text)
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
            final = await self.worker.run(_verdict, self.guard, "final", mon.decision(), toks, ("response",),
                                          reply.text, pv.pivot)
            guard_s = mon.guard_seconds
        except httpx.HTTPError as e:
            if job.trace is not None:
                job.trace.upstream_response(error_type=type(e).__name__)
            raise self._upstream_error(e) from None
        finally:
            call.__exit__(None, None, None)
            await self.worker.run(mon.close)
        scanned = _Scanned(reply, final, reply.emitted, blocked, limit.truncated, guard_s)
        if blocked:
            content, fin = self._refusal(final), "content_filter"
        else:
            content = reply.fields(0, reply.emitted).get("content", "")
            fin = "length" if limit.truncated else (finish if finish in FINISH_REASONS else "stop")
        yield "done", Outcome(content, fin, int(usage.get("prompt_tokens") or 0),
                              int(usage.get("completion_tokens") or 0), pv, final, guard_seconds=guard_s, model=model,
                              tokens=_shown_tokens(final) if job.want_tokens else None,
                              upstream=_notes([scanned], dropped, many=False))


REQUEST_TEXT_FIELDS = ("tools", "functions", "tool_choice", "function_call", "response_format", "prediction")
"""Request fields besides the messages whose text an upstream model reads."""
REQUEST_FIELDS_LABEL = "in the request's " + "/".join(REQUEST_TEXT_FIELDS)


def request_side_text(body: dict[str, Any]) -> str:
    """The text of `REQUEST_TEXT_FIELDS` present in ``body``, as compact JSON lines ('' when none has any)."""
    parts = []
    for name in REQUEST_TEXT_FIELDS:
        value = body.get(name)
        if not _empty(value):
            parts.append(f"{name}: {json.dumps(value, ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(parts)


def check_upstream_support(job: ChatJob) -> None:
    """400 for what upstream mode cannot guard: log-probabilities (the reply's tokens again, and alternatives
    the model did not pick), audio output (not text), and several streamed choices (one scoring model watches one
    reply at a time)."""
    body = job.body
    for name in REQUEST_TEXT_FIELDS:  # scanned with the prompt (`request_side_text`): it must be readable text
        if not _empty(body.get(name)):
            try:
                check_text(json.dumps(body[name], ensure_ascii=False), name)
            except ChatFormatError as e:
                raise bad_request(str(e), param=name) from None
    for name in UPSTREAM_REFUSED:
        if not _empty(body.get(name)) and body.get(name) != 0:
            raise bad_request(f"{name}: not supported in upstream mode; log-probabilities carry text the guard does "
                              "not scan", param=name, code="unsupported_parameter")
    if not _empty(body.get("audio")):
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


def _parse_choices(body: dict[str, Any], dropped: set[str]) -> list[tuple[_Reply, str]]:
    """Every choice of a completion read into a `_Reply` with its finish reason, in index order."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise APIError(502, "the upstream response has no choices", code="upstream_bad_response")
    out: list[tuple[int, _Reply, str]] = []
    for i, ch in enumerate(choices):
        where = f"choices[{i}]"
        if not isinstance(ch, dict) or not isinstance(ch.get("message"), dict):
            raise _bad_upstream(f"{where} has no message object")
        reply = _Reply()
        reply.add_delta(ch["message"], f"{where}.message", dropped, message=True)
        for k, v in ch.items():
            if k not in ("index", "message", "finish_reason") and not _empty(v):
                dropped.add(f"choices.{k}")
        fr = ch.get("finish_reason")
        index = ch.get("index", i)
        out.append((index if isinstance(index, int) else i, reply, fr if fr in FINISH_REASONS else "stop"))
    out.sort(key=lambda t: t[0])
    return [(r, fr) for _, r, fr in out]


def _json_choice(index: int, s: _Scanned, finish: str, dropped: set[str]) -> dict[str, Any]:
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


def _read_chunk(chunk: Any, reply: _Reply, dropped: set[str]) -> tuple[str, str | None]:
    """One stream chunk: its choice's fields go into ``reply``; returns the text to feed and the finish reason."""
    if not isinstance(chunk, dict):
        return "", None
    choices = chunk.get("choices")
    if _empty(choices):
        return "", None
    if not isinstance(choices, list):
        raise _bad_upstream("a stream chunk's choices is not a list")
    feed, finish = "", None
    for ch in choices:
        if not isinstance(ch, dict):
            raise _bad_upstream("a stream chunk's choice is not an object")
        if ch.get("index", 0) != 0:
            raise _bad_upstream(f"the stream carries choice {ch.get('index')!r}; the guard streams one choice")
        delta = ch.get("delta")
        if delta is not None and not isinstance(delta, dict):
            raise _bad_upstream("a stream chunk's delta is not an object")
        feed += reply.add_delta(delta or {}, "delta", dropped, message=False)
        for k, v in ch.items():
            if k not in ("index", "delta", "finish_reason") and not _empty(v):
                dropped.add(f"choices.{k}")
        fr = ch.get("finish_reason")
        finish = fr if isinstance(fr, str) else finish
    return feed, finish


def _released(reply: _Reply, text: str) -> dict[str, str]:
    """The delta for ``text``, the next characters of the reply the monitor released (text fields only; tool
    calls go out whole at the end)."""
    start, reply.emitted = reply.emitted, reply.emitted + len(text)
    return reply.fields(start, reply.emitted)


def _worst(scans: list[_Scanned]) -> _Scanned:
    """The choice whose verdict stands for the reply: the first block, else the most severe."""
    from safesail_guard.policy import SEVERITY

    return max(scans, key=lambda s: (s.blocked, SEVERITY[s.verdict.action]))


def _notes(scans: list[_Scanned], dropped: set[str], *, many: bool) -> dict[str, Any]:
    notes: dict[str, Any] = {}
    if many:
        notes["choices"] = [{"index": i, "decision": s.verdict.action, "rules": s.verdict.rules,
                             "score": s.verdict.score, "truncated": s.truncated} for i, s in enumerate(scans)]
    if dropped:
        notes["dropped"] = sorted(dropped)
    if any(s.truncated for s in scans):
        notes["truncated"] = "the reply was cut where the guard's scoring model's context ends"
    return notes


def _usage(usage: Any) -> dict[str, Any]:
    """Token counts only (numbers, in nested objects too)."""
    if not isinstance(usage, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in usage.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, dict):
            out[k] = _usage(v)
    return out


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
