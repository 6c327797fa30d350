"""The proxy in local mode on a tiny random Llama: wire format, verdicts, audit, streaming, blocking, steering."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from safesail_guard.server.openai_schema import LOCAL_REFUSED
from tests.server.conftest import PROMPT, block_policy, openai_error


def _sse(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_completion_has_openai_shape_verdict_and_audit(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat(max_tokens=6, temperature=0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 6 and body["usage"]["prompt_tokens"] > 5
    ss = body["safesail"]
    assert ss["decision"] == "log" and "any_feature" in ss["rules"]
    assert ss["top_features"] and {"id", "layer", "activation", "explanation"} <= set(ss["top_features"][0])
    assert r.headers["x-safesail-decision"] == "log" and r.headers["x-safesail-request-id"] == ss["request_id"]
    rows = h.audit.query(request_id=ss["request_id"], newest_first=False)
    assert [row.stage for row in rows] == ["prompt", "final"]
    assert rows[1].action == "log" and rows[0].text == PROMPT
    assert rows[1].extra["finish_reason"] == choice["finish_reason"]


def test_stream_chunks_end_with_done_and_match_non_streaming(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        plain = c.post("/v1/chat/completions", json=h.chat(max_tokens=8, temperature=0)).json()
        r = c.post("/v1/chat/completions", json=h.chat(max_tokens=8, temperature=0, stream=True,
                                                        stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    last_choice = [ch for ch in chunks if ch["choices"]][-1]
    assert last_choice["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert last_choice["safesail"]["decision"] == "log"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert r.headers["x-safesail-stage"] == "prompt"


def test_prompt_block_returns_refusal_with_content_filter(harness_factory, prompt_feature):
    h = harness_factory(block_policy(prompt_feature))
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat())
        s = c.post("/v1/chat/completions", json=h.chat(stream=True))
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] == "Refused by the test policy."
    assert body["safesail"]["blocked"] is True and r.headers["x-safesail-decision"] == "block"
    assert body["usage"]["completion_tokens"] == 0
    chunks = [e for e in _sse(s.text) if e != "[DONE]"]
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == "Refused by the test policy."
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert s.headers["x-safesail-decision"] == "block"
    rows = h.audit.query(action="block")
    assert len(rows) == 4  # prompt + final stage, for both requests


def test_response_block_stops_stream_before_the_firing_token(harness_factory, server_guard):
    from safesail_guard.runtime.generation import GuardedModel

    free = GuardedModel(server_guard).generate(PROMPT, max_new_tokens=12, ignore_eos=True)
    resp = [t for t in free.tokens if t.scope == "response"]
    fired = [(t.position, h.feature_id) for t in resp for h in t.hits]
    assert fired
    pos, fid = fired[0]
    shown_before = "".join(t.text for t in resp if t.position < pos)
    h = harness_factory(block_policy(fid, "response"))
    with TestClient(h.app) as c:
        s = c.post("/v1/chat/completions", json=h.chat(stream=True, max_tokens=12, temperature=0))
    chunks = [e for e in _sse(s.text) if e != "[DONE]"]
    deltas = [ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]]
    deltas = [d for d in deltas if d]
    assert s.headers["x-safesail-decision"] == "allow"  # the prompt passed
    assert "".join(deltas[:-1]) == shown_before  # everything before the blocking token, nothing after
    assert deltas[-1] == "Refused by the test policy."
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_steering_changes_the_answer_and_unknown_feature_is_400(harness_factory, server_guard):
    h = harness_factory()
    fid = next(iter(server_guard.catalog))
    with TestClient(h.app) as c:
        plain = c.post("/v1/chat/completions", json=h.chat(max_tokens=8, temperature=0)).json()
        steered = c.post("/v1/chat/completions", json=h.chat(max_tokens=8, temperature=0, safesail={
            "steer": [{"feature_id": fid, "op": "add", "value": 200.0}]})).json()
        bad = c.post("/v1/chat/completions", json=h.chat(safesail={
            "steer": [{"feature_id": "9_999999", "op": "add", "value": 1.0}]}))
    assert steered["safesail"]["steering"] and steered["safesail"]["steering"][0]["feature_id"] == fid
    assert steered["choices"][0]["message"]["content"] != plain["choices"][0]["message"]["content"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "safesail.steer[0].feature_id"


def test_tokens_option_returns_per_token_features(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        body = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, safesail={"tokens": True})).json()
    toks = body["safesail"]["tokens"]
    assert toks and {"position", "text", "scope", "hits"} <= set(toks[0])
    assert {t["scope"] for t in toks} == {"prompt", "response"}


def test_stop_sequence_cuts_the_answer(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        plain = c.post("/v1/chat/completions", json=h.chat(max_tokens=12, temperature=0)).json()
        text = plain["choices"][0]["message"]["content"]
        if len(text) < 4:
            pytest.skip("the random model's reply is too short to cut")
        stop = text[2:4]
        cut = c.post("/v1/chat/completions", json=h.chat(max_tokens=12, temperature=0, stop=[stop])).json()
    assert cut["choices"][0]["message"]["content"] == text[:text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_models_health_ready(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        models = c.get("/v1/models").json()
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        one = c.get(f"/v1/models/{h.model_id}")
        missing = c.get("/v1/models/nope")
    assert models["object"] == "list" and models["data"][0]["id"] == h.model_id
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert one.json()["id"] == h.model_id and missing.status_code == 404


def test_score_endpoint_matches_batch_scorer_records(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        r = c.post("/v1/safesail/score", json={"items": [{"id": "a", "text": PROMPT}, {"id": "b", "text": ""},
                                                           {"id": "c", "messages": [{"role": "user", "content": "hi"}]}]})
    data = r.json()["data"]
    assert [d["id"] for d in data] == ["a", "b", "c"]
    assert 0 <= data[0]["score"] <= 1 and data[0]["decision"] == "log"
    assert "error" in data[1] and "empty" in data[1]["error"]


def test_fields_local_mode_does_not_use_are_logged_and_listed_as_ignored(harness_factory, caplog):
    """Penalties, ``user`` and fields the wire format does not model were accepted in silence: the client could
    not tell that its ``presence_penalty`` changed nothing. They are named in ``safesail.ignored`` and logged."""
    h = harness_factory()
    extra = {"presence_penalty": 0.5, "frequency_penalty": -1.0, "user": "u-1", "top_k": 40, "metadata": {"a": "b"}}
    with caplog.at_level("WARNING", logger="safesail.server"), TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, **extra))
        s = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, stream=True, **extra))
        plain = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, presence_penalty=0, frequency_penalty=0.0,
                                                           user=None, top_k=None))
    assert r.status_code == 200, r.text
    assert r.json()["safesail"]["ignored"] == sorted(extra)
    last = [e for e in _sse(s.text) if e != "[DONE]" and e["choices"]][-1]
    assert last["safesail"]["ignored"] == sorted(extra)
    assert "ignored" not in plain.json()["safesail"]  # zero penalties and nulls ask for nothing
    warnings = [rec.getMessage() for rec in caplog.records if "ignored" in rec.getMessage()]
    assert len(warnings) == 2 and all(", ".join(sorted(extra)) in w for w in warnings)


@pytest.mark.parametrize("name", LOCAL_REFUSED)
def test_every_refused_field_is_refused_by_name_never_ignored(harness_factory, name):
    h = harness_factory()
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, **{name: "x"}))
    assert openai_error(r, 400, name)["code"] == "unsupported_parameter"


def test_a_local_request_tokenises_its_prompt_once(harness_factory, server_guard, monkeypatch):
    """The backend encodes the prompt to count its tokens and hands that encoding to the generation, which
    used to encode it again."""
    calls: list[object] = []
    encode = server_guard.encode_prompt

    def counting(prompt, response=None):
        calls.append(prompt)
        return encode(prompt, response)

    monkeypatch.setattr(server_guard, "encode_prompt", counting)
    h = harness_factory()
    with TestClient(h.app) as c:
        for stream in (False, True):
            calls.clear()
            r = c.post("/v1/chat/completions", json=h.chat(max_tokens=4, stream=stream))
            assert r.status_code == 200 and len(calls) == 1, (stream, calls)


def test_prompt_verdict_judges_every_message_text(harness_factory):
    """The prompt stage reads every role, so its recorded text is every message's text (the same rule a pivot
    translator gets), not only the last user message."""
    h = harness_factory()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json=h.chat(messages=messages, max_tokens=4))
    rows = h.audit.query(request_id=r.json()["safesail"]["request_id"], stage="prompt")
    assert rows[0].text == "Be brief.\n" + PROMPT
