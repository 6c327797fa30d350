"""Red team: API keys, the upstream key and credentials in configured URLs never reach logs, the audit log,
traces, metrics or error messages.

Each secret is a distinct marker string; a test pushes it in through every door it has (configuration, request
headers, URLs) and then looks for it, and for pieces of it, everywhere the guard writes: the audit log's
SQLite files as raw bytes, every exported span (name, status, attributes, events), every metric point's
attributes, every log record, the CLI's stdout/stderr and the HTTP responses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safesail_guard.cli import app as cli_app
from safesail_guard.telemetry import TelemetryConfigError, configure_telemetry

CLIENT_KEY = "sk-client-RT7f3a9c1e5b2d48"
WRONG_KEY = "sk-wrong-RT0c6d2e8f4a1b93"
UPSTREAM_KEY = "sk-upstream-RT9e1d7c3b5a2f60"
URL_SECRET = "urlpass-RT4b8d2f6a0c9e71"
OTLP_SECRET = "otlp-token-RT5c1e9a7d3b8f24"
SECRETS = (CLIENT_KEY, WRONG_KEY, UPSTREAM_KEY, URL_SECRET, OTLP_SECRET)


def _pieces(secret: str) -> list[str]:
    """The secret and its distinctive tail (a leak may cut or re-prefix it)."""
    return [secret, secret.split("-RT")[1]]


def assert_no_secret(where: str, blob: str | bytes) -> None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for secret in SECRETS:
        for piece in _pieces(secret):
            assert piece not in text, f"{where} leaks {piece!r}"


def _log_blob(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)


# -- OTLP headers and endpoints (telemetry/setup.py) --------------------------------------------------------------
MALFORMED_HEADERS = [
    f"Bearer {OTLP_SECRET}",                               # the name= part forgotten: the whole entry is the key
    f"x-team=a,{OTLP_SECRET}",                             # a second entry without '='
    f"api key={OTLP_SECRET}",                              # a space in the name
    f"authorization=Bearer {OTLP_SECRET}\x01",             # a control character in the value
    f"authorization=Bearer%0D%0A{OTLP_SECRET}",            # CR LF once percent-decoded (header injection)
    f"authorization=%FF{OTLP_SECRET}",                     # percent-encoding that is not UTF-8
]


@pytest.mark.parametrize("headers", MALFORMED_HEADERS, ids=range(len(MALFORMED_HEADERS)))
@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"])
def test_malformed_otlp_header_is_an_error_that_never_shows_the_value(
        headers: str, variable: str, no_otel_env: None, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The SDK's own parser skips a malformed entry with a warning that prints it, key and all."""
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", variable: headers}
    with caplog.at_level(logging.DEBUG):
        try:
            handle = configure_telemetry(env=env, set_global=False)
        except TelemetryConfigError as exc:
            message = str(exc)
        else:
            handle.shutdown()
            pytest.fail("a malformed OTLP header was accepted")
    assert message.startswith(f"{variable}: entry ") and "not shown" in message
    assert_no_secret("the error message", message)
    assert_no_secret("the log", _log_blob(caplog))
    out = capsys.readouterr()
    assert_no_secret("stdout/stderr", out.out + out.err)


def test_otlp_endpoint_credentials_are_not_in_the_banner_or_errors(no_otel_env: None) -> None:
    endpoint = f"https://ingest:{URL_SECRET}@collector.example:4318/v1/traces?api_key={OTLP_SECRET}&tenant=a"
    handle = configure_telemetry(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}, set_global=False)
    try:
        line = handle.describe()
    finally:
        handle.shutdown()
    assert "otlp https://collector.example:4318/v1/traces?api_key=...&tenant=..." in line
    assert_no_secret("the banner", line)
    for bad in (f"ftp://u:{URL_SECRET}@collector.example/?token={OTLP_SECRET}",   # not http(s)
                f"http://u:{URL_SECRET}@collector.example:99999/?token={OTLP_SECRET}",  # port out of range
                f"http://u:{URL_SECRET}@[::1/?token={OTLP_SECRET}"):  # unparsable
        with pytest.raises(TelemetryConfigError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") as err:
            configure_telemetry(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": bad}, set_global=False)
        assert_no_secret("the endpoint error", str(err.value))


def test_serve_with_a_malformed_otlp_header_prints_one_line_without_the_value(
        no_otel_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("the server started"))
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": f"Bearer {OTLP_SECRET}"}
    res = CliRunner().invoke(cli_app, ["serve", "--audit-db", str(tmp_path / "audit.sqlite")], env=env)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert res.stderr.startswith("error: OTEL_EXPORTER_OTLP_HEADERS: entry 1 of 1 is not name=value")
    assert_no_secret("serve's output", res.stdout + res.stderr)


# -- the proxy end to end: keys, upstream key and upstream URL credentials ---------------------------------------
@pytest.fixture
def upstream() -> Iterator[Any]:
    from tests.fakes.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def redacted_http_logs() -> Iterator[None]:
    """What `safesail serve` installs on the HTTP client's loggers (removed afterwards)."""
    from safesail_guard.cli.serve import REDACTED_LOGGERS, RedactUrlCredentials, redact_url_credentials_in_logs

    redact_url_credentials_in_logs()
    yield
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, RedactUrlCredentials)]:
            logger.removeFilter(f)


def _telemetry_blob(harness: Any) -> str:
    seen: list[str] = []
    for span in harness.spans.get_finished_spans():
        seen += [span.name, span.status.description or "", *(repr(v) for v in span.attributes.values())]
        for event in span.events:
            seen += [event.name, *(repr(v) for v in event.attributes.values())]
    data = harness.metrics.get_metrics_data()
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                seen += [repr(dict(p.attributes)) for p in metric.data.data_points]
    return "\n".join(seen)


def _audit_bytes(path: Path) -> bytes:
    """The audit log's files as raw bytes: the main file and, while the log is open, its WAL."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_proxy_never_leaks_keys_or_upstream_credentials(
        llama_guard: Any, upstream: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, redacted_http_logs: None) -> None:
    from safesail_guard.server.auth import KeyStore
    from tests.fakes.fake_openai import Reply, chat_body, stream_events
    from tests.server.conftest import Harness

    monkeypatch.setenv("SAFESAIL_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    keys = KeyStore.load(None, "SAFESAIL_RT_KEYS", environ={"SAFESAIL_RT_KEYS": f"alice: {CLIENT_KEY}"})
    made = {name: Harness(llama_guard, tmp_path / name, keys=keys, mode="upstream", upstream_url=url,
                          upstream_model="big-model")
            for name, url in (("plain", upstream.base_url), ("dead", "http://127.0.0.1:1/v1"))}
    upstream.script(Reply(json=chat_body("Mix flour and water, then bake.", model="big-model")),
                    Reply(sse=stream_events(["Knead ", "the dough."], model="big-model")))
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    body = {**made["plain"].chat(), "model": "big-model"}
    responses = []
    with caplog.at_level(logging.DEBUG):
        with TestClient(made["plain"].app) as c:
            responses.append(c.post("/v1/chat/completions", json=body, headers=auth))
            responses.append(c.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth))
            responses.append(c.post("/v1/chat/completions", json=body,
                                    headers={"Authorization": f"Bearer {WRONG_KEY}"}))
            responses.append(c.post("/v1/chat/completions", json=body, headers={"Authorization": WRONG_KEY}))
            responses.append(c.get("/v1/models", headers={"Authorization": f"Basic {WRONG_KEY}"}))
            responses.append(c.post("/v1/safesail/score", json={"items": [{"id": 1, "text": "bake bread"}]},
                                    headers=auth))
        with TestClient(made["dead"].app) as c:
            responses.append(c.post("/v1/chat/completions", json=body, headers=auth))
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 401, 401, 401, 200, 502], statuses

    # the proxy authenticated to the upstream with the upstream key, and never forwarded the client's key
    sent = upstream.requests
    assert len(sent) == 2 and [r.headers["authorization"] for r in sent[:2]] == [f"Bearer {UPSTREAM_KEY}"] * 2
    assert all(CLIENT_KEY not in repr(r.headers) for r in sent)

    for i, r in enumerate(responses):
        assert_no_secret(f"response {i} ({r.status_code})", r.text + repr(dict(r.headers)))
    rows = made["plain"].audit.query(limit=None)
    assert rows and {row.key_id for row in rows} == {"alice"}  # the key's id, never the key
    for name, harness in made.items():
        assert_no_secret(f"the audit log's SQLite files ({name})", _audit_bytes(harness.audit.path))
        assert_no_secret(f"the audit rows ({name})", repr([row.to_dict() for row in harness.audit.query(limit=None)]))
        assert_no_secret(f"spans and metrics ({name})", _telemetry_blob(harness))
        harness.audit.close()
    upstream_lines = [r.getMessage() for r in caplog.records if r.name == "httpx" and "127.0.0.1" in r.getMessage()]
    assert len(upstream_lines) >= 2, "expected the HTTP client's request lines for the upstream calls"
    assert_no_secret("the log", _log_blob(caplog))


@pytest.mark.parametrize("url", [f"http://gateway:{URL_SECRET}@127.0.0.1:1/v1", f"https://{URL_SECRET}@host/v1"])
def test_upstream_url_with_credentials_is_refused_without_repeating_them(url: str) -> None:
    """Credentials in the URL would silently replace the bearer key (Basic auth) and reach log lines."""
    from pydantic import ValidationError

    from safesail_guard.server.config import ServerConfig

    with pytest.raises(ValidationError, match="must not carry credentials") as err:
        ServerConfig(mode="upstream", upstream_url=url)
    assert_no_secret("the configuration error", str(err.value))
