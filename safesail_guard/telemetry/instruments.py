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

Nothing here configures the SDK: with no SDK configured (see :mod:`safesail_guard.telemetry.setup`) every call is
a cheap no-op. Telemetry never carries prompt text, response text, stop sequences or API keys: only ids, names
(rule, policy, feature short names, model) and numbers. Exceptions are recorded by type only (their messages can
quote user input).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from safesail_guard import __version__
from safesail_guard.policy.decision import SEVERITY
from safesail_guard.telemetry import names as n

MAX_FEATURES = 32
"""Most features listed on one decision event (de-duplicated by id, in order of first appearance)."""
SHORT_NAME_CHARS = 60
"""Longest feature short name (see :func:`short_name`)."""

CLIENT_CLOSED = 499
"""``http.response.status_code`` recorded when the client went away before the response ended (nginx's code)."""

_CLAUSE_BREAKS = (", e.g.", " e.g.", " on text like ", ";", "\n", ". ", " - ", " — ")
_TRAILING = " \t,.:;/-—"


def short_name(explanation: str | None, max_chars: int = SHORT_NAME_CHARS) -> str:
    """A feature's display name: the first clause of its explanation, at most ``max_chars`` characters.

    The clause ends at the first ``", e.g."``, ``" on text like "``, ``;``, ``". "``, dash or newline outside
    double quotes (the offline explainer's quoted words may hold any character); a longer clause is cut at a
    word boundary and ends with ``"…"``. ``None`` or blank gives ``""`` (callers fall back to the feature id).
    """
    if not explanation or not explanation.strip():
        return ""
    text = explanation.strip()
    cut = len(text)
    in_quote = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote and any(text.startswith(b, i) for b in _CLAUSE_BREAKS):
            cut = i
            break
    clause = " ".join(text[:cut].split()).rstrip(_TRAILING)
    if len(clause) <= max_chars:
        return clause
    head = clause[: max_chars - 1]
    if " " in head:
        head = head[: head.rfind(" ")]
    return head.rstrip(_TRAILING) + "…"


def _stage_key(name: str) -> str:
    """``"prompt_scoring"`` for ``"prompt_scoring"`` or ``"safesail.prompt_scoring"``; ValueError otherwise."""
    key = name.removeprefix("safesail.")
    if key not in n.STAGES:
        raise ValueError(f"unknown telemetry stage {name!r}; valid stages: {', '.join(n.STAGES)}")
    return key


def _error_type(exc: BaseException) -> tuple[str, int, bool]:
    """(error.type, HTTP status, is a server error) for an exception leaving a request or stage.

    An exception with an integer ``status_code`` below 500 (an HTTP error the server chose, e.g. a 401) is a
    client error: ``error.type`` is the status code and the span status stays unset, as the HTTP conventions ask
    for SERVER spans. A closed generator or a cancelled task (the client went away mid-stream) is recorded as
    status 499 with ``error.type`` ``GeneratorExit`` / ``CancelledError``, also without ERROR status. Anything
    else is a server error named by its class.
    """
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return type(exc).__qualname__, CLIENT_CLOSED, False
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 500:
        return str(code), code, False
    status = code if isinstance(code, int) and not isinstance(code, bool) and code >= 500 else 500
    return type(exc).__qualname__, status, True


def _number(value: Any, kind: type) -> int | float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return kind(value)


def request_param_attributes(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """GenAI ``gen_ai.request.*`` attributes from an OpenAI request body (numbers only; everything else ignored).

    Reads ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``top_k``, ``seed``,
    ``frequency_penalty``, ``presence_penalty`` and ``n`` (as ``gen_ai.request.choice.count`` when not 1). Text
    fields such as ``messages`` or ``stop`` are never read.
    """
    if not params:
        return {}
    out: dict[str, Any] = {}
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        max_tokens = params.get("max_completion_tokens")
    pairs: tuple[tuple[str, Any, type], ...] = (
        (n.GEN_AI_REQUEST_MAX_TOKENS, max_tokens, int),
        (n.GEN_AI_REQUEST_TEMPERATURE, params.get("temperature"), float),
        (n.GEN_AI_REQUEST_TOP_P, params.get("top_p"), float),
        (n.GEN_AI_REQUEST_TOP_K, params.get("top_k"), float),
        (n.GEN_AI_REQUEST_SEED, params.get("seed"), int),
        (n.GEN_AI_REQUEST_FREQUENCY_PENALTY, params.get("frequency_penalty"), float),
        (n.GEN_AI_REQUEST_PRESENCE_PENALTY, params.get("presence_penalty"), float),
    )
    for key, value, kind in pairs:
        num = _number(value, kind)
        if num is not None:
            out[key] = num
    choices = _number(params.get("n"), int)
    if choices is not None and choices != 1:
        out[n.GEN_AI_REQUEST_CHOICE_COUNT] = choices
    return out


def _server_of(url: str) -> tuple[str | None, int | None]:
    """(host, port) of ``url``: never its path, query or credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port


@dataclass(frozen=True)
class DecisionSummary:
    """What telemetry keeps of one policy decision (no text): the parallel feature arrays are strongest first."""

    action: str
    policy: str
    rules: tuple[str, ...]
    feature_ids: tuple[str, ...]
    feature_names: tuple[str, ...]
    activations: tuple[float, ...]
    normalized: tuple[float, ...]
    language: str | None

    @classmethod
    def from_decision(cls, decision: Mapping[str, Any] | Any | None) -> DecisionSummary:
        """Summarise ``Decision.to_dict()`` (a :class:`~safesail_guard.policy.decision.Decision` also works).

        ``None`` (no policy was evaluated) gives action ``"none"``. Features of all effective matches are
        de-duplicated by id, keeping the strongest (largest normalized) firing, in order of first appearance,
        at most :data:`MAX_FEATURES`. Suppressed matches are ignored, as the policy ignores them.
        """
        if decision is None:
            return cls(n.NO_ACTION, "", (), (), (), (), (), None)
        d = decision.to_dict() if hasattr(decision, "to_dict") else decision
        best: dict[str, Mapping[str, Any]] = {}
        for match in d.get("matches") or ():
            for feat in match.get("features") or ():
                fid = str(feat.get("id", ""))
                if not fid:
                    continue
                old = best.get(fid)
                if old is None or float(feat.get("normalized") or 0.0) > float(old.get("normalized") or 0.0):
                    best[fid] = feat
        feats = list(best.values())[:MAX_FEATURES]
        lang = d.get("language")
        language = lang.get("code") if isinstance(lang, Mapping) else None
        return cls(
            action=str(d.get("action") or "allow"),
            policy=str(d.get("policy") or ""),
            rules=tuple(str(m.get("rule", "")) for m in d.get("matches") or ()),
            feature_ids=tuple(str(f["id"]) for f in feats),
            feature_names=tuple(short_name(f.get("explanation")) or str(f["id"]) for f in feats),
            activations=tuple(float(f.get("activation") or 0.0) for f in feats),
            normalized=tuple(float(f.get("normalized") or 0.0) for f in feats),
            language=str(language) if language else None,
        )


@dataclass(frozen=True)
class _Instruments:
    """The meter's instruments, created once per :class:`GuardTelemetry`."""

    request_duration: metrics.Histogram
    time_to_first_token: metrics.Histogram
    time_per_output_token: metrics.Histogram
    token_usage: metrics.Histogram
    client_duration: metrics.Histogram
    requests: metrics.Counter
    decisions: metrics.Counter
    stage_duration: metrics.Histogram
    guard_duration: metrics.Histogram
    guard_per_token: metrics.Histogram

    @classmethod
    def create(cls, meter: metrics.Meter) -> _Instruments:
        """Create every instrument on ``meter`` (bucket boundaries as advice, see :mod:`.names`)."""
        h = meter.create_histogram
        return cls(
            request_duration=h(n.METRIC_SERVER_REQUEST_DURATION, unit="s",
                               description="Guarded request duration, to the last byte or output token.",
                               explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS),
            time_to_first_token=h(n.METRIC_SERVER_TIME_TO_FIRST_TOKEN, unit="s",
                                  description="Time to the first output token, for successful responses.",
                                  explicit_bucket_boundaries_advisory=n.TTFT_BUCKETS),
            time_per_output_token=h(n.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN, unit="s",
                                    description="Time per output token after the first, for successful responses.",
                                    explicit_bucket_boundaries_advisory=n.TPOT_BUCKETS),
            token_usage=h(n.METRIC_CLIENT_TOKEN_USAGE, unit="{token}",
                          description="Input and output tokens per request.",
                          explicit_bucket_boundaries_advisory=n.TOKEN_BUCKETS),
            client_duration=h(n.METRIC_CLIENT_OPERATION_DURATION, unit="s",
                              description="Duration of the call to the upstream model server.",
                              explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS),
            requests=meter.create_counter(n.METRIC_REQUESTS, unit="{request}",
                                          description="Guarded requests by mode, status and final action."),
            decisions=meter.create_counter(n.METRIC_DECISIONS, unit="{decision}",
                                           description="Policy decisions by action, stage and concept."),
            stage_duration=h(n.METRIC_STAGE_DURATION, unit="s", description="Duration of each pipeline stage.",
                             explicit_bucket_boundaries_advisory=n.STAGE_BUCKETS),
            guard_duration=h(n.METRIC_GUARD_DURATION, unit="s",
                             description="Time spent in guard hooks and policy evaluation per request.",
                             explicit_bucket_boundaries_advisory=n.GUARD_BUCKETS),
            guard_per_token=h(n.METRIC_GUARD_TIME_PER_TOKEN, unit="s",
                              description="Guard time per token the guard processed.",
                              explicit_bucket_boundaries_advisory=n.GUARD_PER_TOKEN_BUCKETS),
        )


class GuardTelemetry:
    """The guard's tracer and instruments; one per server process (build it in the app's lifespan).

    ``tracer_provider`` / ``meter_provider`` default to the global API providers, which are no-ops unless the
    server entry point configured the SDK. Tests pass explicit SDK providers instead.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        self.tracer = trace.get_tracer(n.SCOPE, __version__, tracer_provider=tracer_provider)
        self.instruments = _Instruments.create(metrics.get_meter(n.SCOPE, __version__, meter_provider=meter_provider))
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


class RequestTrace:
    """One request's span and measurements; made by :meth:`GuardTelemetry.request`, not directly."""

    def __init__(self, telemetry: GuardTelemetry, span: Span, metric_attrs: dict[str, Any],
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
        key = _stage_key(name)
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
        host, port = _server_of(url)
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
                outcome.error_type, _, server_error = _error_type(exc)
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
        key = _stage_key(stage)
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
        error_type, status, server_error = _error_type(exc)
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
