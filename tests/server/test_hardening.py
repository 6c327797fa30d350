"""Bad and hostile input: OpenAI-style 4xx naming the field, never a 5xx; keys; size, token and queue limits."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import PROMPT
from tests.server.conftest import openai_error as _err




BAD_BODIES = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "M"}, "messages"),
    ({"model": "M", "messages": []}, "messages"),
    ({"model": "M", "messages": "hello"}, "messages"),
    ({"model": "M", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": "M", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "M", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "M", "messages": [{"role": "user", "content": ""}]}, "messages"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e308 * 10}, None),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    ({"model": "M", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type"),
    ({"model": "M", "messages": [{"role": "user", "content": "a\x00b"}]}, "messages"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "safesail": {"steer": [{"feature_id": "x", "op": "melt", "value": 1}]}}, "safesail.steer[0].op"),
]


@pytest.mark.parametrize("body,param", BAD_BODIES)
def test_bad_bodies_get_400_naming_the_field(harness_factory, body, param):
    h = harness_factory()
    if body.get("model") == "M":
        body = {**body, "model": h.model_id}
    with TestClient(h.app) as c:
        import json

        r = c.post("/v1/chat/completions", content=json.dumps(body, allow_nan=True),
                   headers={"Content-Type": "application/json"})
    _err(r, 400, param)


def test_malformed_bytes_are_400s(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        for raw in (b"", b"{", b"[1, 2]", b"\xff\xfe{}", b'"str"', b"null", b"{" * 100_000):
            r = c.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (raw[:10], r.status_code, r.text)


def test_unknown_model_is_404_and_unknown_route_is_openai_error(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "gpt-9"})
        _err(r, 404, "model")
        assert r.json()["error"]["code"] == "model_not_found"
        _err(c.get("/v1/nothing"), 404)
        _err(c.get("/v1/chat/completions"), 405)


def test_body_size_limit_is_413(harness_factory):
    h = harness_factory(max_body_bytes=2048)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "messages": [{"role": "user", "content": "x" * 5000}]})
    _err(r, 413)


def test_prompt_token_limit_is_400(harness_factory):
    h = harness_factory(max_prompt_tokens=16)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "messages": [{"role": "user", "content": PROMPT * 3}]})
    assert _err(r, 400, "messages")["code"] == "context_length_exceeded"


def test_api_keys_are_required_and_compared(harness_factory, tmp_path):
    from safesail_guard.server.auth import KeyStore

    f = tmp_path / "keys.txt"
    f.write_text("# team keys\nalice: sk-alice-0123456789abcdef\nsk-anon-0123456789abcdef\n")
    keys = KeyStore.load(f, env_var=None)
    h = harness_factory(keys=keys)
    with TestClient(h.app) as c:
        _err(c.get("/v1/models"), 401)
        _err(c.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-0123456789abcdef"}), 401)
        _err(c.get("/v1/models", headers={"Authorization": "Basic abc"}), 401)
        ok = c.post("/v1/chat/completions", json=h.chat(max_tokens=2),
                    headers={"Authorization": "Bearer sk-alice-0123456789abcdef"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200  # health needs no key
    row = h.audit.query(request_id=ok.json()["safesail"]["request_id"])[0]
    assert row.key_id == "alice"
    dump = str([r.to_dict() for r in h.audit.query(limit=None)])
    assert "sk-alice" not in dump
    assert KeyStore.load(None, "K", {"K": "sk-anon-0123456789abcdef"}).check("Bearer sk-anon-0123456789abcdef").startswith("key-")


def test_key_file_errors_are_clear(tmp_path):
    from safesail_guard.server.auth import KeyConfigError, KeyStore

    f = tmp_path / "k.txt"
    f.write_text("short\n")
    with pytest.raises(KeyConfigError, match="k.txt:1"):
        KeyStore.load(f, env_var=None)
    with pytest.raises(KeyConfigError, match="cannot read"):
        KeyStore.load(tmp_path / "missing.txt", env_var=None)


def test_queue_full_is_429_with_retry_after():
    from safesail_guard.server.errors import APIError
    from safesail_guard.server.limits import Admission

    async def run() -> None:
        adm = Admission(max_concurrent=1, max_queue=1)
        gate = asyncio.Event()

        async def hold() -> None:
            async with adm.slot(time.monotonic() + 5):
                await gate.wait()

        t1 = asyncio.create_task(hold())
        t2 = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        assert adm.active == 1 and adm.waiting == 1
        with pytest.raises(APIError) as e:
            async with adm.slot(time.monotonic() + 5):
                pass
        assert e.value.status == 429 and int(e.value.headers["Retry-After"]) >= 1
        gate.set()
        await asyncio.gather(t1, t2)
        assert adm.active == 0 and adm.waiting == 0
        async with adm.slot(time.monotonic() + 5):  # free again
            pass

    asyncio.run(run())


def test_a_burst_cannot_overfill_the_queue():
    """All requests arrive before any of them reaches the semaphore: still at most slots + queue get in."""
    from safesail_guard.server.errors import APIError
    from safesail_guard.server.limits import Admission

    async def run() -> None:
        adm = Admission(max_concurrent=1, max_queue=2)
        gate = asyncio.Event()
        statuses: list[int] = []

        async def one() -> None:
            try:
                async with adm.slot(time.monotonic() + 5):
                    await gate.wait()
                statuses.append(200)
            except APIError as e:
                statuses.append(e.status)

        tasks = [asyncio.create_task(one()) for _ in range(8)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*tasks)
        assert sorted(statuses) == [200] * 3 + [429] * 5

    asyncio.run(run())


def test_queue_wait_past_deadline_is_504():
    from safesail_guard.server.errors import APIError
    from safesail_guard.server.limits import Admission

    async def run() -> None:
        adm = Admission(1, 4)
        async with adm.slot(time.monotonic() + 5):
            with pytest.raises(APIError) as e:
                async with adm.slot(time.monotonic() + 0.05):
                    pass
        assert e.value.status == 504 and adm.waiting == 0

    asyncio.run(run())


def test_timeout_during_generation_is_504_and_frees_the_slot(harness_factory):
    h = harness_factory(request_timeout_s=0.01)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat(max_tokens=64))
        assert r.status_code == 504, r.text
        st = h.app.state.safesail
        assert st.admission.active == 0


def test_non_loopback_bind_without_keys_is_refused():
    from typer.testing import CliRunner

    from safesail_guard.cli import app

    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"SAFESAIL_API_KEYS": ""})
    assert r.exit_code == 2 and "API keys" in r.output


def test_running_server_applies_audit_retention(server_guard, tmp_path, monkeypatch):
    from safesail_guard.audit import AuditConfig, AuditLog, AuditRecord
    from safesail_guard.runtime.generation import GuardedModel
    from safesail_guard.server import ServerConfig, app as app_module, create_app
    from safesail_guard.server.auth import KeyStore

    monkeypatch.setattr(app_module, "RETENTION_EVERY_S", 0.05)
    cfg = AuditConfig(path=tmp_path / "a.sqlite", retention_days=1)
    log = AuditLog(cfg)
    old = log.append(AuditRecord(request_id="old", stage="final", action="allow", time=time.time() - 3 * 86400))
    assert log.get(old) is not None
    app = create_app(ServerConfig(audit=cfg), guarded=GuardedModel(server_guard), audit=log, keys=KeyStore([]))
    with TestClient(app):
        deadline = time.monotonic() + 5
        while log.get(old) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert log.get(old) is None
    log.close()


def test_stream_whose_client_vanishes_before_the_headers_frees_its_slot(harness_factory):
    """The body of a stream is never iterated when sending its headers fails: the slot, the model job and the
    trace must still be released."""
    import json

    h = harness_factory(max_tokens=256, default_max_tokens=256)
    body = json.dumps(h.chat(stream=True, max_tokens=256, temperature=1.0, seed=3)).encode()

    async def call() -> None:
        got = {"sent": False}

        async def receive() -> dict:
            if not got["sent"]:
                got["sent"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                raise OSError("client gone")

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json"),
                                                                   (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
        try:
            await h.app(scope, receive, send)
        except OSError:
            pass

    with TestClient(h.app) as c:
        c.portal.call(call)
        st = h.app.state.safesail
        deadline = time.monotonic() + 20
        while st.admission.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st.admission.active == 0 and st.admission.waiting == 0
        assert c.post("/v1/chat/completions", json=h.chat(max_tokens=2)).status_code == 200
