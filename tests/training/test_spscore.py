"""Tests for `safesail_training.spscore`: the reply parser, the LLM scorer (fake OpenAI server) and the offline
context-dispersion proxy (fake bag-of-words embedder)."""

from __future__ import annotations

import pytest

from safesail_neuron_db.records import Explanation, SuperpositionScore
from safesail_training.spscore import (
    LLMSpScorer,
    OfflineSpScorer,
    build_spscore_messages,
    parse_spscore,
    score_many,
    top_contexts,
)
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, error_body, last_user_text
from tests.fakes.fixtures import clean_llm_env  # noqa: F401  (autouse fixture)
from tests.training.test_explain import FakeEmbedder, feature, make_client, ok_explanation, server  # noqa: F401

FOCUSED = feature(
    "he drew a knife=9 and threatened the clerk",
    "the clerk saw a knife=8 and the threat",
    "a knife=10 threatened the clerk again",
    fid="17_1",
)
MIXED = feature(
    "grandmother baked bread=9 for the festival",
    "the rifle=8 jammed during the hunt",
    "quarterly revenue=9 beat analyst forecasts",
    "compile the kernel=7 module with gcc",
    fid="17_2",
)


# -- parser -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 2, "reason": "one concept"}', (2.0, "one concept")),
        ('```json\n{"score": 7, "reason": "mixed"}\n```', (7.0, "mixed")),
        ('<think>{"score": 9}</think>{"score": 1, "reason": "weapons only"}', (1.0, "weapons only")),
        ('Here you go: {"score": 4, "reason": "two themes"} Hope that helps!', (4.0, "two themes")),
        ('{"score": "6", "reason": "x"}', (6.0, "x")),
        ('{"score": "6/10"}', (6.0, "")),
        ('{"score": 3.5, "reason": "a"}', (3.5, "a")),
        ('{"Score": 0, "Reason": "single"}', (0.0, "single")),
        ('{"score": 11, "reason": "too high"}', (None, "too high")),
        ('{"score": -1}', (None, "")),
        ('{"score": true}', (None, "")),
        ('{"score": "high"}', (None, "")),
        ('{"reason": "forgot the score"}', (None, "forgot the score")),
        ("{'score': 4, 'reason': 'single quotes'}", (4.0, "single quotes")),
        ('{"score": 5, "reason": "trailing comma",}', (5.0, "trailing comma")),
        ("Score: 8\nReason: many unrelated topics", (8.0, "many unrelated topics")),
        ('{"result": {"score": 2, "reason": "nested"}}', (2.0, "nested")),
        ('first {"score": 9} then corrected {"score": 3, "reason": "final"}', (3.0, "final")),
        ("5", (5.0, "")),
        ("", (None, "")),
        ("I cannot rate this.", (None, "")),
    ],
)
def test_parse_spscore(reply: str, expected: tuple[float | None, str]) -> None:
    assert parse_spscore(reply) == expected


def test_prompt_contains_explanation_and_marked_contexts() -> None:
    contexts = top_contexts(FOCUSED, 2, mark=True)
    assert contexts == ["he drew a [[knife]] and threatened the clerk", "the clerk saw a [[knife]] and the threat"]
    messages = build_spscore_messages("knives in threats", contexts)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '{"score":' in messages[0]["content"]
    user = messages[1]["content"]
    assert user.startswith("Feature description: knives in threats") and "2. the clerk saw a [[knife]]" in user


# -- LLM scorer -------------------------------------------------------------------------------------------------


def by_feature(request) -> Reply:
    user = last_user_text(request)
    if "grandmother" in user:
        return Reply(json=chat_body("It is hard to say, probably quite mixed.", prompt_tokens=60, completion_tokens=9))
    if "NOPE" in user:
        return Reply(status=400, json=error_body("model refused the request"))
    return Reply(json=chat_body('```json\n{"score": 1, "reason": "knife threats only"}\n```', prompt_tokens=80,
                                completion_tokens=12))


def test_llm_scorer_statuses_tokens_and_on_result(server: FakeOpenAIServer) -> None:
    server.responder = by_feature
    scorer = LLMSpScorer(make_client(server))
    items = [
        (FOCUSED, ok_explanation("17_1", "knives in threats")),
        (MIXED, ok_explanation("17_2", "bread, rifles, revenue")),
        (feature("x=1 y", fid="17_3"), ok_explanation("17_3", "NOPE")),
        (feature("x=1 y", fid="17_4"), Explanation("17_4", None, "failed", "openai:m")),
    ]
    seen: list[SuperpositionScore] = []
    results = score_many(scorer, items, progress=False, on_result=seen.append)
    assert scorer.method == "openai:sim-m" and [r.feature_id for r in results] == ["17_1", "17_2", "17_3", "17_4"]
    focused, mixed, refused, unexplained = results
    assert (focused.status, focused.value, focused.detail) == ("ok", 1.0, "knife threats only")
    assert (focused.prompt_tokens, focused.completion_tokens, focused.method) == (80, 12, "openai:sim-m")
    assert mixed.status == "unparseable" and mixed.value is None and "probably quite mixed" in mixed.detail
    assert mixed.completion_tokens == 9
    assert refused.status == "failed" and "model refused" in refused.detail
    assert unexplained.status == "skipped"
    assert len(server.requests) == 3 and len(seen) == 4
    assert {s.feature_id for s in seen} == {r.feature_id for r in results}


def test_llm_scorer_retries_then_succeeds(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=503, json=error_body("busy")), Reply(status=429, headers={"Retry-After": "0"}))
    server.responder = lambda body: Reply(json=chat_body('{"score": 6, "reason": "two themes"}'))
    result = LLMSpScorer(make_client(server)).score(FOCUSED, ok_explanation("17_1", "knives"))
    assert (result.status, result.value) == ("ok", 6.0) and len(server.requests) == 3


def test_llm_scorer_permanent_failure_is_a_status(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(status=500, json=error_body("internal error"))
    result = LLMSpScorer(make_client(server, max_retries=1)).score(FOCUSED, ok_explanation("17_1", "knives"))
    assert result.status == "failed" and result.value is None and "internal error" in result.detail


# -- offline proxy ----------------------------------------------------------------------------------------------


def test_offline_proxy_low_for_one_topic_high_for_mixed() -> None:
    scorer = OfflineSpScorer(FakeEmbedder())
    focused = scorer.score(FOCUSED, ok_explanation("17_1", "unused"))
    mixed = scorer.score(MIXED, Explanation("17_2", None, "failed", "openai:m"))  # the proxy ignores explanations
    assert focused.status == mixed.status == "ok"
    assert focused.method == "offline-proxy:context-dispersion" and "proxy" in focused.detail
    assert focused.value is not None and mixed.value is not None
    assert 0.0 <= focused.value < 5.0 < mixed.value <= 10.0
    assert mixed.value > 8.0  # only "the" is shared between the mixed contexts


def test_offline_proxy_needs_two_contexts() -> None:
    scorer = OfflineSpScorer(FakeEmbedder())
    one = feature("only one=5 example", fid="1_1", quiet=["calm"])
    result = scorer.score(one, ok_explanation("1_1", "x"))
    assert result.status == "skipped" and result.value is None and "found 1" in result.detail
    identical = feature("same words=5 here", "same words=4 here", fid="1_2")
    assert scorer.score(identical, ok_explanation("1_2", "x")).value == pytest.approx(0.0, abs=1e-6)


def test_score_many_offline_order_and_on_result() -> None:
    items = [(FOCUSED, ok_explanation("17_1", "a")), (MIXED, ok_explanation("17_2", "b"))]
    seen: list[SuperpositionScore] = []
    results = score_many(OfflineSpScorer(FakeEmbedder()), items, progress=False, on_result=seen.append)
    assert [r.feature_id for r in results] == ["17_1", "17_2"] and seen == results
