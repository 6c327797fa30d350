"""The proxy's traces and metrics: in-memory for the span tree, and through a real OTLP/HTTP receiver."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tests.server.conftest import PROMPT, Harness, block_policy
from tests.server.live import LiveServer
from tests.telemetry.otlp_receiver import OTLPReceiver


def test_request_span_tree_events_and_metrics(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        body = c.post("/v1/chat/completions", json=h.chat(max_tokens=4),
                      headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}).json()
    spans = {s.name: s for s in h.spans.get_finished_spans()}
    root = spans[f"chat {h.model_id}"]
    assert root.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)  # the client's trace continues
    assert root.attributes["safesail.request_id"] == body["safesail"]["request_id"]
    assert root.attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    for stage in ("safesail.prompt_scoring", "safesail.generation"):
        assert spans[stage].parent.span_id == root.context.span_id
    events = [e for s in h.spans.get_finished_spans() for e in s.events if e.name == "safesail.decision"]
    assert len(events) == 2 and {e.attributes["safesail.action"] for e in events} == {"log"}
    assert all(PROMPT not in str(dict(e.attributes)) for e in events)
    names = {m.name for rm in h.metrics.get_metrics_data().resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"safesail.requests", "safesail.decisions", "gen_ai.server.request.duration",
            "safesail.guard.duration"} <= names


def test_traces_and_metrics_reach_a_real_otlp_receiver(server_guard, tmp_path, prompt_feature):
    from safesail_guard.telemetry import GuardTelemetry, configure_telemetry

    with OTLPReceiver() as rx:
        handle = configure_telemetry(env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                                          "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}, set_global=False)
        h = Harness(server_guard, tmp_path, block_policy(prompt_feature))
        from safesail_guard.server import create_app

        from safesail_guard.server.auth import KeyStore

        app = create_app(h.config, guarded=h.guarded, audit=h.audit,
                         telemetry=GuardTelemetry(handle.tracer_provider, handle.meter_provider), keys=KeyStore([]))
        with LiveServer(app) as s:
            r = httpx.post(f"{s.url}/v1/chat/completions", json={**h.chat(), "stream": True}, timeout=30)
            assert r.status_code == 200
        handle.force_flush()
        assert rx.wait_for(lambda: any(sp["name"].startswith("chat ") for sp in rx.spans()), timeout=10)
        spans = rx.spans()
        root = next(sp for sp in spans if sp["name"].startswith("chat "))
        assert root["kind"] == "SERVER" and root["attributes"]["safesail.stream"] is True
        decisions = [e for sp in spans for e in sp["events"] if e["name"] == "safesail.decision"]
        assert decisions and decisions[0]["attributes"]["safesail.action"] == "block"
        assert prompt_feature in decisions[0]["attributes"]["safesail.feature.ids"]
        assert rx.wait_for(lambda: "safesail.decisions" in rx.metrics(), timeout=10)
        handle.shutdown()
        h.audit.close()
