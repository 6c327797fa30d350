"""From an HTTP request to a `ChatJob`: the body (size-limited), the model check, the limits and the job itself.

The chat route (`server/routes.py`) reads the body with `read_body` (413 over the limit, before reading it
all), validates it once against `openai_schema.ChatCompletionRequest` and `openai_schema.plain_messages`, then
`build_job` applies the server's limits and mode: local mode refuses what the model cannot honour
(`openai_schema.check_local_support`) and logs what it ignores (`openai_schema.local_ignored`, reported again in
``safesail.ignored``). `watch_disconnect` cancels the job when the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import Request

from safesail_guard.server.errors import APIError, bad_request
from safesail_guard.server.jobs import CancelToken, ChatJob
from safesail_guard.server.openai_schema import (
    ChatCompletionRequest, check_local_support, local_ignored, plain_messages, stop_list,
)
from safesail_guard.server.state import ServerState

log = logging.getLogger("safesail.server")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise APIError(413, f"the request body is {int(declared)} bytes; the limit is {limit}",
                               code="body_too_large")
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body exceeds the limit of {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def check_model(st: ServerState, model: str) -> None:
    """404 unless ``model`` is the id this server answers as (upstream mode without a fixed model: any id)."""
    be = st.served
    if st.config.mode == "upstream" and not st.config.served_model_name and not st.config.upstream_model:
        return  # upstream mode without a fixed model forwards whatever model the client names
    if model != be.model_id:
        raise APIError(404, f"model {model!r} does not exist here; this server serves {be.model_id!r}",
                       param="model", code="model_not_found")


def build_job(st: ServerState, req: ChatCompletionRequest, body: dict[str, Any], request_id: str) -> ChatJob:
    """The job for a validated request under the server's limits (400 naming the field otherwise)."""
    lim = st.config.limits
    ignored: list[str] = []
    if st.config.mode == "local":
        check_local_support(req)
        ignored = local_ignored(req)
    messages = plain_messages(req)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    if max_tokens is None:
        max_tokens = lim.default_max_tokens
    elif max_tokens > lim.max_tokens:
        raise bad_request(f"{param}: {max_tokens} is above this server's limit of {lim.max_tokens}", param=param)
    temperature = 1.0 if req.temperature is None else float(req.temperature)
    top_p = 1.0 if req.top_p is None else float(req.top_p)
    opts = req.safesail
    stop = stop_list(req)
    if ignored:
        log.warning("request %s: fields ignored by the local guarded model: %s", request_id, ", ".join(ignored))
    return ChatJob(request_id=request_id, messages=messages, max_tokens=max_tokens, temperature=temperature,
                   top_p=top_p, seed=req.seed, stop=stop, steer=list(opts.steer) if opts else [],
                   want_tokens=bool(opts and opts.tokens), body=body, client_model=req.model,
                   cancel=CancelToken(time.monotonic() + lim.request_timeout_s), stream=bool(req.stream),
                   ignored=ignored)


def trace_params(job: ChatJob) -> dict[str, Any]:
    """The request parameters a trace records."""
    return {"max_tokens": job.max_tokens, "temperature": job.temperature, "top_p": job.top_p, "seed": job.seed}


async def watch_disconnect(request: Request, cancel: CancelToken) -> None:
    """Cancel the job when the client disconnects (polled until the job ends)."""
    while not cancel.event.is_set():
        if await request.is_disconnected():
            cancel.cancel("client disconnected")
            return
        await asyncio.sleep(0.25)


__all__ = ["build_job", "check_model", "read_body", "trace_params", "watch_disconnect"]
