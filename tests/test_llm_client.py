"""Tests for `safesail_guard.llm_client` (and its settings in `safesail_guard.llm_config`) against the in-process
fake OpenAI server (no network)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from safesail_guard.llm_client import LLMClient, _retry_after_s
from safesail_guard.llm_config import Completion, LLMClientConfig, LLMError, LLMUsage
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, echo_responder, error_body

USER = [{"role": "user", "content": "hello"}]
SECRET = "sk-test-SECRET-1234567890"


from tests.fakes.fixtures import clean_llm_env  # noqa: E402,F401  (autouse fixture)


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def make_client(server: FakeOpenAIServer, **overrides) -> LLMClient:
    settings = {"base_url": server.base_url, "model": "m", "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01,
                "backoff_max_s": 0.05} | overrides
    return LLMClient(LLMClientConfig(**settings))


def test_success_and_token_accounting(server: FakeOpenAIServer) -> None:
    server.script(Reply(json=chat_body("hi there", prompt_tokens=5, completion_tokens=3, model="served-m")))
    client = make_client(server, temperature=0.3, max_tokens=50)
    first = client.complete(USER)
    second = client.complete(USER, temperature=0.9, top_p=0.5)
    assert first == Completion("hi there", 5, 3, cached=False, model="served-m", finish_reason="stop")
    assert second.text == "echo: hello" and second.model == "fake-model"
    assert client.usage == LLMUsage(requests=2, http_attempts=2, prompt_tokens=16, completion_tokens=10)
    body0, body1 = (r.body for r in server.requests)
    assert body0 == {"model": "m", "messages": USER, "temperature": 0.3, "max_tokens": 50}
    assert body1["temperature"] == 0.9 and body1["top_p"] == 0.5
    assert server.requests[0].path == "/v1/chat/completions"
    assert "authorization" not in server.requests[0].headers  # no key configured -> no header


def test_missing_usage_counts_tokens_as_unknown(server: FakeOpenAIServer) -> None:
    server.script(Reply(json=chat_body("ok", usage=False)), Reply(json={**chat_body("ok"), "usage": None}))
    client = make_client(server)
    result = client.complete(USER)
    client.complete(USER)
    assert result.text == "ok" and result.prompt_tokens is None and result.completion_tokens is None
    assert client.usage.responses_without_usage == 2 and client.usage.prompt_tokens == 0


def test_429_with_retry_after_then_success(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=429, json=error_body("slow down", "rate_limit"), headers={"Retry-After": "0.3"}))
    client = make_client(server, backoff_max_s=1.0)
    start = time.monotonic()
    result = client.complete(USER)
    assert time.monotonic() - start >= 0.3  # the server's Retry-After beats the 0.01 s backoff
    assert result.text == "echo: hello"
    assert len(server.requests) == 2
    assert client.usage.http_attempts == 2 and client.usage.failures == 0


def test_5xx_retried_until_success(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=500, json=error_body("boom")), Reply(status=503, raw=b"upstream unavailable"))
    assert make_client(server).complete(USER).text == "echo: hello"
    assert len(server.requests) == 3


def test_5xx_gives_up_after_max_retries(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(status=502, json=error_body("bad gateway today"))
    client = make_client(server, max_retries=2)
    with pytest.raises(LLMError) as info:
        client.complete(USER)
    err = info.value
    assert len(server.requests) == 3 and err.attempts == 3 and err.status == 502
    assert server.base_url in str(err) and "HTTP 502" in str(err) and "bad gateway today" in str(err)
    assert client.usage.failures == 1


def test_no_retry_on_400(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=400, json=error_body("messages[0].content is too long")))
    with pytest.raises(LLMError) as info:
        make_client(server, max_retries=5).complete(USER)
    assert len(server.requests) == 1
    message = str(info.value)
    assert f"{server.base_url}/chat/completions" in message
    assert "HTTP 400" in message and "messages[0].content is too long" in message
    assert info.value.status == 400 and not info.value.retryable


def test_timeout_raises_llm_error(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(json=chat_body("late"), delay_s=10)
    client = make_client(server, timeout_s=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(LLMError, match="timed out") as info:
        client.complete(USER)
    assert time.monotonic() - start < 3
    assert info.value.status is None and info.value.attempts == 2 and len(server.requests) == 2


def test_timeout_then_success(server: FakeOpenAIServer) -> None:
    server.script(Reply(json=chat_body("late"), delay_s=10))
    assert make_client(server, timeout_s=0.3).complete(USER).text == "echo: hello"


def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LLMClient(LLMClientConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2,
                                       backoff_s=0.01, backoff_max_s=0.02, timeout_s=1))
    with pytest.raises(LLMError, match="cannot connect") as info:
        client.complete(USER)
    assert info.value.attempts == 3 and f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(raw=b"<html>oops</html>"), "not JSON"),
        (Reply(json={"id": "x", "object": "chat.completion"}), "no 'choices'"),
        (Reply(json={"choices": []}), "no 'choices'"),
        (Reply(json={"choices": [{"index": 0}]}), "no 'message'"),
        (Reply(json={"choices": [{"message": {"role": "assistant", "content": None}}]}), "no text content"),
        (Reply(json=error_body("model overloaded")), "model overloaded"),
        (Reply(json=[1, 2]), "expected an object"),
    ],
)
def test_malformed_replies_raise_clear_errors(server: FakeOpenAIServer, reply: Reply, expected: str) -> None:
    server.script(reply)
    with pytest.raises(LLMError, match=expected):
        make_client(server).complete(USER)
    assert len(server.requests) == 1  # a malformed 200 is not retried


def test_cache_hit_on_second_call(server: FakeOpenAIServer, tmp_path: Path) -> None:
    client = make_client(server, cache_dir=tmp_path / "cache")
    first = client.complete(USER)
    second = client.complete(USER)
    assert len(server.requests) == 1
    assert not first.cached and second.cached and second.text == first.text
    assert second.prompt_tokens == first.prompt_tokens
    assert client.usage.cached_hits == 1 and client.usage.prompt_tokens == first.prompt_tokens
    client.complete(USER, temperature=0.7)  # different parameters: a different key
    assert len(server.requests) == 2
    again = make_client(server, cache_dir=tmp_path / "cache").complete(USER)  # persisted across clients
    assert again.cached and len(server.requests) == 2
    files = list((tmp_path / "cache").rglob("*"))
    assert not [f for f in files if f.name.startswith(".tmp-")]
    assert len([f for f in files if f.suffix == ".json"]) == 2


def test_corrupt_cache_entry_is_a_miss(server: FakeOpenAIServer, tmp_path: Path) -> None:
    client = make_client(server, cache_dir=tmp_path)
    client.complete(USER)
    (entry,) = tmp_path.rglob("*.json")
    entry.write_text("{not json", encoding="utf-8")
    assert not client.complete(USER).cached
    assert len(server.requests) == 2


def test_failures_are_not_cached(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script(Reply(status=400, json=error_body("nope")))
    client = make_client(server, cache_dir=tmp_path)
    with pytest.raises(LLMError):
        client.complete(USER)
    assert not client.complete(USER).cached


def test_complete_many_bounded_concurrency_and_order(server: FakeOpenAIServer) -> None:
    def slow_echo(body):
        reply = echo_responder(body)
        reply.delay_s = 0.15
        return reply

    server.responder = slow_echo
    client = make_client(server, concurrency=3)
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
    seen: list[int] = []
    results = client.complete_many(conversations, progress=False, on_result=lambda i, r: seen.append(i))
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(12)]
    assert server.max_in_flight > 1 and server.max_in_flight <= 3
    assert sorted(seen) == list(range(12))
    assert client.usage.requests == 12


def test_complete_many_returns_errors_in_place(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: (
        Reply(status=400, json=error_body("bad one")) if "bad" in body["messages"][0]["content"]
        else echo_responder(body)
    )
    client = make_client(server, concurrency=2)
    results = client.complete_many([[{"role": "user", "content": c}] for c in ("a", "bad", "c")], progress=True)
    assert isinstance(results[1], LLMError) and "bad one" in str(results[1])
    assert [r.text for r in (results[0], results[2])] == ["echo: a", "echo: c"]
    assert client.usage.failures == 1


def test_api_key_sent_as_bearer_and_never_leaked(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A careless server that echoes the credential back in its error message.
    server.responder = lambda body: Reply(status=500, json=error_body(f"bad key {SECRET}"))
    client = make_client(server, api_key=SECRET, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(LLMError) as info:
        client.complete(USER)
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(info.value) and SECRET not in repr(info.value) and "***" in str(info.value)
    assert SECRET not in caplog.text and caplog.records  # the retry was logged, without the key
    assert SECRET not in repr(client.config) and SECRET not in str(client.config.model_dump())


def test_api_key_falls_back_to_openai_api_key(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    make_client(server).complete(USER)
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-openai-env"
    monkeypatch.setenv("SAFESAIL_LLM_API_KEY", "sk-own")
    assert LLMClientConfig(base_url=server.base_url, model="m").api_key.get_secret_value() == "sk-own"


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFESAIL_LLM_BASE_URL", "http://127.0.0.1:8080/v1/")
    monkeypatch.setenv("SAFESAIL_LLM_MODEL", "qwen")
    monkeypatch.setenv("SAFESAIL_LLM_CONCURRENCY", "7")
    config = LLMClientConfig()
    assert (config.base_url, config.model, config.concurrency, config.api_key) == (
        "http://127.0.0.1:8080/v1", "qwen", 7, None)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"base_url": "127.0.0.1:8080/v1"}, "http:// or https://"),
        ({"base_url": "http://127.0.0.1:8080/v1/chat/completions"}, "API root"),
        ({"backoff_s": 5, "backoff_max_s": 1}, "backoff_max_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"model": "  "}, "non-empty"),
        ({"temperture": 0.1}, "temperture"),
    ],
)
def test_config_rejects_bad_values(overrides: dict, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        LLMClientConfig(**({"base_url": "http://127.0.0.1:8080/v1", "model": "m"} | overrides))


def test_bad_messages_and_reserved_params_raise_value_error(server: FakeOpenAIServer) -> None:
    client = make_client(server)
    with pytest.raises(ValueError, match="role"):
        client.complete([{"role": "wizard", "content": "x"}])
    with pytest.raises(ValueError, match="non-empty list"):
        client.complete([])
    with pytest.raises(ValueError, match="stream"):
        client.complete(USER, stream=True)
    assert server.requests == []


def test_retry_after_parsing() -> None:
    assert _retry_after_s({"Retry-After": "2"}) == 2.0
    assert _retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert _retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert _retry_after_s({"Retry-After": "soon"}) is None
    assert _retry_after_s({}) is None
