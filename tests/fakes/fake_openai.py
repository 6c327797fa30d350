"""A scriptable fake of an OpenAI-compatible ``/v1/chat/completions`` server for tests.

Runs ``http.server.ThreadingHTTPServer`` on 127.0.0.1 with an OS-chosen port in a daemon thread. Each request
is answered by the next scripted :class:`Reply` (see :meth:`FakeOpenAIServer.script`), or, when the script is
empty, by ``server.responder(request_json)`` (default: echo the last user message). The server records every
request (path, headers, JSON body) and the most requests it ever had in flight at once.

Usage::

    with FakeOpenAIServer() as server:
        server.script(Reply(status=429, headers={"Retry-After": "0"}), Reply(json=chat_body("hi")))
        client = LLMClient(LLMClientConfig(base_url=server.base_url, model="m"))
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted HTTP reply: ``json`` (or ``raw`` bytes) with ``status`` after waiting ``delay_s``."""

    status: int = 200
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    sse: list[Any] | None = None  # a streamed reply: each item is one ``data:`` event (a dict, or "[DONE]")
    sse_gap_s: float = 0.0  # pause between streamed events


@dataclass
class RecordedRequest:
    """What the client sent: path, headers (lower-cased names) and the parsed JSON body (None if not JSON)."""

    path: str
    headers: dict[str, str]
    body: Any


def chat_body(
    text: str,
    *,
    model: str = "fake-model",
    usage: bool = True,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A ``chat.completion`` response body in the OpenAI shape."""
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


def _chunk(delta: dict[str, Any], fr: str | None = None, model: str = "fake-model") -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": fr}]}


def stream_events(pieces: list[str], *, model: str = "fake-model", finish_reason: str = "stop",
                  field: str = "content") -> list[Any]:
    """``chat.completion.chunk`` events streaming ``pieces`` (in the delta's ``field``: ``content``, or e.g.
    ``refusal`` / ``reasoning_content``), a finish chunk, and ``[DONE]``."""
    return [_chunk({"role": "assistant", "content": ""}, model=model),
            *(_chunk({field: p}, model=model) for p in pieces), _chunk({}, finish_reason, model), "[DONE]"]


def tool_call_events(name: str, arguments: list[str], *, content: str | None = None, call_id: str = "call_1",
                     model: str = "fake-model") -> list[Any]:
    """A streamed tool call as OpenAI sends it: optional ``content`` first, then one chunk with the call's id and
    name, then its ``arguments`` in pieces, and ``finish_reason`` ``tool_calls``."""
    head = [_chunk({"role": "assistant", "content": content}, model=model)]
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return [*head, _chunk({"tool_calls": [first]}, model=model),
            *(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}, model=model) for a in arguments),
            _chunk({}, "tool_calls", model), "[DONE]"]


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    """The OpenAI error body ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def last_user_text(request: Any) -> str:
    """Content of the last user message in a chat request body ('' if none)."""
    for message in reversed((request or {}).get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def echo_responder(request: Any) -> Reply:
    """Default responder: reply ``echo: <last user message>`` with usage."""
    return Reply(json=chat_body(f"echo: {last_user_text(request)}"))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return None

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake._enter(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        left = False
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                reply = Reply(status=404, json=error_body(f"no route {self.path}", "not_found"))
            else:
                reply = fake._next_reply(body)
            if reply.delay_s and fake._stopping.wait(reply.delay_s):
                return  # server is shutting down: drop the request
            if reply.sse is not None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for item in reply.sse:
                    data = item if isinstance(item, str) else json.dumps(item)
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()
                    if reply.sse_gap_s and fake._stopping.wait(reply.sse_gap_s):
                        return
                self.close_connection = True
                return
            payload = reply.raw if reply.raw is not None else json.dumps(reply.json).encode("utf-8")
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            # leave before the last bytes go out: once the client has its reply it may start the next request,
            # which must not find this one still counted as in flight
            left = True
            fake._leave()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            if not left:
                fake._leave()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer


class FakeOpenAIServer:
    """Scriptable fake chat-completions server on 127.0.0.1 (context manager; port chosen by the OS)."""

    def __init__(self, responder: Callable[[Any], Reply] | None = None) -> None:
        self.responder: Callable[[Any], Reply] = responder or echo_responder
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """API root to give the client, e.g. ``http://127.0.0.1:54321/v1``."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then the responder answers."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self, body: Any) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.responder(body)

    def _enter(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def start(self) -> FakeOpenAIServer:
        """Bind 127.0.0.1:0 and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging handlers, stop serving and close the socket."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
