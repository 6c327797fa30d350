"""Fixtures for the proxy: a tiny random Llama with a real (random-init) SAE database, and app builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


PROMPT = "Explain how vaccines work, and bake bread with flour and yeast."

ALLOW_POLICY = """
version: 1
name: watch
rules:
  - name: any_feature
    action: log
    when:
      select: {layers: [0, 2]}
      min_activation: 0.000001
"""


def block_policy(feature_id: str, scope: str = "prompt") -> str:
    """Block as soon as ``feature_id`` fires in ``scope``."""
    return f"""
version: 1
name: blocker
defaults: {{refusal_message: "Refused by the test policy."}}
rules:
  - name: stop_it
    action: block
    when:
      select: {{features: ["{feature_id}"]}}
      scope: {scope}
      min_activation: 0.000001
"""


@pytest.fixture(scope="session")
def server_guard(llama_guard):
    """The guard the proxy tests serve (the shared tiny-Llama guard)."""
    return llama_guard


@pytest.fixture(scope="session")
def prompt_feature(server_guard) -> str:
    """A feature that fires on PROMPT's user text (so a policy can block PROMPT)."""
    res = server_guard.scan(PROMPT)
    hits = [h.feature_id for t in res.tokens if t.content for h in t.hits]
    assert hits, "some feature should fire on the prompt"
    return hits[0]


def openai_error(r: Any, status: int, param: str | None = None) -> dict[str, Any]:
    """Check ``r`` is an OpenAI-style error with ``status`` (and ``param``); returns the error object."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


class Harness:
    """An app over the tiny guard with an audit log and in-memory telemetry."""

    def __init__(self, guard: Any, tmp: Path, policy: str = ALLOW_POLICY, *, keys: Any = None,
                 mode: str = "local", upstream_url: str | None = None, upstream_model: str | None = None,
                 upstream_timeout_s: float = 30.0, **limits: Any) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from safesail_guard.audit import AuditConfig, AuditLog
        from safesail_guard.runtime.generation import GuardedModel
        from safesail_guard.server import Limits, ServerConfig, create_app
        from safesail_guard.server.auth import KeyStore
        from safesail_guard.telemetry import GuardTelemetry

        self.spans = InMemorySpanExporter()
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        mp = MeterProvider(metric_readers=[self.metrics])
        self.audit = AuditLog(AuditConfig(path=tmp / "audit.sqlite", store_text="full", retention_days=None))
        self.guarded = GuardedModel(guard, policy)
        lim = {"default_max_tokens": 8, "max_tokens": 64, **limits}
        self.config = ServerConfig(limits=Limits(**lim), audit=AuditConfig(path=tmp / "audit.sqlite"), mode=mode,
                                   upstream_url=upstream_url, upstream_model=upstream_model,
                                   upstream_api_key_env="SAFESAIL_TEST_UPSTREAM_KEY",
                                   upstream_timeout_s=upstream_timeout_s)
        self.app = create_app(self.config, guarded=self.guarded, audit=self.audit,
                              telemetry=GuardTelemetry(tp, mp), keys=keys if keys is not None else KeyStore([]))
        self.model_id = guard.model_name

    def chat(self, **kw: Any) -> dict[str, Any]:
        body = {"model": self.model_id, "messages": [{"role": "user", "content": PROMPT}], **kw}
        return body


@pytest.fixture
def harness_factory(server_guard, tmp_path):
    made: list[Harness] = []

    def make(policy: str = ALLOW_POLICY, **kw: Any) -> Harness:
        h = Harness(server_guard, tmp_path / f"h{len(made)}", policy, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.audit.close()
