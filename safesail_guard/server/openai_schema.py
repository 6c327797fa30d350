"""The OpenAI chat-completions wire format: request models, parsing with field-naming errors, response builders.

Requests are validated strictly (no string-to-number coercion), the first problem becomes a 400 whose
``param`` is the field path (``messages[2].role``), and fields we do not model are kept: upstream mode forwards
them untouched, local mode refuses by name those it cannot honour (`LOCAL_REFUSED`: tools, logprobs, n > 1, ...)
and reports the rest as ignored (`local_ignored`).

Messages are the exception, because every piece of client text must be scored before it reaches a model:
`plain_messages` hands them to `chat_template.validate_messages`, which refuses what the guard cannot read (image,
audio and file parts, lone surrogates) and folds the text a message carries outside ``content`` (``name``,
``tool_calls``, ``function_call``, ``refusal``) into the scored text; a message field the guard does not know
is refused when it holds anything, and a ``tool`` message needs its ``tool_call_id`` (as OpenAI requires).
This is the one place the proxy validates a request: the `ChatJob` (`server/chat_request.py`) carries the
validated messages to the backend, which tokenises them once.

The guard's verdict travels in one extra, namespaced field, ``safesail``, on completions and on the last
stream chunk; clients that do not know it ignore it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safesail_guard.chat_template import ChatFormatError, validate_messages
from safesail_guard.server.errors import APIError, bad_request

Role = Literal["system", "developer", "user", "assistant", "tool"]
MAX_STOP = 4
MAX_MESSAGES = 1_024
LOCAL_REFUSED = (
    # OpenAI parameters local generation does not implement (upstream mode forwards them, and guards them)
    "tools", "tool_choice", "functions", "function_call", "response_format", "logprobs", "top_logprobs",
    "logit_bias", "audio", "modalities", "prediction",
    # parameters of other OpenAI-compatible servers (vLLM, SGLang) that change what text comes back
    "echo", "best_of", "use_beam_search", "prompt_logprobs", "guided_json", "guided_regex", "guided_choice",
    "guided_grammar", "guided_decoding_backend", "structured_outputs", "continue_final_message", "chat_template",
    "include_stop_str_in_output",
)
"""Request parameters local mode refuses by name (400 ``unsupported_parameter``) when given (not null, false,
0, empty list or object): the answer a client relies on them for - a tool call, a schema, log-probabilities,
an echo - is not one the local guarded model can give, so accepting them would answer a different question."""
LOCAL_IGNORED = ("presence_penalty", "frequency_penalty", "user")
"""Modelled request fields local mode accepts and does not use: the guarded model's sampler has no penalties,
and ``user`` (an end-user id for the provider's abuse monitoring) is not recorded. Like any field this module does
not model, they are listed in ``safesail.ignored`` and logged when given (`local_ignored`)."""


MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"})
"""Message fields the guard reads; any other one is refused unless it is null or empty (SDKs send
``"audio": null``, ``"annotations": []`` when they echo an earlier reply)."""
TOOL_CALL_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
"""An identifier, not prose: tool call ids are forwarded upstream (some templates render them) but not scored."""


class TextPart(BaseModel):
    """One part of a multi-part message content (only text and refusal parts can be scanned)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_call_id: str | None = Field(None, pattern=TOOL_CALL_ID)
    function_call: dict[str, Any] | None = None
    refusal: str | None = None


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a final chunk with token usage."""

    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class SteerRequest(BaseModel):
    """One steering op on one database feature for this request (local mode)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    feature_id: str = Field(min_length=1, max_length=64, description="Database feature id, e.g. 14_21.")
    op: Literal["clamp", "scale", "add"]
    value: float = Field(ge=-1_000, le=1_000, description="Normalised units (x max_act) for clamp/add; a factor for scale.")


class SafesailOptions(BaseModel):
    """Per-request guard options, in the extra ``safesail`` field of the request."""

    model_config = ConfigDict(extra="forbid", strict=True)
    steer: list[SteerRequest] = Field(default_factory=list, max_length=64, description="Steering ops (local mode).")
    tokens: bool = Field(False, description="Return per-token feature activations (prompt and response).")


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (the fields the guard reads; others pass through upstream)."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = Field(None, max_length=512)
    safesail: SafesailOptions | None = None


class ScoreRequest(BaseModel):
    """``POST /v1/safesail/score`` body: items like the lines of `safesail score` input."""

    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[dict[str, Any]] = Field(min_length=1, description='[{"id": ..., "text": ...} or {"id", "messages"}]')
    policy: str | None = Field(None, description="Not accepted: the server's policy applies (kept for a clear error).")


# ------------------------------------------------------------------------------------------------- parsing


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "function-after", "literal"):
            continue  # union-branch labels pydantic adds to locations
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_json_body(raw: bytes) -> Any:
    """Decode a request body: invalid UTF-8 and invalid JSON are 400s that say so."""
    if not raw:
        raise bad_request("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"the request body is not valid UTF-8 (byte {e.start})", code="invalid_encoding") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise bad_request(f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                          code="invalid_json") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply", code="invalid_json") from None


def validate_model(model: type[BaseModel], obj: Any) -> Any:
    """Validate ``obj`` against ``model``; the first error becomes a 400 naming the field."""
    if not isinstance(obj, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(obj).__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = _loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid value")
        raise bad_request(f"{where or 'body'}: {msg}", param=where or None) from None


def plain_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """``[{role, content}]`` with every piece of client text in ``content`` (see
    `chat_template.validate_messages`); a 400 naming the field for what cannot be scored, and for messages that are
    empty everywhere."""
    raw: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        for key, value in (m.model_extra or {}).items():
            if value not in (None, "", [], {}):
                raise bad_request(f"messages[{i}].{key}: the guard cannot score this message field; remove it or "
                                  "put its text in the content", param=f"messages[{i}].{key}")
        if m.role == "tool" and m.tool_call_id is None:
            raise bad_request(f"messages[{i}].tool_call_id: a message with role 'tool' needs the tool_call_id of "
                              "the call it answers", param=f"messages[{i}].tool_call_id")
        for j, call in enumerate(m.tool_calls or []):
            cid = call.get("id")
            if cid is not None and not (isinstance(cid, str) and re.fullmatch(TOOL_CALL_ID, cid)):
                raise bad_request(f"messages[{i}].tool_calls[{j}].id must be an identifier (letters, digits, "
                                  "_ . : -, at most 128)", param=f"messages[{i}].tool_calls[{j}].id")
        content: Any = m.content
        if isinstance(content, list):
            content = [p.model_dump() for p in content]
        raw.append({"role": m.role, "content": content, "name": m.name, "tool_calls": m.tool_calls,
                    "function_call": m.function_call, "refusal": m.refusal})
    try:
        msgs = validate_messages(raw)
    except ChatFormatError as e:
        raise bad_request(str(e), param=e.param or "messages") from None
    if not any(m["content"].strip() for m in msgs if m["role"] != "system"):
        raise bad_request("messages: no user or assistant message has any text", param="messages")
    if "\x00" in "".join(m["content"] for m in msgs):
        raise bad_request("messages: content contains a NUL character", param="messages")
    return msgs


def stop_list(req: ChatCompletionRequest) -> list[str]:
    """``stop`` as a list, checked: at most 4 non-empty strings."""
    stop = req.stop
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > MAX_STOP:
        raise bad_request(f"stop: at most {MAX_STOP} sequences, got {len(items)}", param="stop")
    for i, s in enumerate(items):
        if not s:
            raise bad_request(f"stop[{i}]: a stop sequence must not be empty", param=f"stop[{i}]")
    return items


def _given(value: Any) -> bool:
    """True for a value that asks for something (not null, false, 0, an empty list or object)."""
    return value not in (None, False, [], {})


def check_local_support(req: ChatCompletionRequest) -> None:
    """Refuse by name what local generation cannot do (`LOCAL_REFUSED`, ``n > 1``); upstream mode forwards these
    instead."""
    extra = req.model_extra or {}
    for name in LOCAL_REFUSED:
        if _given(extra.get(name)):
            raise bad_request(f"{name}: not supported by the local guarded model", param=name,
                              code="unsupported_parameter")
    if req.n not in (None, 1):
        raise bad_request("n: the local guarded model returns one choice; use n=1", param="n")


def local_ignored(req: ChatCompletionRequest) -> list[str]:
    """The request's fields local mode accepts but does not use, sorted: `LOCAL_IGNORED` ones and every field
    this module does not model, when given (after `check_local_support` refused what must not be ignored). The
    server logs them and lists them in ``safesail.ignored``, as vLLM logs the fields it ignores."""
    names = {name for name in LOCAL_IGNORED if _given(getattr(req, name))}
    names.update(k for k, v in (req.model_extra or {}).items() if k not in LOCAL_REFUSED and _given(v))
    return sorted(names)


# ----------------------------------------------------------------------------------------------- responses


def new_completion_id() -> str:
    """An OpenAI-style completion id."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion_body(*, cid: str, model: str, content: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int, safesail: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object."""
    return {
        "id": cid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": None,
        "safesail": safesail,
    }


def chunk_body(*, cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
               safesail: dict[str, Any] | None = None, usage: dict[str, int] | None = None,
               empty_choices: bool = False) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": None,
                            "choices": [] if empty_choices else [{"index": 0, "delta": delta, "logprobs": None,
                                                                  "finish_reason": finish_reason}]}
    if usage is not None:
        body["usage"] = usage
    if safesail is not None:
        body["safesail"] = safesail
    return body


def sse(obj: Any) -> bytes:
    """One server-sent event line carrying ``obj`` as JSON (or the literal ``[DONE]``)."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def stream_error(err: APIError) -> bytes:
    """An error after the stream started: an SSE event with the OpenAI error body (the client raises it)."""
    return sse(err.body())
