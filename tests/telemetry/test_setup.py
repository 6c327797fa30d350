"""`configure_telemetry`: exporters, endpoints, resource and sampler from OTEL_* variables (never global here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from safesail_guard import __version__
from safesail_guard.telemetry import GuardTelemetry, TelemetryConfigError, TelemetryHandle, configure_telemetry
from safesail_guard.telemetry import names as n
from safesail_guard.telemetry.setup import _otlp_options, otlp_endpoint

LOCAL = "http://127.0.0.1:9"  # discard port: nothing is sent in these tests (no span is ended before shutdown)


@pytest.fixture
def configure() -> Iterator:
    """configure_telemetry(set_global=False) that shuts every handle down after the test."""
    handles: list[TelemetryHandle] = []

    def make(env: dict[str, str], **kw) -> TelemetryHandle:
        handle = configure_telemetry(env=env, set_global=False, **kw)
        handles.append(handle)
        return handle

    yield make
    for h in handles:
        h.shutdown()


def test_default_is_off(configure) -> None:
    before = trace_api.get_tracer_provider(), metrics_api.get_meter_provider()
    h = configure({})
    assert isinstance(h.tracer_provider, trace_api.NoOpTracerProvider)
    assert isinstance(h.meter_provider, metrics_api.NoOpMeterProvider)
    assert h.traces == () and h.metrics == () and not h.is_global
    assert "telemetry: off" in h.describe() and "OTEL_EXPORTER_OTLP_ENDPOINT" in h.describe()
    assert (trace_api.get_tracer_provider(), metrics_api.get_meter_provider()) == before
    assert h.force_flush()


def test_sdk_disabled_wins(configure) -> None:
    h = configure({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL,
                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert h.disabled and isinstance(h.tracer_provider, trace_api.NoOpTracerProvider)
    assert h.describe() == "telemetry: disabled (OTEL_SDK_DISABLED=true)"


def test_console_traces_only(configure) -> None:
    h = configure({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(h.tracer_provider, TracerProvider)
    assert isinstance(h.meter_provider, metrics_api.NoOpMeterProvider)
    assert [t.name for t in h.traces] == ["console"] and h.metrics == ()
    assert h.describe() == "telemetry: service safesail-guard; traces -> console; metrics -> off"


def test_base_endpoint_turns_on_both_signals(configure) -> None:
    h = configure({"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL + "/", "OTEL_METRIC_EXPORT_INTERVAL": "15000"})
    assert isinstance(h.tracer_provider, TracerProvider) and isinstance(h.meter_provider, MeterProvider)
    assert [t.endpoint for t in h.traces] == [LOCAL + "/v1/traces"]
    assert [t.endpoint for t in h.metrics] == [LOCAL + "/v1/metrics"]
    assert h.metric_interval_ms == 15000
    assert h.describe() == (f"telemetry: service safesail-guard; traces -> otlp {LOCAL}/v1/traces; "
                            f"metrics -> otlp {LOCAL}/v1/metrics every 15s")


def test_signal_endpoint_is_used_as_given_and_only_for_its_signal(configure) -> None:
    h = configure({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": LOCAL + "/custom/path"})
    assert [t.endpoint for t in h.traces] == [LOCAL + "/custom/path"]
    assert h.metrics == () and isinstance(h.meter_provider, metrics_api.NoOpMeterProvider)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://b/m"}
    assert otlp_endpoint(env, "traces") == "http://a:4318/v1/traces"
    assert otlp_endpoint(env, "metrics") == "http://b/m"
    assert otlp_endpoint({}, "traces") == "http://localhost:4318/v1/traces"


def test_exporter_lists(configure) -> None:
    h = configure({"OTEL_TRACES_EXPORTER": "otlp, console,otlp", "OTEL_METRICS_EXPORTER": "none",
                   "OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL})
    assert [t.name for t in h.traces] == ["otlp", "console"]
    assert h.metrics == ()  # "none" overrides the endpoint default


@pytest.mark.parametrize(("env", "match"), [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter 'jaeger'; valid values: otlp, console, none"),
    ({"OTEL_METRICS_EXPORTER": "prometheus"}, "valid values: otlp, console, none"),
    ({"OTEL_TRACES_EXPORTER": "none,console"}, "'none' cannot be combined"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not supported.*gRPC exporter is not installed.*http/protobuf"),
    ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}, "http/protobuf only"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "not an http\\(s\\) URL"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL, "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "valid: none, deflate, gzip"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL, "OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "not a number of milliseconds"),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"}, "valid: always_on"),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
     "ratio in \\[0, 1\\]"),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_RESOURCE_ATTRIBUTES": "team"}, "'team' is not key=value"),
])
def test_config_errors_say_what_is_valid(configure, env: dict[str, str], match: str) -> None:
    with pytest.raises(TelemetryConfigError, match=match):
        configure(env)


def test_grpc_protocol_is_ignored_when_no_otlp_exporter_is_used(configure) -> None:
    h = configure({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "console"})
    assert [t.name for t in h.traces] == ["console"]
    h = configure({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": LOCAL})
    assert [t.name for t in h.traces] == ["otlp"]  # the per-signal value wins


def test_otlp_options_headers_timeout_compression() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL, "OTEL_EXPORTER_OTLP_HEADERS": "x-a=1,authorization=Bearer%20t",
           "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-m=2", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"}
    traces, target = _otlp_options(env, "traces")
    assert traces["headers"] == {"x-a": "1", "authorization": "Bearer t"}
    assert traces["timeout"] == 2.5  # milliseconds in the variable, seconds for the exporter
    assert traces["compression"].value == "gzip" and target.describe() == f"otlp {LOCAL}/v1/traces (gzip)"
    metrics, _ = _otlp_options(env, "metrics")
    assert metrics["headers"] == {"x-m": "2"} and metrics["compression"].value == "none"


def test_otlp_headers_accept_what_the_sdk_accepts() -> None:
    """Own parser (it refuses malformed entries without printing them: tests/redteam/test_secrets.py); the
    forms the SDK's liberal parser reads still work: spaces around entries and in values, percent-encoding."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": LOCAL,
           "OTEL_EXPORTER_OTLP_HEADERS": " X-Team = a b ,Authorization=Bearer%20t%2Cu,, x-empty= "}
    options, _ = _otlp_options(env, "traces")
    assert options["headers"] == {"x-team": "a b", "authorization": "Bearer t,u", "x-empty": ""}
    with pytest.raises(TelemetryConfigError, match=r"OTEL_EXPORTER_OTLP_HEADERS: entry 2 of 2 \(header 'x-b'\)"):
        _otlp_options({**env, "OTEL_EXPORTER_OTLP_HEADERS": "x-a=1,x-b=%0A"}, "traces")


def test_describe_never_shows_credentials_or_headers(configure) -> None:
    h = configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:s3cret@collector.example:4318",
                   "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret"})
    line = h.describe()
    assert "s3cret" not in line and "collector.example:4318/v1/traces" in line


def test_resource_from_env(configure) -> None:
    h = configure({"OTEL_TRACES_EXPORTER": "console",
                   "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,service.name=ignored,"
                                               "team=safety%20team"})
    attrs = h.tracer_provider.resource.attributes
    assert attrs["service.name"] == "ignored"  # OTEL_RESOURCE_ATTRIBUTES beats the code default...
    assert attrs["service.version"] == __version__ and attrs["team"] == "safety team"
    assert attrs["deployment.environment.name"] == "staging" and attrs["telemetry.sdk.language"] == "python"
    h = configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "guard-eu",
                   "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,service.version=9"})
    attrs = h.tracer_provider.resource.attributes
    assert attrs["service.name"] == "guard-eu" and attrs["service.version"] == "9"  # ...and OTEL_SERVICE_NAME both
    assert h.service_name == "guard-eu"
    h = configure({"OTEL_TRACES_EXPORTER": "console"}, service_name="custom")
    assert h.tracer_provider.resource.attributes["service.name"] == "custom"


def test_sampler_from_env(configure) -> None:
    h = configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_off"})
    tel = GuardTelemetry(h.tracer_provider, h.meter_provider)
    with tel.request(model="m", mode="local", stream=False, request_id="r") as rt:
        assert not rt.recording
    h = configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                   "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert "0.25" in h.tracer_provider.sampler.get_description()


def test_explicit_exporter_and_reader_feed_guard_telemetry(configure) -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    h = configure({}, span_exporter=spans, metric_reader=reader)
    assert h.describe().startswith("telemetry: off")  # no env destination; the test's own are not banner news
    tel = GuardTelemetry(h.tracer_provider, h.meter_provider)
    with tel.request(model="m", mode="local", stream=False, request_id="r") as rt:
        rt.finish(finish_reason="stop", status_code=200)
    assert [s.name for s in spans.get_finished_spans()] == ["chat m"]
    assert spans.get_finished_spans()[0].resource.attributes["service.name"] == "safesail-guard"
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {n.METRIC_REQUESTS, n.METRIC_SERVER_REQUEST_DURATION} <= names
    assert h.force_flush()
    h.shutdown()
    h.shutdown()  # idempotent
