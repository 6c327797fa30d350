"""Upstream mode: forward to another OpenAI-compatible server, guard prompt and response with the local model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, error_body, stream_events
from tests.server.conftest import PROMPT, block_policy

REPLY = "Mix flour, water, salt and yeast, then bake the bread until golden."


def _sse(text: str) -> list:
    return [(x[6:] if x[6:] == "[DONE]" else json.loads(x[6:])) for x in text.splitlines() if x.startswith("data: ")]


@pytest.fixture
def upstream():
    with FakeOpenAIServer() as fake:
        yield fake


def _harness(harness_factory, upstream, policy=None, **kw):
    args = {"mode": "upstream", "upstream_url": upstream.base_url, "upstream_model": "big-model", **kw}
    return harness_factory(policy, **args) if policy else harness_factory(**args)


def test_forwards_and_returns_upstream_answer_with_verdict(harness_factory, upstream, monkeypatch):
    monkeypatch.setenv("SAFESAIL_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    upstream.script(Reply(json=chat_body(REPLY, model="big-model")))
    h = _harness(harness_factory, upstream)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model", "user": "u1", "safesail": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == REPLY and body["model"] == "big-model"
    assert body["safesail"]["mode"] == "upstream" and body["safesail"]["decision"] == "log"
    sent = upstream.requests[0]
    assert sent.body["model"] == "big-model" and sent.body["user"] == "u1" and "safesail" not in sent.body
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    rows = h.audit.query(request_id=body["safesail"]["request_id"], newest_first=False)
    assert [(x.stage, x.mode) for x in rows] == [("prompt", "upstream"), ("final", "upstream")]
    assert rows[1].text == REPLY


def test_prompt_block_never_reaches_upstream(harness_factory, upstream, prompt_feature):
    h = _harness(harness_factory, upstream, block_policy(prompt_feature))
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model"})
        s = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model", "stream": True})
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    assert r.json()["choices"][0]["message"]["content"] == "Refused by the test policy."
    assert "Refused by the test policy." in s.text and upstream.requests == []


def _response_feature(guard) -> tuple[str, int]:
    """A feature that fires on REPLY's tokens (and the reply character where its first firing token starts)."""
    res = guard.scan(PROMPT, response=REPLY)
    resp = [t for t in res.tokens if t.scope == "response"]
    for t in resp:
        if t.hits:
            return t.hits[0].feature_id, t.position
    pytest.skip("no feature fires on the reply")


def test_streamed_reply_is_released_only_after_the_guard_passed_it(harness_factory, upstream, server_guard):
    fid, _ = _response_feature(server_guard)
    pieces = [REPLY[i:i + 5] for i in range(0, len(REPLY), 5)]
    upstream.script(Reply(sse=stream_events(pieces, model="big-model")), Reply(sse=stream_events(pieces)))
    allow = _harness(harness_factory, upstream)
    with TestClient(allow.app) as c:
        ok = c.post("/v1/chat/completions", json={**allow.chat(), "model": "big-model", "stream": True})
    ev = _sse(ok.text)
    assert ev[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in ev[:-1] if e["choices"]) == REPLY
    block = _harness(harness_factory, upstream, block_policy(fid, "response"))
    with TestClient(block.app) as c:
        s = c.post("/v1/chat/completions", json={**block.chat(), "model": "big-model", "stream": True})
    chunks = [e for e in _sse(s.text) if e != "[DONE]"]
    texts = [e["choices"][0]["delta"].get("content") or "" for e in chunks if e["choices"]]
    texts = [t for t in texts if t]
    assert texts[-1] == "Refused by the test policy."
    released = "".join(texts[:-1])
    assert REPLY.startswith(released) and len(released) < len(REPLY)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_monitor_pieces_release_everything_when_allowed(server_guard):
    from safesail_guard.runtime.monitor import ResponseMonitor

    want = server_guard.tokenizer(REPLY, add_special_tokens=False)["input_ids"]
    for size in (1, 3, 17, 1000):
        with ResponseMonitor(server_guard, PROMPT) as mon:
            out = "".join(mon.feed(REPLY[i:i + size]).text for i in range(0, len(REPLY), size))
            out += mon.finish().text
            assert out == REPLY
            got = [t.token_id for t in mon.session.tokens if t.scope == "response"]
            assert got == want, size  # word-start cuts give exactly the whole reply's tokens
            assert [t.scope for t in mon.session.tokens].count("prompt") == mon.prompt_tokens


@pytest.mark.parametrize("reply,status,code", [
    (Reply(status=500, json=error_body("boom", "server_error")), 502, "upstream_error"),
    (Reply(status=200, raw=b"not json"), 502, "upstream_bad_response"),
    (Reply(status=200, json={"choices": []}), 502, "upstream_bad_response"),
    (Reply(status=400, json=error_body("bad temperature")), 400, "upstream_rejected"),
    (Reply(status=401, json=error_body("bad key")), 502, "upstream_rejected"),
    (Reply(status=200, json=chat_body("late"), delay_s=3.0), 504, "upstream_timeout"),
])
def test_upstream_failures_become_openai_errors(harness_factory, upstream, reply, status, code):
    upstream.script(reply)
    h = _harness(harness_factory, upstream, upstream_timeout_s=1.0)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_unreachable_upstream_is_502(harness_factory):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    h = harness_factory(mode="upstream", upstream_url=f"http://127.0.0.1:{port}/v1", upstream_model="m")
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "m"})
        s = c.post("/v1/chat/completions", json={**h.chat(), "model": "m", "stream": True})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    assert "upstream_unreachable" in s.text and s.text.rstrip().endswith("data: [DONE]")


def test_steering_is_refused_in_upstream_mode(harness_factory, upstream, server_guard):
    h = _harness(harness_factory, upstream)
    fid = next(iter(server_guard.catalog))
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model", "safesail": {
            "steer": [{"feature_id": fid, "op": "add", "value": 1.0}]}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "safesail.steer"


def test_steering_policy_is_a_configuration_error_in_upstream_mode(server_guard):
    from safesail_guard.server.app import check_no_steering

    fid = next(iter(server_guard.catalog))
    pol = server_guard.compile(f"""
version: 1
name: steery
rules:
  - name: push
    action: steer
    steer: [{{feature: "{fid}", op: add, value: 1.0}}]
""")
    with pytest.raises(ValueError, match="upstream mode cannot steer"):
        check_no_steering(pol)


def test_upstream_config_needs_url():
    from pydantic import ValidationError

    from safesail_guard.server import ServerConfig

    with pytest.raises(ValidationError, match="upstream_url"):
        ServerConfig(mode="upstream")


def test_tokens_option_in_upstream_mode_returns_the_scanned_tokens(harness_factory, upstream, server_guard):
    fid, pos = _response_feature(server_guard)
    upstream.script(Reply(json=chat_body(REPLY)), Reply(json=chat_body(REPLY)))
    allow = _harness(harness_factory, upstream)
    with TestClient(allow.app) as c:
        body = c.post("/v1/chat/completions", json={**allow.chat(), "model": "big-model",
                                                    "safesail": {"tokens": True}}).json()
    toks = body["safesail"]["tokens"]
    assert "".join(t["text"] for t in toks if t["scope"] == "response") == REPLY
    block = _harness(harness_factory, upstream, block_policy(fid, "response"))
    with TestClient(block.app) as c:
        body = c.post("/v1/chat/completions", json={**block.chat(), "model": "big-model",
                                                    "safesail": {"tokens": True}}).json()
    toks = body["safesail"]["tokens"]
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert max(t["position"] for t in toks) == pos  # nothing after the blocking token is revealed


def test_monitor_releases_long_text_without_spaces_before_the_end(server_guard):
    """Text with no word boundary is held back up to MAX_HOLD_CHARS, then released all but its last token."""
    from safesail_guard.runtime.monitor import MAX_HOLD_CHARS, ResponseMonitor

    text = "flourwatersaltyeast" * 8  # 152 characters, no whitespace
    with ResponseMonitor(server_guard, PROMPT) as mon:
        head = text[:MAX_HOLD_CHARS]
        early = "".join(mon.feed(head[i:i + 10]).text for i in range(0, len(head), 10))
        assert early == ""  # not longer than MAX_HOLD_CHARS yet: everything is held
        more = "".join(mon.feed(text[i:i + 10]).text for i in range(MAX_HOLD_CHARS, len(text), 10))
        assert more and text.startswith(more) and len(more) < len(text)
        assert more + mon.finish().text == text


def test_every_choice_and_tool_call_passes_when_the_guard_allows(harness_factory, upstream):
    """n=2 and tool calls go through whole once scanned; each choice's verdict is in safesail.upstream."""
    call = {"id": "call_9", "type": "function", "function": {"name": "bake", "arguments": '{"minutes": 30}'}}
    body = chat_body(REPLY, model="big-model")
    body["choices"].append({"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                            "finish_reason": "tool_calls"})
    upstream.script(Reply(json=body))
    h = _harness(harness_factory, upstream)
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={**h.chat(), "model": "big-model", "n": 2})
    out = r.json()
    assert [ch["index"] for ch in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"]["content"] == REPLY and out["choices"][0]["finish_reason"] == "stop"
    second = out["choices"][1]
    assert second["message"]["tool_calls"] == [call] and second["message"]["content"] is None
    assert second["finish_reason"] == "tool_calls"
    assert [ch["decision"] for ch in out["safesail"]["upstream"]["choices"]] == ["log", "log"]
    assert out["usage"]["total_tokens"] == 18 and out["id"] == "chatcmpl-fake"
