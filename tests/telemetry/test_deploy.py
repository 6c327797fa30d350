"""deploy/otel and docs/observability.md: the files parse, fit together and name only what the guard emits.

Docker is not available in CI, so the stack itself is never started; these checks catch the mistakes that a
start would (undefined pipeline components, a scrape target on the wrong port, a dashboard query on a metric
that does not exist, an undocumented name).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from safesail_guard.telemetry import names as n

ROOT = Path(__file__).resolve().parents[2]
OTEL = ROOT / "deploy" / "otel"
DOC = ROOT / "docs" / "observability.md"

# Prometheus names of the guard's metrics as the collector's prometheus exporter writes them by default:
# dots -> underscores, unit "s" -> "_seconds", curly-brace units dropped, counters end in "_total".
PROMETHEUS = {
    "gen_ai_server_request_duration_seconds": n.METRIC_SERVER_REQUEST_DURATION,
    "gen_ai_server_time_to_first_token_seconds": n.METRIC_SERVER_TIME_TO_FIRST_TOKEN,
    "gen_ai_server_time_per_output_token_seconds": n.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN,
    "gen_ai_client_token_usage": n.METRIC_CLIENT_TOKEN_USAGE,
    "gen_ai_client_operation_duration_seconds": n.METRIC_CLIENT_OPERATION_DURATION,
    "safesail_requests_total": n.METRIC_REQUESTS,
    "safesail_decisions_total": n.METRIC_DECISIONS,
    "safesail_stage_duration_seconds": n.METRIC_STAGE_DURATION,
    "safesail_guard_duration_seconds": n.METRIC_GUARD_DURATION,
    "safesail_guard_time_per_token_seconds": n.METRIC_GUARD_TIME_PER_TOKEN,
}


def load(name: str) -> Any:
    return yaml.safe_load((OTEL / name).read_text())


def test_collector_pipelines_use_defined_components() -> None:
    cfg = load("collector.yaml")
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipelines = cfg["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipe[kind]:
                assert component in cfg[kind], f"{name}: {kind[:-1]} {component!r} is not defined"
        assert pipe["processors"][0] == "memory_limiter" and pipe["processors"][-1] == "batch"
    assert "otlp/jaeger" in pipelines["traces"]["exporters"]
    assert "prometheus" in pipelines["metrics"]["exporters"]
    for ext in cfg["service"]["extensions"]:
        assert ext in cfg["extensions"]
    dropped = {a["key"] for a in cfg["processors"]["attributes/drop_content"]["actions"]}
    assert {"gen_ai.input.messages", "gen_ai.output.messages"} <= dropped


def test_compose_wires_the_stack_on_loopback() -> None:
    compose = load("docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"otel-collector", "jaeger", "prometheus", "grafana"}
    for name, svc in services.items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), f"{name}: pin the image version"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (OTEL / source).exists(), f"{name} mounts missing {source}"
    collector = load("collector.yaml")
    assert "127.0.0.1:4318:4318" in services["otel-collector"]["ports"]
    jaeger_host = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in services
    prom_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    targets = [t for job in load("prometheus.yml")["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets == [f"otel-collector:{prom_port}"]


def test_grafana_provisioning_and_dashboard_queries() -> None:
    sources = load("grafana/provisioning/datasources/datasources.yaml")["datasources"]
    uids = {s["uid"] for s in sources}
    assert {"prometheus", "jaeger"} <= uids
    providers = load("grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((OTEL / "grafana/dashboards/safesail-guard.json").read_text())
    labels = {v.replace(".", "_") for k, v in vars(n).items() if k.isupper() and isinstance(v, str)}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
    for expr in exprs:
        for metric in re.findall(r"\b((?:safesail|gen_ai)_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[])", expr):
            assert metric in PROMETHEUS, f"dashboard queries unknown metric {metric!r}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label == "le" or label in labels, f"dashboard groups by unknown label {label!r}"


def _emitted_names() -> list[str]:
    return [v for k, v in vars(n).items() if k.isupper() and isinstance(v, str) and k != "SCOPE"
            and ("." in v or k.startswith(("STAGE_", "PROVIDER_", "OPERATION_", "TOKEN_TYPE_")))]


@pytest.mark.parametrize("name", _emitted_names())
def test_every_name_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC.read_text(), f"{name} is missing from docs/observability.md"


def test_doc_lists_prometheus_names_and_says_compose_was_not_run() -> None:
    text = DOC.read_text()
    for prom in PROMETHEUS:
        assert prom in text
    assert "not run in CI" in text
