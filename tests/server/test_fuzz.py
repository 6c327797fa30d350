"""Fuzz the proxy's OpenAPI schema with schemathesis (valid and invalid inputs): no request may get a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.server.conftest import ALLOW_POLICY, Harness
from tests.server.live import LiveServer


@pytest.fixture(scope="module")
def live_api(server_guard, tmp_path_factory):
    h = Harness(server_guard, tmp_path_factory.mktemp("fuzz"), ALLOW_POLICY, max_tokens=16, default_max_tokens=4,
                max_body_bytes=65_536)
    with LiveServer(h.app) as s:
        yield s
    h.audit.close()


OPERATIONS = ["GET /healthz", "GET /readyz", "GET /v1/models", "GET /v1/models/{model_id}",
              "POST /v1/chat/completions", "POST /v1/safesail/score",
              # the dashboard's read-only APIs (server/ui_routes.py)
              "GET /v1/safesail/info", "GET /v1/safesail/map", "GET /v1/safesail/features",
              "GET /v1/safesail/features/{feature_id}", "GET /v1/safesail/audit"]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(live_api, mode):
    """Every operation of the OpenAPI schema, schema-valid and schema-violating inputs: never a 5xx, and every
    4xx JSON body is an OpenAI error."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    ops = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}
    assert sorted(ops) == sorted(OPERATIONS)  # the schema documents every route
    gen_mode = schemathesis.GenerationMode.POSITIVE if mode == "positive" else schemathesis.GenerationMode.NEGATIVE
    seen: list[int] = []
    fuzzed: list[str] = []
    for name, op in ops.items():
        @given(case=op.as_strategy(generation_mode=gen_mode))
        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def run(case):
            response = case.call(base_url=live_api.url, timeout=60)
            seen.append(response.status_code)
            assert response.status_code < 500, (name, case.body, response.status_code, response.text[:500])
            ctype = response.headers.get("content-type") or [""]
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            if response.status_code >= 400 and ctype.startswith("application/json"):
                err = response.json()["error"]
                assert err["message"] and err["type"]

        try:
            run()
        except Unsatisfiable:  # an operation without inputs has no invalid input to generate
            assert mode == "negative" and name.startswith("GET"), name  # nothing to violate in its inputs
            continue
        fuzzed.append(name)
    assert {"POST /v1/chat/completions", "POST /v1/safesail/score"} <= set(fuzzed)
    assert len(seen) >= 40 and any(s >= 400 for s in seen)
