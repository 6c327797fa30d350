"""Spans, span events and metrics for one guarded request, written against the OpenTelemetry API only.

The server builds one :class:`GuardTelemetry` at start-up (in its lifespan, next to the guard) and opens one
:class:`RequestTrace` per request::

    with telemetry.request(model="smollm2", mode="local", stream=False, request_id=rid, params=body) as rt:
        with rt.stage("prompt_scoring"):
            result = guard.scan(...)
            rt.decision("prompt_scoring", result.decision.to_dict(), score=result.score, concepts=domains)
        with rt.stage("generation"):
            ...; rt.first_token(); ...
        rt.guard_overhead(seconds, tokens)
        rt.usage(input_tokens, output_tokens)
        rt.finish(finish_reason="stop", status_code=200, response_id=cid)

Span tree (names in :mod:`safesail_guard.telemetry.names`): a SERVER span ``"{operation} {model}"`` per
request; INTERNAL stage spans ``safesail.prompt_scoring`` / ``safesail.generation`` /
``safesail.response_scoring`` and, in upstream mode, a CLIENT span ``"{operation} {upstream model}"``, all direct
children of the request span. Policy verdicts are ``safesail.decision`` events on the stage span that was open
when they were recorded. Per-request metrics are recorded once, when the request finishes (stage and upstream
durations when their block ends), so ``usage`` may be called again with newer counts (the last call counts) and
``guard_overhead`` may be called per stage (the calls are summed).

This module holds :class:`GuardTelemetry` (the tracer and the metric instruments, one per process, and the
request span). Its neighbours: :mod:`.request_trace` (:class:`RequestTrace`: stage spans, decision events and
per-request metrics), :mod:`.metric_instruments` (the histograms and counters), :mod:`.attributes` (the text-free
values they record: :func:`~.attributes.short_name`, :class:`~.attributes.DecisionSummary`, request parameters)
and :mod:`.names` (every name).

Nothing here configures the SDK: with no SDK configured (see :mod:`safesail_guard.telemetry.setup`) every call is
a cheap no-op. Telemetry never carries prompt text, response text, stop sequences or API keys: only ids, names
(rule, policy, feature short names, model) and numbers. Exceptions are recorded by type only (their messages can
quote user input).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind

from safesail_guard import __version__
from safesail_guard.telemetry import names as n
from safesail_guard.telemetry.attributes import request_param_attributes
from safesail_guard.telemetry.metric_instruments import MetricInstruments
from safesail_guard.telemetry.request_trace import RequestTrace


class GuardTelemetry:
    """The guard's tracer and instruments; one per server process (build it in the app's lifespan).

    ``tracer_provider`` / ``meter_provider`` default to the global API providers, which are no-ops unless the
    server entry point configured the SDK. Tests pass explicit SDK providers instead.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        self.tracer = trace.get_tracer(n.SCOPE, __version__, tracer_provider=tracer_provider)
        self.instruments = MetricInstruments.create(metrics.get_meter(n.SCOPE, __version__, meter_provider=meter_provider))
        self._probe: ContextVar[None] = ContextVar(f"safesail_telemetry_probe_{id(self):x}", default=None)

    @contextmanager
    def current(self, span: Span) -> Iterator[None]:
        """Make ``span`` the current span inside the block, even when the block is left in another task.

        A server may enter a request in its endpoint and leave it at the end of a streaming body, which runs in
        another task (another ``contextvars`` context). Detaching there would fail (OpenTelemetry logs an
        error), so the block detaches only when it is left in the context it was entered in; the other context
        simply ends with its task.
        """
        probe = self._probe.set(None)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            try:
                self._probe.reset(probe)
            except ValueError:  # left in another context: nothing of ours to undo there
                pass
            else:
                otel_context.detach(token)

    @contextmanager
    def request(self, *, operation: str = n.OPERATION_CHAT, model: str, mode: str, stream: bool, request_id: str,
                server_address: str | None = None, server_port: int | None = None,
                params: Mapping[str, Any] | None = None, key_id: str | None = None,
                carrier: Mapping[str, str] | None = None) -> Iterator[RequestTrace]:
        """Trace one request: a SERVER span named ``"{operation} {model}"``, current inside the block.

        ``mode`` is ``local`` or ``upstream``; ``params`` is the OpenAI request body (only its numeric sampling
        parameters are read, see :func:`request_param_attributes`); ``carrier`` holds the incoming HTTP headers,
        so a W3C ``traceparent`` from the client becomes the span's parent (unless a span is already current,
        e.g. from an HTTP server instrumentation, which then is the parent). An exception leaving the block ends
        the span with ``error.type`` (and status ERROR for server errors) and is re-raised. A request that leaves
        the block without :meth:`RequestTrace.finish` is finished with status 200 (500 on an exception).
        The block may be left in another task than the one that entered it (e.g. entered in the endpoint, left at
        the end of a streaming body): the span ends when the block is left.
        """
        if mode not in n.MODES:
            raise ValueError(f"unknown telemetry mode {mode!r}; valid modes: {', '.join(n.MODES)}")
        metric_attrs: dict[str, Any] = {
            n.GEN_AI_OPERATION_NAME: operation, n.GEN_AI_PROVIDER_NAME: n.PROVIDER_SAFESAIL,
            n.GEN_AI_REQUEST_MODEL: model, n.SAFESAIL_MODE: mode, n.SAFESAIL_STREAM: bool(stream),
        }
        if server_address:
            metric_attrs[n.SERVER_ADDRESS] = server_address
            if server_port is not None:
                metric_attrs[n.SERVER_PORT] = int(server_port)
        request_params = request_param_attributes(params)
        attrs = {**metric_attrs, **request_params, n.SAFESAIL_REQUEST_ID: request_id}
        if key_id:
            attrs[n.SAFESAIL_KEY_ID] = key_id
        parent = otel_context.get_current()
        if carrier and not trace.get_current_span(parent).get_span_context().is_valid:
            parent = propagate.extract(carrier, context=parent)  # no HTTP instrumentation has done it already
        span = self.tracer.start_span(f"{operation} {model}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attrs)
        rt = RequestTrace(self, span, metric_attrs, request_params)
        with self.current(span):
            try:
                yield rt
            except BaseException as exc:
                rt._fail(exc)
                raise
            else:
                if not rt.finished:
                    rt.finish(finish_reason=None, status_code=200)
            finally:
                span.end()
