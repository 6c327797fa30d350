"""An upstream chat completion as the guard reads it: every choice's text fields and tool calls, in one text.

`UpstreamReply` collects one choice - a whole message (JSON reply, `parse_choices`) or stream deltas
(`read_chunk`) - into the single text one `ResponseMonitor` scans, remembering which field each character came
from so that what the monitor releases maps back to fields (`server/upstream_release.py`). Anything the guard
cannot scan (audio, non-function tool calls, non-text content parts) is a 502 (`bad_upstream`); fields it does
not read are collected in ``dropped`` and named to the client. `upstream_json` maps an upstream HTTP error to
ours. `server/upstream_backend.py` drives all of this.
"""

from __future__ import annotations

import json
from typing import Any

from safesail_guard.server.errors import APIError

TEXT_FIELDS = ("reasoning_content", "reasoning", "content", "refusal")
"""Text fields of an upstream message (or stream delta) that the guard scans and passes on, in scan order."""
MESSAGE_META = ("role", "tool_call_id", "name")
"""Message fields that carry no model text (neither scanned nor passed on, nor reported as dropped)."""
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
TOP_LEVEL_KEPT = ("id", "object", "created", "model", "system_fingerprint", "service_tier")
"""Top-level fields of an upstream completion passed to the client (scalars only); ``choices`` and ``usage`` are
rebuilt, anything else is dropped and named in ``safesail.upstream.dropped``."""


def is_empty(value: Any) -> bool:
    return value is None or value is False or value in ("", [], {})


class UpstreamReply:
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
            raise bad_upstream(f"{where}.{name} is not text")
        self.present.add(name)
        return self.add(("text", name), value)

    def add_tool(self, index: int, call: Any, where: str) -> str:
        """A tool call, or (streaming) a piece of one: name and arguments are scanned."""
        if not isinstance(call, dict):
            raise bad_upstream(f"{where} is not an object")
        kind = call.get("type") or "function"
        fn = call.get("function")
        if kind != "function" or not isinstance(fn if fn is not None else {}, dict):
            raise bad_upstream(f"{where} is a {kind!r} tool call, which the guard cannot scan")
        cur = self.tools.setdefault(index, {"id": "", "type": "function", "name": "", "arguments": ""})
        if isinstance(call.get("id"), str) and call["id"]:
            cur["id"] = call["id"]
        feed = ""
        for part in ("name", "arguments"):
            v = (fn or {}).get(part)
            if v is None:
                continue
            if not isinstance(v, str):
                raise bad_upstream(f"{where}.function.{part} is not text")
            cur[part] += v
            feed += self.add(("tool", index, part), v)
        return feed

    def add_function_call(self, fc: Any, where: str) -> str:
        if fc is None:
            return ""
        if not isinstance(fc, dict):
            raise bad_upstream(f"{where} is not an object")
        cur = self.function_call = self.function_call or {"name": "", "arguments": ""}
        feed = ""
        for part in ("name", "arguments"):
            v = fc.get(part)
            if v is None:
                continue
            if not isinstance(v, str):
                raise bad_upstream(f"{where}.{part} is not text")
            cur[part] += v
            feed += self.add(("function_call", part), v)
        return feed

    def add_delta(self, delta: dict[str, Any], where: str, dropped: set[str], *, message: bool) -> str:
        """Read a message (JSON) or a stream delta; returns the text to feed the monitor."""
        feed = ""
        for name in TEXT_FIELDS:
            feed += self.add_text(name, delta.get(name), where)
        calls = delta.get("tool_calls")
        if not is_empty(calls):
            if not isinstance(calls, list):
                raise bad_upstream(f"{where}.tool_calls is not a list")
            for i, call in enumerate(calls):
                index = i if message else (call.get("index", i) if isinstance(call, dict) else i)
                if not isinstance(index, int):
                    raise bad_upstream(f"{where}.tool_calls[{i}].index is not an integer")
                feed += self.add_tool(index, call, f"{where}.tool_calls[{i}]")
        feed += self.add_function_call(delta.get("function_call"), f"{where}.function_call")
        if not is_empty(delta.get("audio")):
            raise bad_upstream(f"{where}.audio: the upstream sent audio, which the guard cannot scan")
        for k, v in delta.items():
            if k not in (*TEXT_FIELDS, *MESSAGE_META, "tool_calls", "function_call", "audio") and not is_empty(v):
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
            raise bad_upstream(f"{where}.content[{j}] is not a text part; the guard scans text only")
        out.append(p["text"])
    return "".join(out)


def bad_upstream(what: str) -> APIError:
    return APIError(502, f"the upstream response cannot be scanned: {what}", code="upstream_bad_response")


def parse_choices(body: dict[str, Any], dropped: set[str]) -> list[tuple[UpstreamReply, str]]:
    """Every choice of a completion read into a `UpstreamReply` with its finish reason, in index order."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise APIError(502, "the upstream response has no choices", code="upstream_bad_response")
    out: list[tuple[int, UpstreamReply, str]] = []
    for i, ch in enumerate(choices):
        where = f"choices[{i}]"
        if not isinstance(ch, dict) or not isinstance(ch.get("message"), dict):
            raise bad_upstream(f"{where} has no message object")
        reply = UpstreamReply()
        reply.add_delta(ch["message"], f"{where}.message", dropped, message=True)
        for k, v in ch.items():
            if k not in ("index", "message", "finish_reason") and not is_empty(v):
                dropped.add(f"choices.{k}")
        fr = ch.get("finish_reason")
        index = ch.get("index", i)
        out.append((index if isinstance(index, int) else i, reply, fr if fr in FINISH_REASONS else "stop"))
    out.sort(key=lambda t: t[0])
    return [(r, fr) for _, r, fr in out]


def read_chunk(chunk: Any, reply: UpstreamReply, dropped: set[str]) -> tuple[str, str | None]:
    """One stream chunk: its choice's fields go into ``reply``; returns the text to feed and the finish reason."""
    if not isinstance(chunk, dict):
        return "", None
    choices = chunk.get("choices")
    if is_empty(choices):
        return "", None
    if not isinstance(choices, list):
        raise bad_upstream("a stream chunk's choices is not a list")
    feed, finish = "", None
    for ch in choices:
        if not isinstance(ch, dict):
            raise bad_upstream("a stream chunk's choice is not an object")
        if ch.get("index", 0) != 0:
            raise bad_upstream(f"the stream carries choice {ch.get('index')!r}; the guard streams one choice")
        delta = ch.get("delta")
        if delta is not None and not isinstance(delta, dict):
            raise bad_upstream("a stream chunk's delta is not an object")
        feed += reply.add_delta(delta or {}, "delta", dropped, message=False)
        for k, v in ch.items():
            if k not in ("index", "delta", "finish_reason") and not is_empty(v):
                dropped.add(f"choices.{k}")
        fr = ch.get("finish_reason")
        finish = fr if isinstance(fr, str) else finish
    return feed, finish


def usage_counts(usage: Any) -> dict[str, Any]:
    """Token counts only (numbers, in nested objects too)."""
    if not isinstance(usage, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in usage.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, dict):
            out[k] = usage_counts(v)
    return out


def error_message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", ""))[:300]
    return str(err)[:300]


def upstream_json(r: Any) -> dict[str, Any]:
    """The upstream JSON body, or the mapped error: its 4xx pass through (with its message), 5xx become 502."""
    try:
        body = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if r.status_code >= 400:
        msg = error_message(body) if body is not None else r.text[:300]
        if r.status_code in (400, 401, 403, 404, 413, 422, 429):
            status = 502 if r.status_code in (401, 403) else r.status_code
            raise APIError(status, f"upstream rejected the request ({r.status_code}): {msg}", code="upstream_rejected")
        raise APIError(502, f"the upstream server failed ({r.status_code}): {msg}", code="upstream_error")
    if not isinstance(body, dict):
        raise APIError(502, "the upstream server returned a body that is not a JSON object",
                       code="upstream_bad_response")
    return body


__all__ = ["FINISH_REASONS", "MESSAGE_META", "TEXT_FIELDS", "TOP_LEVEL_KEPT", "UpstreamReply", "bad_upstream",
           "error_message", "is_empty", "parse_choices", "read_chunk", "upstream_json", "usage_counts"]
