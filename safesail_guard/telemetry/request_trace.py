"""One guarded request's span tree and measurements: :class:`RequestTrace`.

A :class:`RequestTrace` is made by :meth:`safesail_guard.telemetry.instruments.GuardTelemetry.request` around one
request's SERVER span. It opens the INTERNAL stage spans and the upstream CLIENT span, puts ``safesail.decision``
events on them, and records the per-request metrics on the
:class:`~safesail_guard.telemetry.metric_instruments.MetricInstruments` when a stage or the request ends. The
values it records come from :mod:`safesail_guard.telemetry.attributes` (never text) and the names from
:mod:`safesail_guard.telemetry.names`; it needs from its telemetry object only what :class:`TraceHost` lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from safesail_guard.policy.decision import SEVERITY
from safesail_guard.telemetry import names as n
from safesail_guard.telemetry.attributes import DecisionSummary, classify_exception, server_of, stage_key
from safesail_guard.telemetry.metric_instruments import MetricInstruments


class TraceHost(Protocol):
    """What a :class:`RequestTrace` uses of the :class:`~safesail_guard.telemetry.instruments.GuardTelemetry`
    that made it: the tracer, the metric instruments and the context helper that makes a span current."""

    tracer: trace.Tracer
    instruments: MetricInstruments

    def current(self, span: Span) -> AbstractContextManager[None]: ...


class RequestTrace:
    """One request's span and measurements; made by
    :meth:`~safesail_guard.telemetry.instruments.GuardTelemetry.request`, not directly."""

    def __init__(self, telemetry: TraceHost, span: Span, metric_attrs: dict[str, Any],
                 request_params: dict[str, Any]) -> None:
        self._tel = telemetry
        self.span = span
        self._metric_attrs = metric_attrs
        self._params = request_params
        self._mode = metric_attrs[n.SAFESAIL_MODE]
        self._start = time.perf_counter()
        self._first_token: float | None = None
        self._usage: tuple[int, int] | None = None
        self._guard_s = 0.0
        self._guard_tokens = 0
        self._open: list[tuple[str, Span]] = []
        self._upstream: list[_UpstreamCall] = []
        self._action = n.NO_ACTION
        self.finished = False

    # -- identity ---------------------------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        """False when telemetry is off (no SDK, or the trace was not sampled): callers may skip extra work."""
        return self.span.is_recording()

    @property
    def trace_id(self) -> str | None:
        """The W3C trace id as 32 hex digits, or None when there is no valid trace (telemetry off)."""
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else None

    def inject(self, headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
        """Add ``traceparent`` (and baggage) for an outgoing call to ``headers``; inside :meth:`upstream_call`
        the upstream span is the parent, otherwise the request span. Returns ``headers``."""
        span = self._upstream[-1].span if self._upstream else self.span
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return headers

    # -- stages -----------------------------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        """An INTERNAL child span for a pipeline stage (``prompt_scoring``, ``generation``, ``response_scoring``;
        the ``safesail.`` prefix is optional); its duration goes to ``safesail.stage.duration``.

        Use :meth:`upstream_call` for the upstream stage. Stages are always direct children of the request span.
        """
        key = stage_key(name)
        if key == n.STAGE_UPSTREAM:
            raise ValueError("the upstream stage is traced with RequestTrace.upstream_call(model, url)")
        span = self._tel.tracer.start_span(n.STAGE_SPANS[key], context=trace.set_span_in_context(self.span),
                                           kind=SpanKind.INTERNAL, attributes={n.SAFESAIL_STAGE: key})
        with self._timed_stage(key, span, _Outcome()):
            yield span

    @contextmanager
    def upstream_call(self, model: str, url: str, *, provider: str = n.PROVIDER_OPENAI,
                      operation: str | None = None) -> Iterator[Span]:
        """A CLIENT span ``"{operation} {model}"`` around the call to the upstream server at ``url``.

        Carries the GenAI client attributes (``gen_ai.provider.name`` = ``provider``, ``server.address`` and
        ``server.port`` from ``url``; never its path, query or credentials) and the request's sampling
        parameters; records ``gen_ai.client.operation.duration`` and ``safesail.stage.duration`` (stage
        ``upstream``). Use :meth:`inject` inside it to propagate the trace to the upstream.
        """
        op = operation or self._metric_attrs[n.GEN_AI_OPERATION_NAME]
        host, port = server_of(url)
        client_attrs: dict[str, Any] = {n.GEN_AI_OPERATION_NAME: op, n.GEN_AI_PROVIDER_NAME: provider,
                                        n.GEN_AI_REQUEST_MODEL: model}
        if host:
            client_attrs[n.SERVER_ADDRESS] = host
            if port is not None:
                client_attrs[n.SERVER_PORT] = port
        span = self._tel.tracer.start_span(
            f"{op} {model}", context=trace.set_span_in_context(self.span), kind=SpanKind.CLIENT,
            attributes={**client_attrs, **self._params, n.SAFESAIL_STAGE: n.STAGE_UPSTREAM})
        call = _UpstreamCall(span)
        self._upstream.append(call)
        start = time.perf_counter()
        try:
            with self._timed_stage(n.STAGE_UPSTREAM, span, call.outcome):
                yield span
        finally:
            self._upstream.remove(call)
            error = call.outcome.error_type
            attrs = {**client_attrs, n.ERROR_TYPE: error} if error else client_attrs
            self._tel.instruments.client_duration.record(time.perf_counter() - start, attrs)

    def upstream_response(self, *, status_code: int | None = None, response_id: str | None = None,
                          response_model: str | None = None, finish_reason: str | None = None,
                          error_type: str | None = None) -> None:
        """Describe the upstream's answer on the open :meth:`upstream_call` span (call it inside the block).

        ``error_type`` (e.g. ``"429"`` or ``"timeout"``) marks the upstream span ERROR and goes on its duration
        metric; an HTTP status >= 400 without ``error_type`` uses the status code as the error type.
        """
        if not self._upstream:
            raise RuntimeError("upstream_response() must be called inside RequestTrace.upstream_call()")
        call = self._upstream[-1]
        if status_code is not None:
            call.span.set_attribute(n.HTTP_RESPONSE_STATUS_CODE, int(status_code))
            if error_type is None and status_code >= 400:
                error_type = str(status_code)
        if response_id:
            call.span.set_attribute(n.GEN_AI_RESPONSE_ID, response_id)
        if response_model:
            call.span.set_attribute(n.GEN_AI_RESPONSE_MODEL, response_model)
        if finish_reason:
            call.span.set_attribute(n.GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason])
        if error_type:
            call.outcome.error_type = error_type
            call.span.set_attribute(n.ERROR_TYPE, error_type)
            call.span.set_status(Status(StatusCode.ERROR, error_type))

    @contextmanager
    def _timed_stage(self, key: str, span: Span, outcome: _Outcome) -> Iterator[None]:
        """Make ``span`` current and the target of decisions; on exit record its duration and end it."""
        self._open.append((key, span))
        start = time.perf_counter()
        with self._tel.current(span):
            try:
                yield
            except BaseException as exc:
                outcome.error_type, _, server_error = classify_exception(exc)
                span.set_attribute(n.ERROR_TYPE, outcome.error_type)
                if server_error:
                    span.set_status(Status(StatusCode.ERROR, outcome.error_type))
                raise
            finally:
                self._open.remove((key, span))
                attrs: dict[str, Any] = {n.SAFESAIL_STAGE: key, n.SAFESAIL_MODE: self._mode}
                if outcome.error_type:
                    attrs[n.ERROR_TYPE] = outcome.error_type
                self._tel.instruments.stage_duration.record(time.perf_counter() - start, attrs)
                span.end()

    # -- measurements -----------------------------------------------------------------------------------------------
    def decision(self, stage: str, decision: Mapping[str, Any] | Any | None, *, score: float | None = None,
                 concepts: Mapping[str, float] | None = None, key_id: str | None = None) -> None:
        """Record a policy verdict: a ``safesail.decision`` event and ``safesail.decisions`` increments.

        ``decision`` is ``Decision.to_dict()`` (or the Decision, or None when no policy ran); ``score`` is the
        risk score; ``concepts`` maps concept (domain) names to scores in [0, 1]. The event goes on the innermost
        open stage span (the request span when none is open). The counter is incremented once per concept
        scoring at least 0.5 (``safesail.concept`` = its name), or once with ``safesail.concept="none"``. The
        request span's ``safesail.action`` becomes the most severe action recorded so far.
        """
        key = stage_key(stage)
        summary = DecisionSummary.from_decision(decision)
        hot = sorted(((c, float(s)) for c, s in (concepts or {}).items() if float(s) >= n.CONCEPT_THRESHOLD),
                     key=lambda cs: (-cs[1], cs[0]))
        attrs: dict[str, Any] = {
            n.SAFESAIL_STAGE: key, n.SAFESAIL_ACTION: summary.action, n.SAFESAIL_RULES: list(summary.rules),
            n.SAFESAIL_FEATURE_IDS: list(summary.feature_ids), n.SAFESAIL_FEATURE_NAMES: list(summary.feature_names),
            n.SAFESAIL_FEATURE_ACTIVATIONS: list(summary.activations),
            n.SAFESAIL_FEATURE_NORMALIZED: list(summary.normalized),
            n.SAFESAIL_CONCEPTS: [c for c, _ in hot],
        }
        if summary.policy:
            attrs[n.SAFESAIL_POLICY] = summary.policy
        if score is not None:
            attrs[n.SAFESAIL_SCORE] = float(score)
        if summary.language:
            attrs[n.SAFESAIL_LANGUAGE] = summary.language
        if key_id:
            attrs[n.SAFESAIL_KEY_ID] = key_id
            self.span.set_attribute(n.SAFESAIL_KEY_ID, key_id)
        target = self._open[-1][1] if self._open else self.span
        target.add_event(n.EVENT_DECISION, attrs)

        if _severity(summary.action) > _severity(self._action):
            self._action = summary.action
            self.span.set_attribute(n.SAFESAIL_ACTION, self._action)
        metric_attrs: dict[str, Any] = {n.SAFESAIL_ACTION: summary.action, n.SAFESAIL_STAGE: key,
                                        n.SAFESAIL_MODE: self._mode}
        if summary.policy:
            metric_attrs[n.SAFESAIL_POLICY] = summary.policy
        for concept in [c for c, _ in hot] or [n.NO_CONCEPT]:
            self._tel.instruments.decisions.add(1, {**metric_attrs, n.SAFESAIL_CONCEPT: concept})

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        """Token counts: ``gen_ai.usage.*`` on the request span (and the open upstream span); the
        ``gen_ai.client.token.usage`` histogram is recorded at finish with the last values given."""
        self._usage = (int(input_tokens), int(output_tokens))
        for span in [self.span, *(c.span for c in self._upstream)]:
            span.set_attribute(n.GEN_AI_USAGE_INPUT_TOKENS, self._usage[0])
            span.set_attribute(n.GEN_AI_USAGE_OUTPUT_TOKENS, self._usage[1])

    def first_token(self) -> None:
        """Mark the first output token (only the first call counts): ``safesail.time_to_first_token`` on the span
        now, ``gen_ai.server.time_to_first_token`` at finish if the request succeeds."""
        if self._first_token is not None:
            return
        self._first_token = time.perf_counter()
        self.span.set_attribute(n.SAFESAIL_TIME_TO_FIRST_TOKEN, self._first_token - self._start)

    def guard_overhead(self, seconds: float, tokens: int) -> None:
        """Add time spent in guard hooks and policy evaluation over ``tokens`` tokens; totals go on the request
        span (``safesail.guard.duration``, ``safesail.guard.tokens``) and into the guard histograms at finish."""
        self._guard_s += float(seconds)
        self._guard_tokens += int(tokens)
        self.span.set_attribute(n.SAFESAIL_GUARD_DURATION, self._guard_s)
        self.span.set_attribute(n.SAFESAIL_GUARD_TOKENS, self._guard_tokens)

    def finish(self, *, finish_reason: str | None, status_code: int, error_type: str | None = None,
               response_id: str | None = None, response_model: str | None = None) -> None:
        """End-of-response facts and all per-request metrics; only the first call counts.

        ``error_type`` (a short, low-cardinality code such as ``"timeout"``) goes on the span and the metrics;
        a status >= 500 without one uses the status code. The span status becomes ERROR for a status >= 500 (or
        an ``error_type`` with a success status), not for a 4xx: the HTTP conventions leave client errors unset
        on SERVER spans.
        """
        if self.finished:
            return
        self.finished = True
        now = time.perf_counter()
        span = self.span
        span.set_attribute(n.HTTP_RESPONSE_STATUS_CODE, int(status_code))
        if finish_reason:
            span.set_attribute(n.GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason])
        if response_id:
            span.set_attribute(n.GEN_AI_RESPONSE_ID, response_id)
        if response_model:
            span.set_attribute(n.GEN_AI_RESPONSE_MODEL, response_model)
        if error_type is None and status_code >= 500:
            error_type = str(status_code)
        if error_type:
            span.set_attribute(n.ERROR_TYPE, error_type)
            if status_code >= 500 or status_code < 400:
                span.set_status(Status(StatusCode.ERROR, error_type))
        span.set_attribute(n.SAFESAIL_ACTION, self._action)

        ins = self._tel.instruments
        base = self._metric_attrs
        with_error = {**base, n.ERROR_TYPE: error_type} if error_type else base
        ins.request_duration.record(now - self._start, with_error)
        counted = {n.SAFESAIL_MODE: self._mode, n.SAFESAIL_STREAM: base[n.SAFESAIL_STREAM],
                   n.HTTP_RESPONSE_STATUS_CODE: int(status_code), n.SAFESAIL_ACTION: self._action}
        if error_type:
            counted[n.ERROR_TYPE] = error_type
        ins.requests.add(1, counted)
        if self._usage is not None:
            ins.token_usage.record(self._usage[0], {**base, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_INPUT})
            ins.token_usage.record(self._usage[1], {**base, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_OUTPUT})
        if not error_type and self._first_token is not None:
            ins.time_to_first_token.record(self._first_token - self._start, base)
            if self._usage is not None and self._usage[1] > 1:
                ins.time_per_output_token.record((now - self._first_token) / (self._usage[1] - 1), base)
        if self._guard_tokens or self._guard_s:
            guard_attrs = {n.SAFESAIL_MODE: self._mode, n.SAFESAIL_STREAM: base[n.SAFESAIL_STREAM]}
            ins.guard_duration.record(self._guard_s, guard_attrs)
            if self._guard_tokens > 0:
                ins.guard_per_token.record(self._guard_s / self._guard_tokens, guard_attrs)

    def _fail(self, exc: BaseException) -> None:
        """An exception is leaving the request block: mark the span and finish with the matching status."""
        error_type, status, server_error = classify_exception(exc)
        if not self.finished:
            self.finish(finish_reason=None, status_code=status, error_type=error_type)
        elif server_error:
            self.span.set_attribute(n.ERROR_TYPE, error_type)
            self.span.set_status(Status(StatusCode.ERROR, error_type))


@dataclass
class _Outcome:
    """How a stage ended: the ``error.type`` of its failure, if any."""

    error_type: str | None = None


@dataclass(eq=False)
class _UpstreamCall:
    """The open upstream CLIENT span and its outcome (``upstream_response`` may set an error)."""

    span: Span
    outcome: _Outcome = field(default_factory=_Outcome)


def _severity(action: str) -> int:
    return SEVERITY.get(action, -1)
