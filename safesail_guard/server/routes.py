"""The proxy's own routes: health, models, chat completions and batch scoring (`add_routes`, called by
`create_app` in `server/app.py`; the dashboard's routes are in `server/ui_routes.py`).

``GET /healthz`` (the process is up), ``GET /readyz`` (the model and database are loaded), ``GET /v1/models``
and ``/v1/models/{id}``, ``POST /v1/chat/completions`` (JSON or SSE stream, `server/responses.py`) and
``POST /v1/safesail/score`` (the batch scorer's records, no generation).

One chat request, in order: size limit (413) -> API key (401) -> JSON and schema (400 naming the field) -> model
(404) -> limits (400) -> a slot (429 when the queue is full) -> the backend's ``prepare`` (the prompt's tokens,
400 over the limit) -> the answer. The prompt stage's verdict is committed to the audit log before the first
byte of the answer leaves (stream headers included), the final verdict before the last chunk (or the JSON
completion) is released.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from safesail_guard.server.auth import authorize
from safesail_guard.server.chat_request import build_job, check_model, read_body, trace_params
from safesail_guard.server.errors import bad_request
from safesail_guard.server.openai_schema import ChatCompletionRequest, ScoreRequest, parse_json_body, validate_model
from safesail_guard.server.openapi import body_schema
from safesail_guard.server.responses import complete_json, start_stream
from safesail_guard.server.state import ServerState, ready_state, server_state


def model_card(st: ServerState) -> dict[str, Any]:
    """The model this server answers as, in the OpenAI ``model`` format."""
    be = st.served
    return {"id": be.model_id, "object": "model", "created": int(st.started), "owned_by": "safesail-guard",
            "safesail": {"mode": st.config.mode, "policy": be.policy_name}}


def add_routes(app: FastAPI) -> None:
    """Add the health, model, chat and score routes to ``app``."""

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is up (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Loading or failed"}})
    async def readyz(request: Request) -> JSONResponse:
        """200 once the model, database and policy are loaded; 503 before, or when loading failed."""
        st = server_state(request)
        if st.backend is not None:
            be = st.backend
            return JSONResponse({"status": "ready", "mode": be.mode, "model": be.model_id, "policy": be.policy_name,
                                 "features": len(be.guard.catalog)})
        status = "failed" if st.load_error else "loading"
        return JSONResponse({"status": status, "error": st.load_error}, status_code=503)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, Any]:
        """The model this server answers as (OpenAI ``list`` format)."""
        st = ready_state(request)
        authorize(request, st.keys)
        return {"object": "list", "data": [model_card(st)]}

    @app.get("/v1/models/{model_id}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        """One model card (404 for any other id)."""
        st = ready_state(request)
        authorize(request, st.keys)
        check_model(st, model_id)
        return model_card(st)

    @app.post("/v1/chat/completions", tags=["openai"], openapi_extra=body_schema(ChatCompletionRequest),
              responses={200: {"description": "A chat.completion, or an SSE stream of chat.completion.chunk"}})
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, guarded. The verdict is in the ``safesail`` field and x-safesail-* headers."""
        st = ready_state(request)
        key_id = authorize(request, st.keys)
        raw = await read_body(request, st.config.limits.max_body_bytes)
        body = parse_json_body(raw)
        req: ChatCompletionRequest = validate_model(ChatCompletionRequest, body)
        check_model(st, req.model)
        job = build_job(st, req, body, "req-" + uuid.uuid4().hex[:20])
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(st.admission.slot(job.cancel.deadline))
            trace = stack.enter_context(st.telemetry.request(
                model=job.client_model, mode=st.config.mode, stream=job.stream, request_id=job.request_id,
                params=trace_params(job), key_id=key_id, carrier=dict(request.headers)))
            job.trace = trace
            if job.stream:
                return await start_stream(request, st, job, key_id, stack, trace)
            async with stack:
                return await complete_json(request, st, job, key_id, trace)
        except BaseException:
            await stack.aclose()
            raise

    @app.post("/v1/safesail/score", tags=["safesail"], openapi_extra=body_schema(ScoreRequest))
    async def score(request: Request) -> dict[str, Any]:
        """Score prompts without generating: the batch scorer's records (`safesail score`) over HTTP."""
        from safesail_guard.runtime.batch_score import ScoreError, ScoreItem, parse_record, result_record

        st = ready_state(request)
        authorize(request, st.keys)
        raw = await read_body(request, st.config.limits.max_body_bytes)
        sreq: ScoreRequest = validate_model(ScoreRequest, parse_json_body(raw))
        if sreq.policy is not None:
            raise bad_request("policy: the server's policy applies; restart with --policy to change it",
                              param="policy")
        if len(sreq.items) > st.config.limits.max_batch_items:
            raise bad_request(f"items: at most {st.config.limits.max_batch_items} per request, got "
                              f"{len(sreq.items)}", param="items")
        parsed = [parse_record(obj, f"items[{i}]") for i, obj in enumerate(sreq.items)]
        good = [p for p in parsed if isinstance(p, ScoreItem)]
        deadline = time.monotonic() + st.config.limits.request_timeout_s
        async with st.admission.slot(deadline):
            results = await asyncio.wait_for(st.served.score([g.prompt for g in good]),
                                             timeout=max(0.1, deadline - time.monotonic()))
        it = iter(results)
        out = []
        for p in parsed:
            if isinstance(p, ScoreError):
                out.append(p.to_dict())
                continue
            r = next(it)
            out.append(ScoreError(p.id, str(r)).to_dict() if isinstance(r, Exception) else result_record(p.id, r))
        return {"object": "list", "data": out, "policy": st.served.policy_name}


__all__ = ["add_routes", "model_card"]
