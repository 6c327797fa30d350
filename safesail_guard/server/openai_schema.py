"""The OpenAI chat-completions wire format: request models, parsing with field-naming errors, response builders.

Requests are validated strictly (no string-to-number coercion), the first problem becomes a 400 whose
``param`` is the field path (``messages[2].role``), and fields we do not model are kept: upstream mode forwards
them untouched, local mode refuses the few it cannot honour (tools, images, logprobs, n > 1) by name.

The guard's verdict travels in one extra, namespaced field, ``safesail``, on completions and on the last
stream chunk; clients that do not know it ignore it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safesail_guard.server.errors import APIError, bad_request

Role = Literal["system", "developer", "user", "assistant", "tool"]
MAX_STOP = 4
MAX_MESSAGES = 1_024
LOCAL_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "logprobs",
                     "top_logprobs", "logit_bias", "audio", "modalities", "prediction")


class TextPart(BaseModel):
    """One text part of a multi-part message content."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a final chunk with token usage."""

    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class SteerRequest(BaseModel):
    """One steering op on one database feature for this request (local mode)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    feature_id: str = Field(min_length=1, max_length=64, description="Database feature id, e.g. L14_1234.")
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


def message_text(msg: ChatMessage, index: int) -> str:
    """The text of one message; non-text parts are a 400 (the local model reads text only)."""
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    texts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise bad_request(f"messages[{index}].content[{j}]: only text parts are supported, got type "
                              f"{part.type!r}", param=f"messages[{index}].content[{j}].type")
        texts.append(part.text)
    return "".join(texts)


def plain_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """``[{role, content}]`` with text contents, refusing messages that are empty everywhere."""
    msgs = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(req.messages)]
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


def check_local_support(req: ChatCompletionRequest) -> None:
    """Refuse by name what local generation cannot do (upstream mode forwards these instead)."""
    extra = req.model_extra or {}
    for name in LOCAL_UNSUPPORTED:
        if name in extra and extra[name] not in (None, False, [], {}):
            raise bad_request(f"{name}: not supported by the local guarded model", param=name,
                              code="unsupported_parameter")
    if req.n not in (None, 1):
        raise bad_request("n: the local guarded model returns one choice; use n=1", param="n")


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
