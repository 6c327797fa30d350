"""The guard proxy: an OpenAI-compatible FastAPI app built by `create_app` (no module globals).

Routes: ``POST /v1/chat/completions`` (JSON or SSE stream), ``GET /v1/models``, ``POST /v1/safesail/score``,
``GET /healthz`` (the process is up), ``GET /readyz`` (the model and database are loaded).

One request, in order: size limit (413) -> API key (401) -> JSON and schema (400 naming the field) -> model
(404) -> limits (400) -> a slot (429 when the queue is full) -> prompt token count (400) -> the backend. The
prompt stage's verdict is committed to the audit log before the first byte of the answer leaves (stream
headers included), the final verdict before the last chunk (or the JSON completion) is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from safesail_guard.server.backends import Cancelled, CancelToken, ChatJob, Outcome
from safesail_guard.server.config import ServerConfig
from safesail_guard.server.errors import APIError, bad_request
from safesail_guard.server.limits import Admission
from safesail_guard.server.openai_schema import (
    ChatCompletionRequest, ScoreRequest, check_local_support, chunk_body, completion_body, new_completion_id,
    parse_json_body, plain_messages, sse, stop_list, stream_error, validate_model,
)
from safesail_guard.server.verdict import Verdict, safesail_field, verdict_headers

log = logging.getLogger("safesail.server")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
TRACE_STAGE = {"prompt": "prompt_scoring", "final": "response_scoring"}
"""Verdict stage -> the telemetry stage whose span event carries it."""


@dataclass
class ServerState:
    """Everything the routes share, owned by the app's lifespan."""

    config: ServerConfig
    backend: Any = None  # LocalBackend | UpstreamBackend once loaded
    keys: Any = None  # KeyStore
    admission: Admission | None = None
    audit: Any = None  # AuditLog
    telemetry: Any = None  # GuardTelemetry
    load_error: str | None = None
    started: float = field(default_factory=time.time)
    decisions: int = 0  # verdicts handed to the audit log (two per answered chat)

    @property
    def ready(self) -> bool:
        """True when requests can be served."""
        return self.backend is not None


def create_app(config: ServerConfig | None = None, *, guarded: Any = None, audit: Any = None,
               telemetry: Any = None, keys: Any = None, backend: Any = None) -> FastAPI:
    """Build the proxy app. ``guarded`` (a `GuardedModel`), ``audit`` (an `AuditLog`), ``telemetry`` (a
    `GuardTelemetry`), ``keys`` (a `KeyStore`) and ``backend`` may be given ready-made (tests, embedding);
    otherwise the lifespan builds them from ``config`` (the model loads on a background thread; /readyz says
    when it is done)."""
    config = config or ServerConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from safesail_guard.audit import AuditLog
        from safesail_guard.server.auth import KeyStore
        from safesail_guard.server.backends import ModelWorker
        from safesail_guard.telemetry import GuardTelemetry

        st = ServerState(config)
        st.keys = keys if keys is not None else KeyStore.load(config.api_keys_file, config.api_keys_env)
        st.admission = Admission(config.limits.max_concurrent, config.limits.max_queue)
        st.audit = audit if audit is not None else AuditLog(config.audit)
        st.telemetry = telemetry if telemetry is not None else GuardTelemetry()
        app.state.safesail = st
        worker = ModelWorker()
        loader: asyncio.Task | None = None
        if backend is not None:
            st.backend = backend
        elif guarded is not None:  # nothing to load: ready before the first request
            await _load_backend(st, worker, guarded)
        else:
            loader = asyncio.create_task(_load_backend(st, worker, guarded))
        retention = asyncio.create_task(_retention_loop(st)) if config.audit.retention_days else None
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
            if loader is not None and not loader.done():
                loader.cancel()
            if st.backend is not None and hasattr(st.backend, "aclose"):
                await st.backend.aclose()
            worker.shutdown()
            if audit is None:
                st.audit.close()

    app = FastAPI(title="safesail-guard", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible proxy that watches an LLM's safety features token by token.")
    _install_error_handlers(app)
    _add_routes(app)
    _install_ui(app)
    _install_openapi(app)
    return app


def _install_ui(app: FastAPI) -> None:
    """The StarMap dashboard at /ui and the read-only APIs it uses (`server/ui_routes.py`)."""
    try:
        from safesail_guard.server.ui_routes import install_ui
    except ModuleNotFoundError as e:  # the dashboard module is optional while it is being written
        if e.name != "safesail_guard.server.ui_routes":
            raise
        return
    install_ui(app)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("safesail-guard")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return "0"


RETENTION_EVERY_S = 6 * 3600
"""How often a running server applies the audit log's retention (it is also applied when the log opens)."""


async def _retention_loop(st: ServerState) -> None:
    """Delete audit records older than the configured retention, every `RETENTION_EVERY_S`."""
    while True:
        await asyncio.sleep(RETENTION_EVERY_S)
        try:
            n = await asyncio.to_thread(st.audit.apply_retention)
            if n:
                log.info("audit retention: deleted %d records older than %g days", n,
                         st.config.audit.retention_days)
        except Exception as e:  # noqa: BLE001 - a failed purge must not stop the server; it retries later
            log.error("audit retention failed: %s", e)


async def _load_backend(st: ServerState, worker: Any, guarded: Any) -> None:
    """Load model, database and policy on the model thread; failures are reported by /readyz."""
    from safesail_guard.runtime.generation import GuardedModel
    from safesail_guard.server.backends import LocalBackend, UpstreamBackend

    cfg = st.config
    try:
        if guarded is None:
            guarded = await worker.run(GuardedModel.from_db, cfg.db, cfg.model, policy=cfg.policy)
        name = cfg.served_model_name or (cfg.upstream_model if cfg.mode == "upstream" else None) or \
            guarded.guard.model_name or "safesail-local"
        if cfg.mode == "local":
            st.backend = LocalBackend(guarded, worker, model_id=name)
        else:
            assert cfg.upstream_url is not None
            check_no_steering(guarded.policy)
            st.backend = UpstreamBackend(guarded, worker, base_url=cfg.upstream_url,
                                         api_key_env=cfg.upstream_api_key_env, upstream_model=cfg.upstream_model,
                                         timeout_s=cfg.upstream_timeout_s, model_id=name)
        log.info("ready: %s mode, model %s, policy %s", cfg.mode, name, st.backend.policy_name)
    except Exception as e:  # noqa: BLE001 - any load failure is reported, never crashes the server
        st.load_error = f"{type(e).__name__}: {e}"
        log.error("loading the guard failed: %s", st.load_error)


def check_no_steering(policy: Any) -> None:
    """Upstream mode cannot steer (the model is elsewhere): a policy with steering is a configuration error."""
    if policy is None:
        return
    names = [r.name for r in policy.rules if r.steer or r.action == "steer"]
    names += [d.name for d in getattr(policy, "dampers", ()) if d.steer]
    if names:
        raise ValueError(f"policy {policy.name!r} steers ({', '.join(names)}), but upstream mode cannot steer a "
                         "model it does not host; use a policy without steer rules or run in local mode")


# ------------------------------------------------------------------------------------------------ errors


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        where = ".".join(str(p) for p in errs[0].get("loc", ())[1:]) if errs else ""
        return bad_request(f"{where or 'request'}: {errs[0].get('msg') if errs else 'invalid'}", param=where or None
                           ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
        return APIError(exc.status_code, msg).response(dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return APIError(500, f"internal error ({type(exc).__name__}); see the server log").response()


# ------------------------------------------------------------------------------------------------ helpers


def _state(request: Request) -> ServerState:
    return request.app.state.safesail


def _ready_state(request: Request) -> ServerState:
    st = _state(request)
    if not st.ready:
        if st.load_error:
            raise APIError(503, f"the guard failed to load: {st.load_error}", code="not_ready")
        raise APIError(503, "the model is still loading; retry shortly", code="not_ready",
                       headers={"Retry-After": "5"})
    return st


def _authorize(request: Request, st: ServerState) -> str | None:
    return st.keys.check(request.headers.get("authorization"))


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _record_verdict(st: ServerState, job: ChatJob, verdict: Verdict, *, key_id: str | None, trace: Any,
                          model: str, latency_ms: float | None = None, extra: dict[str, Any] | None = None) -> None:
    """Trace one verdict (a span event) and commit it to the audit log (on a thread; returns once durable)."""
    from safesail_guard.audit import AuditRecord

    trace.decision(TRACE_STAGE[verdict.stage], verdict.decision.to_dict() if verdict.decision is not None else None,
                   score=verdict.score, concepts=verdict.concepts, key_id=key_id)
    rec = AuditRecord(request_id=job.request_id, stage=verdict.stage, action=verdict.action,
                      policy=st.backend.policy_name, rules=verdict.rules, features=verdict.top_features(),
                      concepts=verdict.concepts, score=verdict.score, key_id=key_id, model=model,
                      mode=st.config.mode, endpoint="/v1/chat/completions", text=verdict.text,
                      latency_ms=latency_ms,
                      extra={**(extra or {}), **({"pivot": verdict.pivot_dict()} if verdict.pivot is not None else {})})
    await asyncio.to_thread(st.audit.append, rec)
    st.decisions += 1


def _local_stage(be: Any, trace: Any, name: str) -> Any:
    """A telemetry stage span in local mode; upstream mode traces its own stages (`backends._stage`)."""
    return trace.stage(name) if be.mode == "local" else contextlib.nullcontext()


def _model_ok(st: ServerState, model: str) -> None:
    be = st.backend
    if st.config.mode == "upstream" and not st.config.served_model_name and not st.config.upstream_model:
        return  # upstream mode without a fixed model forwards whatever model the client names
    if model != be.model_id:
        raise APIError(404, f"model {model!r} does not exist here; this server serves {be.model_id!r}",
                       param="model", code="model_not_found")


LOCAL_REFUSED = ("echo", "best_of", "use_beam_search", "prompt_logprobs", "guided_json", "guided_regex",
                 "guided_choice", "guided_grammar", "guided_decoding_backend", "structured_outputs",
                 "continue_final_message", "chat_template", "include_stop_str_in_output")
"""Parameters of OpenAI-compatible servers (vLLM, SGLang) that change what text comes back, which the local guarded
model does not implement: refused by name rather than silently ignored (besides `openai_schema.LOCAL_UNSUPPORTED`)."""


def check_local_extras(body: dict[str, Any]) -> None:
    """400 naming a parameter the local guarded model would otherwise ignore silently."""
    for name in LOCAL_REFUSED:
        if body.get(name) not in (None, False, [], {}, ""):
            raise bad_request(f"{name}: not supported by the local guarded model", param=name,
                              code="unsupported_parameter")


def _job(st: ServerState, req: ChatCompletionRequest, body: dict[str, Any], request_id: str) -> ChatJob:
    lim = st.config.limits
    if st.config.mode == "local":
        check_local_support(req)
        check_local_extras(body)
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
    return ChatJob(request_id=request_id, messages=messages, max_tokens=max_tokens, temperature=temperature,
                   top_p=top_p, seed=req.seed, stop=stop_list(req), steer=list(opts.steer) if opts else [],
                   want_tokens=bool(opts and opts.tokens), body=body, client_model=req.model,
                   cancel=CancelToken(time.monotonic() + lim.request_timeout_s), stream=bool(req.stream))


def _trace_params(job: ChatJob) -> dict[str, Any]:
    return {"max_tokens": job.max_tokens, "temperature": job.temperature, "top_p": job.top_p, "seed": job.seed}


async def _watch_disconnect(request: Request, cancel: CancelToken) -> None:
    while not cancel.event.is_set():
        if await request.is_disconnected():
            cancel.cancel("client disconnected")
            return
        await asyncio.sleep(0.25)


# ------------------------------------------------------------------------------------------------- routes


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is up (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Loading or failed"}})
    async def readyz(request: Request) -> JSONResponse:
        """200 once the model, database and policy are loaded; 503 before, or when loading failed."""
        st = _state(request)
        if st.ready:
            be = st.backend
            return JSONResponse({"status": "ready", "mode": be.mode, "model": be.model_id, "policy": be.policy_name,
                                 "features": len(be.guard.catalog)})
        status = "failed" if st.load_error else "loading"
        return JSONResponse({"status": status, "error": st.load_error}, status_code=503)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, Any]:
        """The model this server answers as (OpenAI ``list`` format)."""
        st = _ready_state(request)
        _authorize(request, st)
        return {"object": "list", "data": [_model_card(st)]}

    @app.get("/v1/models/{model_id}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        """One model card (404 for any other id)."""
        st = _ready_state(request)
        _authorize(request, st)
        _model_ok(st, model_id)
        return _model_card(st)

    @app.post("/v1/chat/completions", tags=["openai"], openapi_extra=_body_schema(ChatCompletionRequest),
              responses={200: {"description": "A chat.completion, or an SSE stream of chat.completion.chunk"}})
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, guarded. The verdict is in the ``safesail`` field and x-safesail-* headers."""
        st = _ready_state(request)
        key_id = _authorize(request, st)
        raw = await _read_body(request, st.config.limits.max_body_bytes)
        body = parse_json_body(raw)
        req: ChatCompletionRequest = validate_model(ChatCompletionRequest, body)
        _model_ok(st, req.model)
        job = _job(st, req, body, "req-" + uuid.uuid4().hex[:20])
        assert st.admission is not None
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(st.admission.slot(job.cancel.deadline))
            trace = stack.enter_context(st.telemetry.request(
                model=job.client_model, mode=st.config.mode, stream=job.stream, request_id=job.request_id,
                params=_trace_params(job), key_id=key_id, carrier=dict(request.headers)))
            job.trace = trace
            if job.stream:
                return await _start_stream(request, st, job, key_id, stack, trace)
            async with stack:
                return await _complete(request, st, job, key_id, trace)
        except BaseException:
            await stack.aclose()
            raise

    @app.post("/v1/safesail/score", tags=["safesail"], openapi_extra=_body_schema(ScoreRequest))
    async def score(request: Request) -> dict[str, Any]:
        """Score prompts without generating: the batch scorer's records (`safesail score`) over HTTP."""
        from safesail_guard.runtime.batch_score import ScoreError, ScoreItem, parse_record, result_record

        st = _ready_state(request)
        _authorize(request, st)
        raw = await _read_body(request, st.config.limits.max_body_bytes)
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
        assert st.admission is not None
        async with st.admission.slot(deadline):
            results = await asyncio.wait_for(st.backend.score([g.prompt for g in good]),
                                             timeout=max(0.1, deadline - time.monotonic()))
        it = iter(results)
        out = []
        for p in parsed:
            if isinstance(p, ScoreError):
                out.append(p.to_dict())
                continue
            r = next(it)
            out.append(ScoreError(p.id, str(r)).to_dict() if isinstance(r, Exception) else result_record(p.id, r))
        return {"object": "list", "data": out, "policy": st.backend.policy_name}


def _model_card(st: ServerState) -> dict[str, Any]:
    return {"id": st.backend.model_id, "object": "model", "created": int(st.started), "owned_by": "safesail-guard",
            "safesail": {"mode": st.config.mode, "policy": st.backend.policy_name}}


BODY_MODELS: tuple[Any, ...] = (ChatCompletionRequest, ScoreRequest)
"""Request bodies read by hand but documented in the OpenAPI schema (their sub-models join its components)."""


def _body_schema(model: Any) -> dict[str, Any]:
    """Document a body we read by hand (so size, encoding and field errors are ours) in the OpenAPI schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _install_openapi(app: FastAPI) -> None:
    """Add the hand-read body models (and their nested models) to the schema's components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in BODY_MODELS:
                sch = model.model_json_schema(ref_template="#/components/schemas/{model}")
                comps.update(sch.pop("$defs", {}))
                comps[model.__name__] = sch
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ----------------------------------------------------------------------------------------- chat: JSON


async def _complete(request: Request, st: ServerState, job: ChatJob, key_id: str | None, trace: Any) -> Response:
    t0 = time.perf_counter()
    be = st.backend
    watcher = asyncio.create_task(_watch_disconnect(request, job.cancel))
    try:
        with _local_stage(be, trace, "safesail.prompt_scoring"):
            await be.prepare(job, st.config.limits.max_prompt_tokens)
        remaining = max(0.1, job.cancel.deadline - time.monotonic())
        with _local_stage(be, trace, "safesail.generation"):
            out: Outcome = await asyncio.wait_for(be.complete(job), timeout=remaining)
    except (TimeoutError, asyncio.TimeoutError):
        job.cancel.cancel("timeout")
        raise APIError(504, f"the request did not finish within {st.config.limits.request_timeout_s:g} s",
                       code="timeout") from None
    except Cancelled as e:
        raise APIError(504 if e.args and e.args[0] == "timeout" else 499, f"generation stopped: {e}",
                       code="cancelled") from None
    finally:
        watcher.cancel()
        job.cancel.cancel("request ended")  # a no-op for a finished job; stops the model thread if we were cancelled
    latency = (time.perf_counter() - t0) * 1000
    await _record(st, job, out, key_id, trace, latency)
    cid = new_completion_id()
    field_ = _safesail(st, job, out)
    if out.upstream_body is not None:  # upstream mode: the backend built the reply from what passed the guard
        body = {"id": cid, "created": int(time.time()), **out.upstream_body, "safesail": field_}
    else:
        body = completion_body(cid=cid, model=out.model or job.client_model, content=out.content,
                               finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
                               completion_tokens=out.completion_tokens, safesail=field_)
    trace.finish(finish_reason=out.finish_reason, status_code=200, response_id=str(body.get("id", cid)))
    return JSONResponse(body, headers=verdict_headers(job.request_id, out.final, out.prompt))


def _safesail(st: ServerState, job: ChatJob, out: Outcome) -> dict[str, Any]:
    return safesail_field(request_id=job.request_id, policy=st.backend.policy_name, mode=st.config.mode,
                          prompt=out.prompt, final=out.final, steering=out.steering,
                          tokens=out.tokens if job.want_tokens else None, guard_ms=out.guard_seconds * 1000,
                          upstream=out.upstream)


async def _record(st: ServerState, job: ChatJob, out: Outcome, key_id: str | None, trace: Any, latency_ms: float,
                  *, prompt_done: bool = False) -> None:
    """Trace and audit the verdicts (the prompt's unless already recorded, then the final one)."""
    model = out.model or job.client_model
    trace.usage(out.prompt_tokens, out.completion_tokens)
    trace.guard_overhead(out.guard_seconds, out.prompt_tokens + out.completion_tokens)
    if not prompt_done:
        await _record_verdict(st, job, out.prompt, key_id=key_id, trace=trace, model=model)
    extra: dict[str, Any] = {"finish_reason": out.finish_reason, "stream": job.stream}
    if out.upstream:
        extra["upstream"] = out.upstream
    await _record_verdict(st, job, out.final, key_id=key_id, trace=trace, model=model, latency_ms=latency_ms,
                          extra=extra)


# --------------------------------------------------------------------------------------- chat: stream


async def _start_stream(request: Request, st: ServerState, job: ChatJob, key_id: str | None, stack: AsyncExitStack,
                        trace: Any) -> Response:
    """Run until the prompt's verdict is known (it goes in the headers and the audit log), then stream."""
    t0 = time.perf_counter()
    be = st.backend
    try:
        # local mode: token count, then the prefill's verdict
        with _local_stage(be, trace, "safesail.prompt_scoring"):
            await be.prepare(job, st.config.limits.max_prompt_tokens)
            items = be.stream(job)
            stack.push_async_callback(items.aclose)
            first = await asyncio.wait_for(items.__anext__(), timeout=max(0.1, job.cancel.deadline - time.monotonic()))
    except (TimeoutError, asyncio.TimeoutError):
        job.cancel.cancel("timeout")
        raise APIError(504, "the request timed out before the first token", code="timeout") from None
    except Cancelled as e:
        raise APIError(504, f"generation stopped: {e}", code="cancelled") from None
    kind, value = first
    prompt_verdict: Verdict = value if kind == "prompt" else value.prompt
    await _record_verdict(st, job, prompt_verdict, key_id=key_id, trace=trace, model=job.client_model)
    headers = {**SSE_HEADERS, **verdict_headers(job.request_id, prompt_verdict)}
    include_usage = bool(job.body.get("stream_options", {}).get("include_usage")) if isinstance(
        job.body.get("stream_options"), dict) else False

    async def body() -> AsyncIterator[bytes]:
        cid, created = new_completion_id(), int(time.time())
        model = be.model_id if st.config.mode == "local" else (getattr(be, "upstream_model", None) or job.client_model)
        first_token = True
        try:
            async with stack:
                yield sse(chunk_body(cid=cid, model=model, created=created, delta={"role": "assistant", "content": ""}))
                pending = [first] if kind == "done" else []
                stack.enter_context(_local_stage(be, trace, "safesail.generation"))
                source = _chain(pending, items)
                async for k, v in source:
                    if k == "delta":
                        if first_token:
                            trace.first_token()
                            first_token = False
                        delta = {"content": v} if isinstance(v, str) else v  # upstream: text fields, tool calls
                        yield sse(chunk_body(cid=cid, model=model, created=created, delta=delta))
                    elif k == "done":
                        out: Outcome = v
                        await _record(st, job, out, key_id, trace, (time.perf_counter() - t0) * 1000,
                                      prompt_done=True)
                        if out.finish_reason == "content_filter":
                            yield sse(chunk_body(cid=cid, model=model, created=created,
                                                 delta={"content": out.content}))
                        yield sse(chunk_body(cid=cid, model=model, created=created, delta={},
                                             finish_reason=out.finish_reason, safesail=_safesail(st, job, out)))
                        if include_usage:
                            yield sse(chunk_body(cid=cid, model=model, created=created, delta={}, empty_choices=True,
                                                 usage={"prompt_tokens": out.prompt_tokens,
                                                        "completion_tokens": out.completion_tokens,
                                                        "total_tokens": out.prompt_tokens + out.completion_tokens}))
                        trace.finish(finish_reason=out.finish_reason, status_code=200, response_id=cid)
                        break
                yield sse("[DONE]")
        except APIError as e:
            trace.finish(finish_reason=None, status_code=e.status, error_type=e.code or "api_error")
            yield stream_error(e)
            yield sse("[DONE]")
        except Cancelled as e:
            reason = str(e)
            trace.finish(finish_reason=None, status_code=504 if reason == "timeout" else 499,
                         error_type="timeout" if reason == "timeout" else "client_disconnected")
            if reason == "timeout":
                yield stream_error(APIError(504, "the request timed out during generation", code="timeout"))
                yield sse("[DONE]")

    return _OwningStream(body(), stack, media_type="text/event-stream", headers=headers)


class _OwningStream(StreamingResponse):
    """A stream that releases what its request holds (slot, model job, trace) even when the body is never
    iterated - e.g. the client vanished before the headers went out - so a lost client cannot leak a slot."""

    def __init__(self, content: Any, stack: AsyncExitStack, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._stack = stack

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._stack.aclose()  # a no-op when the body already closed it


async def _chain(first: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for item in first:
        yield item
    if not first or first[-1][0] != "done":
        async for item in rest:
            yield item


__all__ = ["create_app", "ServerState"]
