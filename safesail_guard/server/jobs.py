"""The records one chat request travels in, and the thread that runs its model work.

`ChatJob` is a parsed chat request ready for a backend (built by `server/chat_request.py`); `Outcome` is what a
backend hands back (`server/local_backend.py`, `server/upstream_backend.py`); `CancelToken` stops a generation
between decoded tokens when the client goes away or the deadline passes (`Cancelled`).

All model work - tokenizing, scanning, generating - runs on one `ModelWorker` thread: the guard's hooks are
attached to the one shared model for the length of a sequence, and HF fast tokenizers must not be used from two
threads at once. The event loop stays free for I/O; `limits.Admission` decides who waits and who gets 429.

A backend's stream yields `StreamItem`s: ``("prompt", Verdict)`` once the prompt passed the policy (before any
text), then ``("delta", text)`` pieces (upstream mode: ``("delta", {field: text, ...})`` for the reply's text
fields, and tool calls whole once they passed), then ``("done", Outcome)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from safesail_guard.events import TokenActivations
from safesail_guard.runtime.verdict import Verdict

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from safesail_guard.chat_template import EncodedText
    from safesail_guard.server.openai_schema import SteerRequest
    from safesail_guard.telemetry import RequestTrace

T = TypeVar("T")
StreamItem = tuple[str, Any]
"""``(kind, value)``: ``("prompt", Verdict)``, ``("delta", str | dict)``, ``("done", Outcome)``."""


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
    messages: list[dict[str, str]]  # validated once (`openai_schema.plain_messages`): every role, text only
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    steer: list[SteerRequest]
    want_tokens: bool
    body: dict[str, Any]  # the request JSON as received (upstream mode forwards it)
    client_model: str
    cancel: CancelToken
    stream: bool = False
    ignored: list[str] = field(default_factory=list)  # local mode: request fields the model does not use
    trace: RequestTrace | None = None  # the request's trace (upstream calls become its CLIENT child spans)
    encoded: EncodedText | None = None  # local mode: the prompt's tokens, encoded once by `prepare`

    def stage(self, name: str) -> AbstractContextManager[Any]:
        """A telemetry stage span of the job's request (a no-op without telemetry)."""
        return self.trace.stage(name) if self.trace is not None else contextlib.nullcontext()


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


__all__ = ["CancelToken", "Cancelled", "ChatJob", "ModelWorker", "Outcome", "StreamItem"]
