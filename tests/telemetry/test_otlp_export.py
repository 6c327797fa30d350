"""End to end over real OTLP/HTTP on loopback: configure_telemetry -> exporters -> `OTLPReceiver`."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import pytest

from safesail_guard.telemetry import GuardTelemetry, configure_telemetry
from safesail_guard.telemetry import names as n
from tests.telemetry.otlp_receiver import OTLPReceiver
from tests.telemetry.test_instruments import run_local_request


def test_traces_and_metrics_reach_the_receiver() -> None:
    with OTLPReceiver() as rx:
        handle = configure_telemetry(env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                                          "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
                                          "OTEL_SERVICE_NAME": "guard-under-test"}, set_global=False)
        try:
            tel = GuardTelemetry(handle.tracer_provider, handle.meter_provider)
            trace_id = run_local_request(tel)
            assert handle.force_flush(5000)
            assert rx.wait_for(lambda: len(rx.spans()) >= 4 and n.METRIC_REQUESTS in rx.metrics(), timeout=5)
        finally:
            handle.shutdown()
        assert not rx.errors

    spans = {s["name"]: s for s in rx.spans()}
    root = spans["chat smollm2"]
    assert root["kind"] == "SERVER" and root["parent_span_id"] is None and root["trace_id"] == trace_id
    assert root["resource"]["service.name"] == "guard-under-test" and root["scope"] == n.SCOPE
    assert root["attributes"][n.GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert root["attributes"][n.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    for name in (n.SPAN_PROMPT_SCORING, n.SPAN_GENERATION, n.SPAN_RESPONSE_SCORING):
        assert spans[name]["parent_span_id"] == root["span_id"] and spans[name]["kind"] == "INTERNAL"
    (event,) = spans[n.SPAN_PROMPT_SCORING]["events"]
    assert event["name"] == n.EVENT_DECISION
    assert event["attributes"][n.SAFESAIL_FEATURE_IDS] == ["14_1234", "14_77", "14_9"]
    assert event["attributes"][n.SAFESAIL_FEATURE_NORMALIZED] == [0.91, 0.42, 0.3]

    metrics = rx.metrics()
    (requests,) = metrics[n.METRIC_REQUESTS]
    assert requests["type"] == "sum" and requests["value"] == 1 and requests["unit"] == "{request}"
    assert requests["attributes"][n.SAFESAIL_ACTION] == "block"
    assert {p["attributes"][n.SAFESAIL_CONCEPT] for p in metrics[n.METRIC_DECISIONS]} == {"weapons", "drugs", "none"}
    (ttft,) = metrics[n.METRIC_SERVER_TIME_TO_FIRST_TOKEN]
    assert ttft["type"] == "histogram" and ttft["unit"] == "s" and ttft["count"] == 1
    assert tuple(ttft["explicit_bounds"]) == n.TTFT_BUCKETS
    assert {p["attributes"][n.GEN_AI_TOKEN_TYPE]: p["sum"] for p in metrics[n.METRIC_CLIENT_TOKEN_USAGE]} == {
        "input": 12, "output": 8}
    assert rx.requests[0].headers["content-type"] == "application/x-protobuf"


def test_gzip_headers_and_per_signal_endpoint() -> None:
    with OTLPReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.endpoint + "/v1/traces",
               "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
               "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team%20a,authorization=Bearer abc"}
        handle = configure_telemetry(env=env, set_global=False)
        try:
            assert handle.metrics == ()
            tel = GuardTelemetry(handle.tracer_provider, handle.meter_provider)
            with tel.request(model="m", mode="upstream", stream=True, request_id="r") as rt:
                with rt.upstream_call("up", "http://127.0.0.1:1/v1/chat/completions"):
                    pass
            assert handle.force_flush(5000)
            assert rx.wait_for(lambda: len(rx.spans()) == 2)
        finally:
            handle.shutdown()
    (req,) = rx.requests
    assert req.path == "/v1/traces" and req.headers["content-encoding"] == "gzip"
    assert req.headers["x-tenant"] == "team a" and req.headers["authorization"] == "Bearer abc"
    assert {s["kind"] for s in rx.spans()} == {"SERVER", "CLIENT"}
    assert rx.metrics() == {}


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_receiver_rejects_what_it_cannot_read() -> None:
    with OTLPReceiver() as rx:
        assert _post(rx.endpoint + "/v1/logs", b"", {"Content-Type": "application/x-protobuf"}) == 404
        assert _post(rx.endpoint + "/v1/traces", b"{}", {"Content-Type": "application/json"}) == 415
        bad = gzip.compress(b"\xff\xff\xff not protobuf")
        assert _post(rx.endpoint + "/v1/traces", bad,
                     {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}) == 400
        assert len(rx.errors) == 1 and rx.spans() == []
        assert _post(rx.endpoint + "/v1/metrics", b"", {"Content-Type": "application/x-protobuf"}) == 200
        assert rx.metrics() == {}
        rx.clear()
        assert rx.requests == [] and rx.errors == []


@pytest.mark.parametrize("latest", [True, False])
def test_metrics_latest_keeps_cumulative_totals(latest: bool) -> None:
    with OTLPReceiver() as rx:
        handle = configure_telemetry(env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
                                          "OTEL_TRACES_EXPORTER": "none"}, set_global=False)
        try:
            tel = GuardTelemetry(handle.tracer_provider, handle.meter_provider)
            for _ in range(2):
                with tel.request(model="m", mode="local", stream=False, request_id="r"):
                    pass
                handle.force_flush(5000)
            assert rx.wait_for(lambda: len(rx.requests) >= 2)
        finally:
            handle.shutdown()
    points = rx.metrics(latest=latest)[n.METRIC_REQUESTS]
    assert [p["value"] for p in points][-1] == 2
    assert len(points) == (1 if latest else 3)  # two flushes and the final export at shutdown
