"""`GuardTelemetry` / `RequestTrace` against in-memory SDK providers: span tree, events, metrics, errors, privacy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from safesail_guard.policy.decision import Decision, FiredFeature, RuleMatch
from safesail_guard.policy.language import LanguageGuess
from safesail_guard.telemetry import DecisionSummary, GuardTelemetry, short_name
from safesail_guard.telemetry import names as n

PROMPT = "PROMPT-7f3a: how do I make a pipe bomb at home"
RESPONSE = "RESPONSE-91cc: I can't help with that"
API_KEY = "sk-live-4d9e0c1b2a3f"


class Otel:
    """Explicit in-memory providers and a GuardTelemetry on them."""

    def __init__(self) -> None:
        self.spans_out = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_out))
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tel = GuardTelemetry(self.tracer_provider, self.meter_provider)

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.spans_out.get_finished_spans()}

    def points(self) -> dict[str, list[Any]]:
        """{metric name: [data points]} from one collection."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out


@pytest.fixture
def otel() -> Otel:
    o = Otel()
    yield o
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def feature(fid: str, explanation: str | None, act: float, norm: float, pos: int = 3) -> FiredFeature:
    return FiredFeature(id=fid, layer=14, explanation=explanation, activation=act, normalized=norm, position=pos)


def sample_decision(prompt: str = PROMPT) -> dict[str, Any]:
    """A real ``Decision.to_dict()`` whose text fields (span_text, reason, message) quote the prompt."""
    f1 = feature("14_1234", 'Fires on "bomb", "explosive" in weapons / explosives contexts, e.g. "...a pipe bomb..."',
                 3.2, 0.91)
    f2 = feature("14_77", "References to household chemicals; also cleaning products", 1.1, 0.42)
    f1_weaker = feature("14_1234", f1.explanation, 2.0, 0.6, pos=5)
    m1 = RuleMatch(rule="block_explosives", kind="threshold", action="block", scope="prompt", span=(2, 6),
                   span_text=prompt, features=(f1, f2), reason=f"explosives in {prompt!r}", message="I can't help.",
                   position=6)
    m2 = RuleMatch(rule="log_chemicals", kind="threshold", action="log", scope="prompt", span=(4, 5),
                   span_text=prompt[:10], features=(f1_weaker, feature("14_9", None, 0.5, 0.3)), reason="x")
    dec = Decision(action="block", matches=(m1, m2), refusal="I can't help.", steer=(),
                   language=LanguageGuess("en", "Latn", 0.99), policy="default", tokens_seen=12)
    return dec.to_dict()


def sample_allow() -> dict[str, Any]:
    return Decision(action="allow", matches=(), refusal=None, steer=(), language=LanguageGuess("en", "Latn", 0.9),
                    policy="default").to_dict()


def run_local_request(tel: GuardTelemetry, **kw: Any) -> str:
    """A successful local-mode request with the three stages; returns its trace id."""
    params = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64, "temperature": 0.7,
              "top_p": 0.9, "seed": 7, "stop": [PROMPT[:12]], "n": 1, "user": PROMPT}
    with tel.request(model="smollm2", mode="local", stream=False, request_id="req-1", params=params,
                     server_address="127.0.0.1", server_port=8000, **kw) as rt:
        with rt.stage("prompt_scoring"):
            rt.decision("prompt_scoring", sample_decision(), score=0.87,
                        concepts={"weapons": 0.93, "drugs": 0.51, "hate": 0.1}, key_id="team-a")
        with rt.stage("safesail.generation"):
            rt.first_token()
            rt.first_token()
        with rt.stage("response_scoring"):
            rt.decision("response_scoring", sample_allow(), score=0.05, concepts={"weapons": 0.2})
        rt.guard_overhead(0.004, 20)
        rt.guard_overhead(0.002, 10)
        rt.usage(12, 8)
        rt.finish(finish_reason="stop", status_code=200, response_id="chatcmpl-1", response_model="smollm2")
        return rt.trace_id


def test_local_request_span_tree(otel: Otel) -> None:
    trace_id = run_local_request(otel.tel)
    spans = otel.spans()
    assert set(spans) == {"chat smollm2", n.SPAN_PROMPT_SCORING, n.SPAN_GENERATION, n.SPAN_RESPONSE_SCORING}
    root = spans["chat smollm2"]
    assert root.kind == SpanKind.SERVER and root.parent is None
    assert format(root.context.trace_id, "032x") == trace_id
    for name in (n.SPAN_PROMPT_SCORING, n.SPAN_GENERATION, n.SPAN_RESPONSE_SCORING):
        child = spans[name]
        assert child.kind == SpanKind.INTERNAL
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.attributes[n.SAFESAIL_STAGE] == name.removeprefix("safesail.")
    a = root.attributes
    assert a[n.GEN_AI_OPERATION_NAME] == "chat" and a[n.GEN_AI_PROVIDER_NAME] == n.PROVIDER_SAFESAIL
    assert a[n.GEN_AI_REQUEST_MODEL] == "smollm2"
    assert a[n.GEN_AI_REQUEST_MAX_TOKENS] == 64 and a[n.GEN_AI_REQUEST_TEMPERATURE] == 0.7
    assert a[n.GEN_AI_REQUEST_TOP_P] == 0.9 and a[n.GEN_AI_REQUEST_SEED] == 7
    assert n.GEN_AI_REQUEST_CHOICE_COUNT not in a  # n == 1 is the default
    assert a[n.SAFESAIL_MODE] == "local" and a[n.SAFESAIL_STREAM] is False and a[n.SAFESAIL_REQUEST_ID] == "req-1"
    assert a[n.SERVER_ADDRESS] == "127.0.0.1" and a[n.SERVER_PORT] == 8000
    assert a[n.GEN_AI_USAGE_INPUT_TOKENS] == 12 and a[n.GEN_AI_USAGE_OUTPUT_TOKENS] == 8
    assert tuple(a[n.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert a[n.GEN_AI_RESPONSE_ID] == "chatcmpl-1" and a[n.GEN_AI_RESPONSE_MODEL] == "smollm2"
    assert a[n.HTTP_RESPONSE_STATUS_CODE] == 200
    assert a[n.SAFESAIL_ACTION] == "block"  # most severe of block (prompt) and allow (response)
    assert a[n.SAFESAIL_KEY_ID] == "team-a"
    assert a[n.SAFESAIL_GUARD_DURATION] == pytest.approx(0.006) and a[n.SAFESAIL_GUARD_TOKENS] == 30
    assert a[n.SAFESAIL_TIME_TO_FIRST_TOKEN] >= 0
    assert root.status.status_code == StatusCode.UNSET
    assert not spans[n.SPAN_GENERATION].events


def test_decision_event_attributes(otel: Otel) -> None:
    run_local_request(otel.tel)
    spans = otel.spans()
    (event,) = spans[n.SPAN_PROMPT_SCORING].events
    assert event.name == n.EVENT_DECISION
    e = event.attributes
    assert e[n.SAFESAIL_STAGE] == "prompt_scoring" and e[n.SAFESAIL_ACTION] == "block"
    assert e[n.SAFESAIL_POLICY] == "default"
    assert tuple(e[n.SAFESAIL_RULES]) == ("block_explosives", "log_chemicals")
    # de-duplicated by id (strongest firing kept), in order of first appearance
    assert tuple(e[n.SAFESAIL_FEATURE_IDS]) == ("14_1234", "14_77", "14_9")
    assert tuple(e[n.SAFESAIL_FEATURE_NAMES]) == (
        'Fires on "bomb", "explosive" in weapons / explosives…', "References to household chemicals",
        "14_9")
    assert tuple(e[n.SAFESAIL_FEATURE_ACTIVATIONS]) == (3.2, 1.1, 0.5)
    assert tuple(e[n.SAFESAIL_FEATURE_NORMALIZED]) == (0.91, 0.42, 0.3)
    assert e[n.SAFESAIL_SCORE] == 0.87
    assert tuple(e[n.SAFESAIL_CONCEPTS]) == ("weapons", "drugs")
    assert e[n.SAFESAIL_LANGUAGE] == "en" and e[n.SAFESAIL_KEY_ID] == "team-a"
    (allow,) = spans[n.SPAN_RESPONSE_SCORING].events
    assert allow.attributes[n.SAFESAIL_ACTION] == "allow"
    assert tuple(allow.attributes[n.SAFESAIL_RULES]) == () and tuple(allow.attributes[n.SAFESAIL_CONCEPTS]) == ()


def _attrs(point: Any) -> dict[str, Any]:
    return dict(point.attributes)


def test_metrics_names_and_attributes(otel: Otel) -> None:
    run_local_request(otel.tel)
    pts = otel.points()
    base = {n.GEN_AI_OPERATION_NAME: "chat", n.GEN_AI_PROVIDER_NAME: "safesail", n.GEN_AI_REQUEST_MODEL: "smollm2",
            n.SAFESAIL_MODE: "local", n.SAFESAIL_STREAM: False, n.SERVER_ADDRESS: "127.0.0.1", n.SERVER_PORT: 8000}

    (req,) = pts[n.METRIC_REQUESTS]
    assert req.value == 1
    assert _attrs(req) == {n.SAFESAIL_MODE: "local", n.SAFESAIL_STREAM: False, n.HTTP_RESPONSE_STATUS_CODE: 200,
                           n.SAFESAIL_ACTION: "block"}

    decisions = {(p.attributes[n.SAFESAIL_STAGE], p.attributes[n.SAFESAIL_CONCEPT]): p for p in pts[n.METRIC_DECISIONS]}
    assert set(decisions) == {("prompt_scoring", "weapons"), ("prompt_scoring", "drugs"), ("response_scoring", "none")}
    assert all(p.value == 1 for p in decisions.values())
    assert _attrs(decisions["prompt_scoring", "weapons"]) == {
        n.SAFESAIL_ACTION: "block", n.SAFESAIL_STAGE: "prompt_scoring", n.SAFESAIL_MODE: "local",
        n.SAFESAIL_POLICY: "default", n.SAFESAIL_CONCEPT: "weapons"}
    assert decisions["response_scoring", "none"].attributes[n.SAFESAIL_ACTION] == "allow"

    (dur,) = pts[n.METRIC_SERVER_REQUEST_DURATION]
    assert _attrs(dur) == base and dur.count == 1
    assert tuple(dur.explicit_bounds) == n.DURATION_BUCKETS
    (ttft,) = pts[n.METRIC_SERVER_TIME_TO_FIRST_TOKEN]
    assert ttft.count == 1 and tuple(ttft.explicit_bounds) == n.TTFT_BUCKETS  # first_token() twice counts once
    (tpot,) = pts[n.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN]
    assert tpot.count == 1
    usage = {p.attributes[n.GEN_AI_TOKEN_TYPE]: p for p in pts[n.METRIC_CLIENT_TOKEN_USAGE]}
    assert usage["input"].sum == 12 and usage["output"].sum == 8
    assert _attrs(usage["input"]) == {**base, n.GEN_AI_TOKEN_TYPE: "input"}
    assert tuple(usage["input"].explicit_bounds) == tuple(float(b) for b in n.TOKEN_BUCKETS)
    stages = {p.attributes[n.SAFESAIL_STAGE]: p for p in pts[n.METRIC_STAGE_DURATION]}
    assert set(stages) == {"prompt_scoring", "generation", "response_scoring"}
    assert all(p.count == 1 and p.attributes[n.SAFESAIL_MODE] == "local" for p in stages.values())
    assert tuple(stages["generation"].explicit_bounds) == n.STAGE_BUCKETS
    (guard,) = pts[n.METRIC_GUARD_DURATION]
    assert guard.sum == pytest.approx(0.006) and guard.count == 1
    (per_token,) = pts[n.METRIC_GUARD_TIME_PER_TOKEN]
    assert per_token.sum == pytest.approx(0.0002)
    assert n.METRIC_CLIENT_OPERATION_DURATION not in pts  # local mode makes no upstream call


def test_upstream_call_span_and_propagation(otel: Otel) -> None:
    url = f"https://user:{API_KEY}@api.example.com:8443/v1/chat/completions?api_key={API_KEY}"
    with otel.tel.request(model="guarded-gpt", mode="upstream", stream=True, request_id="req-2",
                          params={"max_tokens": 10}) as rt:
        with rt.stage("prompt_scoring"):
            rt.decision("prompt_scoring", sample_allow(), score=0.1, concepts={})
        with rt.upstream_call("gpt-4o-mini", url):
            headers = rt.inject({})
            rt.first_token()
            rt.usage(5, 3)
            rt.upstream_response(status_code=200, response_id="up-1", response_model="gpt-4o-mini-2024",
                                 finish_reason="stop")
            with rt.stage("response_scoring"):
                rt.decision("response_scoring", sample_allow())
        rt.finish(finish_reason="stop", status_code=200)
    spans = otel.spans()
    root, up = spans["chat guarded-gpt"], spans["chat gpt-4o-mini"]
    assert up.kind == SpanKind.CLIENT and up.parent.span_id == root.context.span_id
    # response scoring opened inside the upstream call is still a direct child of the request span
    assert spans[n.SPAN_RESPONSE_SCORING].parent.span_id == root.context.span_id
    a = up.attributes
    assert a[n.GEN_AI_PROVIDER_NAME] == "openai" and a[n.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[n.SERVER_ADDRESS] == "api.example.com" and a[n.SERVER_PORT] == 8443
    assert a[n.GEN_AI_REQUEST_MAX_TOKENS] == 10 and a[n.SAFESAIL_STAGE] == "upstream"
    assert a[n.GEN_AI_RESPONSE_ID] == "up-1" and a[n.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024"
    assert a[n.GEN_AI_USAGE_OUTPUT_TOKENS] == 3 and a[n.HTTP_RESPONSE_STATUS_CODE] == 200
    assert root.attributes[n.GEN_AI_PROVIDER_NAME] == "safesail" and root.attributes[n.SAFESAIL_STREAM] is True
    assert headers["traceparent"].split("-")[2] == format(up.context.span_id, "016x")
    pts = otel.points()
    (client,) = pts[n.METRIC_CLIENT_OPERATION_DURATION]
    assert _attrs(client) == {n.GEN_AI_OPERATION_NAME: "chat", n.GEN_AI_PROVIDER_NAME: "openai",
                              n.GEN_AI_REQUEST_MODEL: "gpt-4o-mini", n.SERVER_ADDRESS: "api.example.com",
                              n.SERVER_PORT: 8443}
    assert {p.attributes[n.SAFESAIL_STAGE] for p in pts[n.METRIC_STAGE_DURATION]} == {
        "prompt_scoring", "upstream", "response_scoring"}


def test_upstream_error_status(otel: Otel) -> None:
    with otel.tel.request(model="m", mode="upstream", stream=False, request_id="r") as rt:
        with rt.upstream_call("up", "http://127.0.0.1:9/v1/chat/completions"):
            rt.upstream_response(status_code=429)
        rt.finish(finish_reason=None, status_code=502, error_type="upstream_error")
    spans = otel.spans()
    up, root = spans["chat up"], spans["chat m"]
    assert up.status.status_code == StatusCode.ERROR and up.attributes[n.ERROR_TYPE] == "429"
    assert up.attributes[n.SERVER_PORT] == 9
    assert root.status.status_code == StatusCode.ERROR and root.attributes[n.ERROR_TYPE] == "upstream_error"
    pts = otel.points()
    assert pts[n.METRIC_CLIENT_OPERATION_DURATION][0].attributes[n.ERROR_TYPE] == "429"
    (req,) = pts[n.METRIC_REQUESTS]
    assert req.attributes[n.ERROR_TYPE] == "upstream_error" and req.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 502
    assert req.attributes[n.SAFESAIL_ACTION] == "none"  # no decision was recorded


class Boom(RuntimeError):
    pass


def test_exception_marks_error_and_reraises(otel: Otel) -> None:
    with pytest.raises(Boom):
        with otel.tel.request(model="m", mode="local", stream=False, request_id="r") as rt:
            with rt.stage("prompt_scoring"):
                rt.decision("prompt_scoring", sample_allow())
            with rt.stage("generation"):
                rt.first_token()
                raise Boom(f"failed on {PROMPT}")
    spans = otel.spans()
    gen, root = spans[n.SPAN_GENERATION], spans["chat m"]
    for span in (gen, root):
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes[n.ERROR_TYPE] == "Boom"
        assert span.status.description == "Boom"
        assert not any(e.name == "exception" for e in span.events)  # messages may quote the prompt
    assert spans[n.SPAN_PROMPT_SCORING].status.status_code == StatusCode.UNSET
    assert root.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 500
    pts = otel.points()
    (req,) = pts[n.METRIC_REQUESTS]
    assert req.attributes[n.ERROR_TYPE] == "Boom" and req.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 500
    assert pts[n.METRIC_SERVER_REQUEST_DURATION][0].attributes[n.ERROR_TYPE] == "Boom"
    assert n.METRIC_SERVER_TIME_TO_FIRST_TOKEN not in pts  # only successful responses
    gen_point = [p for p in pts[n.METRIC_STAGE_DURATION] if p.attributes[n.SAFESAIL_STAGE] == "generation"]
    assert gen_point[0].attributes[n.ERROR_TYPE] == "Boom"


class Unauthorized(Exception):
    status_code = 401


def test_client_error_exception_is_not_a_span_error(otel: Otel) -> None:
    with pytest.raises(Unauthorized):
        with otel.tel.request(model="m", mode="local", stream=False, request_id="r"):
            raise Unauthorized()
    root = otel.spans()["chat m"]
    assert root.status.status_code == StatusCode.UNSET
    assert root.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 401 and root.attributes[n.ERROR_TYPE] == "401"
    (req,) = otel.points()[n.METRIC_REQUESTS]
    assert req.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 401 and req.attributes[n.ERROR_TYPE] == "401"


def test_finish_with_a_client_status_keeps_span_status_unset(otel: Otel) -> None:
    with otel.tel.request(model="m", mode="local", stream=True, request_id="r") as rt:
        rt.finish(finish_reason=None, status_code=499, error_type="client disconnected")
    root = otel.spans()["chat m"]
    assert root.status.status_code == StatusCode.UNSET and root.attributes[n.ERROR_TYPE] == "client disconnected"
    (req,) = otel.points()[n.METRIC_REQUESTS]
    assert req.attributes[n.ERROR_TYPE] == "client disconnected"


def test_unfinished_request_defaults_to_200_and_finish_counts_once(otel: Otel) -> None:
    with otel.tel.request(model="m", mode="local", stream=False, request_id="r1"):
        pass
    with otel.tel.request(model="m", mode="local", stream=False, request_id="r2") as rt:
        rt.finish(finish_reason="length", status_code=200)
        rt.finish(finish_reason="stop", status_code=500)
    spans = [s for s in otel.spans_out.get_finished_spans() if s.name == "chat m"]
    assert [s.attributes[n.HTTP_RESPONSE_STATUS_CODE] for s in spans] == [200, 200]
    assert tuple(spans[1].attributes[n.GEN_AI_RESPONSE_FINISH_REASONS]) == ("length",)
    (req,) = otel.points()[n.METRIC_REQUESTS]
    assert req.value == 2


def test_streaming_generator_closed_early(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    """A client that disconnects mid-stream closes the body generator: the span still ends, cleanly."""

    async def body():
        with otel.tel.request(model="m", mode="local", stream=True, request_id="r") as rt:
            with rt.stage("generation"):
                for i in range(10):
                    if i == 0:
                        rt.first_token()
                    yield f"chunk {i}"

    async def client() -> list[str]:
        got = []
        gen = body()
        async for chunk in gen:
            got.append(chunk)
            if len(got) == 2:
                break
        await gen.aclose()
        return got

    with caplog.at_level(logging.ERROR, logger="opentelemetry"):
        assert asyncio.run(client()) == ["chunk 0", "chunk 1"]
    assert not [r for r in caplog.records if "context" in r.getMessage().lower()]
    spans = otel.spans()
    root = spans["chat m"]
    assert root.attributes[n.ERROR_TYPE] == "GeneratorExit" and root.attributes[n.HTTP_RESPONSE_STATUS_CODE] == 499
    assert root.status.status_code == StatusCode.UNSET  # the client left; not a server error
    assert spans[n.SPAN_GENERATION].parent.span_id == spans["chat m"].context.span_id
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN


def test_request_entered_in_endpoint_and_left_in_stream_task(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    """The server's pattern: enter the request in the endpoint, leave it at the end of the streaming body, which
    Starlette runs in another task. The span must end there without OpenTelemetry's "Failed to detach" error."""

    async def endpoint() -> None:
        stack = contextlib.ExitStack()
        rt = stack.enter_context(otel.tel.request(model="m", mode="local", stream=True, request_id="r"))
        with rt.stage("prompt_scoring"):
            rt.decision("prompt_scoring", sample_allow())

        async def body() -> None:
            with stack:
                with rt.stage("generation"):
                    assert trace_api.get_current_span().name == n.SPAN_GENERATION
                    rt.first_token()
                rt.finish(finish_reason="stop", status_code=200)

        await asyncio.create_task(body())
        assert trace_api.get_current_span() is rt.span  # the endpoint's own context simply keeps it

    with caplog.at_level(logging.DEBUG, logger="opentelemetry"):
        asyncio.run(endpoint())
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]
    spans = otel.spans()
    assert set(spans) == {"chat m", n.SPAN_PROMPT_SCORING, n.SPAN_GENERATION}
    assert spans["chat m"].end_time is not None
    assert spans[n.SPAN_GENERATION].parent.span_id == spans["chat m"].context.span_id
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN


def test_incoming_traceparent_becomes_parent(otel: Otel) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otel.tel.request(model="m", mode="local", stream=False, request_id="r",
                          carrier={"traceparent": f"00-{trace_id}-{parent_id}-01"}) as rt:
        assert rt.trace_id == trace_id
    root = otel.spans()["chat m"]
    assert format(root.parent.span_id, "016x") == parent_id and root.parent.is_remote
    # a span already current (an HTTP server instrumentation's) stays the parent; the carrier is not re-read
    with otel.tracer_provider.get_tracer("http").start_as_current_span("GET /v1/chat/completions") as outer:
        with otel.tel.request(model="inner", mode="local", stream=False, request_id="r2",
                              carrier={"traceparent": f"00-{trace_id}-{parent_id}-01"}):
            pass
    assert otel.spans()["chat inner"].parent.span_id == outer.get_span_context().span_id


def test_no_text_or_key_in_any_telemetry(otel: Otel) -> None:
    """Prompt, response and API key go in through every door; none comes out in spans, events or metrics."""
    url = f"https://k:{API_KEY}@up.example/v1?key={API_KEY}"
    params = {"messages": [{"role": "user", "content": PROMPT}], "stop": [PROMPT], "user": PROMPT,
              "max_tokens": 5, "temperature": PROMPT}
    with pytest.raises(Boom):
        with otel.tel.request(model="m", mode="upstream", stream=False, request_id="r", params=params,
                              key_id="team-a", carrier={"baggage": "x=1", "authorization": API_KEY}) as rt:
            with rt.stage("prompt_scoring"):
                rt.decision("prompt_scoring", sample_decision(PROMPT + RESPONSE), concepts={"weapons": 0.9})
            with rt.upstream_call("up", url):
                rt.inject({"authorization": API_KEY})
                rt.upstream_response(status_code=200)
            with rt.stage("response_scoring"):
                rt.decision("response_scoring", sample_decision(RESPONSE))
                raise Boom(f"{PROMPT} {RESPONSE} {API_KEY}")
    needles = (PROMPT, PROMPT[:12], RESPONSE[:12], API_KEY)
    seen: list[str] = []
    for span in otel.spans_out.get_finished_spans():
        seen += [span.name, span.status.description or ""]
        seen += [repr(v) for v in span.attributes.values()]
        for event in span.events:
            seen += [event.name, *(repr(v) for v in event.attributes.values())]
    for points in otel.points().values():
        for p in points:
            seen += [repr(v) for v in p.attributes.values()]
    blob = "\n".join(seen)
    assert len(otel.spans_out.get_finished_spans()) == 4
    for needle in needles:
        assert needle not in blob


def _exercise(tel: GuardTelemetry) -> Any:
    with tel.request(model="m", mode="upstream", stream=True, request_id="r", params={"max_tokens": 3}) as rt:
        with rt.stage("prompt_scoring"):
            rt.decision("prompt_scoring", sample_decision(), score=0.9, concepts={"weapons": 0.9})
        with rt.upstream_call("up", "http://localhost:1/v1"):
            rt.first_token()
            rt.upstream_response(status_code=200)
            rt.inject({})
        rt.usage(1, 2)
        rt.guard_overhead(0.1, 3)
        rt.finish(finish_reason="stop", status_code=200)
    return rt


def test_no_sdk_is_a_silent_noop() -> None:
    """With no-op providers (what the API gives when no SDK is configured) every call works, nothing records."""
    rt = _exercise(GuardTelemetry(trace_api.NoOpTracerProvider(), metrics_api.NoOpMeterProvider()))
    assert rt.trace_id is None and not rt.recording
    _exercise(GuardTelemetry())  # the global API providers: no-op here unless something configured the SDK


def test_validation_errors_name_the_choices(otel: Otel) -> None:
    with pytest.raises(ValueError, match="local, upstream"):
        with otel.tel.request(model="m", mode="proxy", stream=False, request_id="r"):
            pass
    with otel.tel.request(model="m", mode="local", stream=False, request_id="r") as rt:
        with pytest.raises(ValueError, match="prompt_scoring, generation, upstream, response_scoring"):
            with rt.stage("scoring"):
                pass
        with pytest.raises(ValueError, match="upstream_call"):
            with rt.stage("upstream"):
                pass
        with pytest.raises(ValueError, match="valid stages"):
            rt.decision("final", None)
        with pytest.raises(RuntimeError, match="inside RequestTrace.upstream_call"):
            rt.upstream_response(status_code=200)


def test_decision_summary_of_none_and_of_a_decision_object() -> None:
    assert DecisionSummary.from_decision(None).action == "none"
    dec = Decision(action="flag", matches=(), refusal=None, steer=(), language=LanguageGuess("und", "Zyyy", 0.0))
    summary = DecisionSummary.from_decision(dec)
    assert summary.action == "flag" and summary.policy == "" and summary.language == "und"


def test_decision_with_no_policy_records_none(otel: Otel) -> None:
    with otel.tel.request(model="m", mode="local", stream=False, request_id="r") as rt:
        rt.decision("prompt_scoring", None, score=0.3)
    (event,) = otel.spans()["chat m"].events  # no stage open: the event goes on the request span
    assert event.attributes[n.SAFESAIL_ACTION] == "none" and event.attributes[n.SAFESAIL_SCORE] == 0.3
    (point,) = otel.points()[n.METRIC_DECISIONS]
    assert dict(point.attributes) == {n.SAFESAIL_ACTION: "none", n.SAFESAIL_STAGE: "prompt_scoring",
                                      n.SAFESAIL_MODE: "local", n.SAFESAIL_CONCEPT: "none"}


@pytest.mark.parametrize(("explanation", "expected"), [
    ('Fires on "self-injury" in self_harm / self_injury contexts, e.g. "...users know about self-injury?"',
     'Fires on "self-injury" in self_harm / self_injury contexts'),
    ('Fires on "detained", "trace", "traces" in politics / extremist_ideology contexts, e.g. "..."',
     'Fires on "detained", "trace", "traces" in politics…'),
    ('Fires on "a;b", "x. y" in hate / religious_hate; terror / radicalization contexts',
     'Fires on "a;b", "x. y" in hate / religious_hate'),
    ('Fires on text like "...abc..."', "Fires"),
    ("References to weapons. Also guns", "References to weapons"),
    ("multi\nline", "multi"),
    (None, ""),
    ("   ", ""),
])
def test_short_name(explanation: str | None, expected: str) -> None:
    got = short_name(explanation)
    assert got == expected
    assert len(got) <= 60


def test_short_name_of_one_long_word() -> None:
    assert short_name("x" * 100, max_chars=20) == "x" * 19 + "…"
