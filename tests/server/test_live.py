"""End to end through a real uvicorn server: the official openai client, client disconnects, SIGKILL durability."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import PROMPT
from tests.server.live import LiveServer


def test_official_openai_client_works_unchanged(harness_factory):
    from openai import OpenAI

    h = harness_factory()
    with LiveServer(h.app) as s:
        client = OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        models = client.models.list()
        assert [m.id for m in models.data] == [h.model_id]
        resp = client.chat.completions.create(model=h.model_id, messages=[{"role": "user", "content": PROMPT}],
                                              max_tokens=6, temperature=0)
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].finish_reason in ("stop", "length")
        assert resp.usage.completion_tokens <= 6
        assert resp.model_extra["safesail"]["decision"] == "log"
        raw = client.chat.completions.with_raw_response.create(
            model=h.model_id, messages=[{"role": "user", "content": PROMPT}], max_tokens=2)
        assert raw.headers["x-safesail-decision"] == "log"
        stream = client.chat.completions.create(model=h.model_id, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=6, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == resp.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens
        from openai import BadRequestError, NotFoundError

        with pytest.raises(NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(BadRequestError) as e:
            client.chat.completions.create(model=h.model_id, messages=[{"role": "nobody", "content": "hi"}])
        assert "messages[0].role" in str(e.value)


def test_client_disconnect_stops_generation_and_frees_the_slot(harness_factory):
    h = harness_factory(max_tokens=4096, default_max_tokens=4096)
    with LiveServer(h.app) as s:
        st = h.app.state.safesail
        with httpx.Client(timeout=30) as c:
            with c.stream("POST", f"{s.url}/v1/chat/completions",
                          json=h.chat(max_tokens=4096, stream=True, temperature=1.0, seed=1)) as r:
                assert r.status_code == 200
                for _line in r.iter_lines():
                    break  # read the first event, then hang up
        deadline = time.monotonic() + 20
        while (st.admission.active or st.backend.cancelled == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st.admission.active == 0
        assert st.backend.cancelled == 1
        ok = httpx.post(f"{s.url}/v1/chat/completions", json=h.chat(max_tokens=2), timeout=30)
        assert ok.status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_sigkill_under_load_loses_no_committed_decision(tiny_model_dirs, server_guard, tmp_path):
    """A real `safesail serve` process over a tiny model; 8 clients; SIGKILL; every answered request's two
    verdicts are in the audit log, which opens cleanly."""
    from safesail_guard.audit import AuditLog

    db = Path(server_guard.db.path)
    assert db.exists()
    policy = tmp_path / "p.yaml"
    from tests.server.conftest import ALLOW_POLICY

    policy.write_text(ALLOW_POLICY)
    audit = tmp_path / "audit.sqlite"
    port = _free_port()
    env = {**os.environ, "SAFESAIL_API_KEYS": "", "OTEL_SDK_DISABLED": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "safesail_guard.cli", "serve", "--model",
                             str(tiny_model_dirs["llama"]), "--db", str(db), "--policy", str(policy), "--port",
                             str(port), "--audit-db", str(audit), "--audit-text", "full", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(i: int) -> None:
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/v1/chat/completions", json={
                            "model": model, "max_tokens": 4, "stream": i % 2 == 0,
                            "messages": [{"role": "user", "content": f"{PROMPT} #{i}"}]})
                    except httpx.HTTPError:
                        return
                    if r.status_code != 200:
                        continue
                    if i % 2 == 0:
                        events = [json.loads(x[6:]) for x in r.text.splitlines()
                                  if x.startswith("data: {")]
                        rid = [e for e in events if "safesail" in e]
                        if not rid:
                            continue  # cut mid-stream
                        rid = rid[-1]["safesail"]["request_id"]
                    else:
                        rid = r.json()["safesail"]["request_id"]
                    with lock:
                        answered.append(rid)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        while len(answered) < 40 and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(answered) >= 40
    import sqlite3

    con = sqlite3.connect(audit)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with AuditLog.open(audit) as log:
        for rid in answered:
            stages = sorted(r.stage for r in log.query(request_id=rid))
            assert stages == ["final", "prompt"], (rid, stages)
