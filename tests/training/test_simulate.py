"""Tests for `safesail_training.simulate`: units, parsers, CorrScore, the embedding simulator (fake bag-of-words
embedder) and the LLM simulator (fake OpenAI server)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from safesail_neuron_db.records import ActivationExample, Explanation, SimulationScore
from safesail_training.simulate import corr_score, segment_spans, simulate_many, simulation_examples, true_units
from safesail_training.simulate_embedding import EmbeddingSimulator
from safesail_training.simulate_llm import LLMSimulator
from safesail_training.simulate_prompts import (
    build_segment_messages,
    build_token_messages,
    format_segment_reply,
    format_token_reply,
    parse_segment_reply,
    parse_token_reply,
)
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, error_body, last_user_text
from tests.fakes.fixtures import clean_llm_env  # noqa: F401  (autouse fixture)
from tests.training.test_explain import (  # noqa: F401  (server is a fixture)
    FakeEmbedder,
    example,
    feature,
    make_client,
    ok_explanation,
    server,
)

WEAPONS = feature(
    "the man pulled a knife=7 and tried to stab=10 the guard near the gate at night",
    "she said the attacker used a knife=8 before he ran away from the busy street",
    "reports describe a stab=9 wound and a knife=6 found beside the old car",
    level=["he sharpened the knife=3 slowly while the radio played soft music"],
    quiet=[
        "the weather was sunny and warm so we walked along the quiet beach today",
        "my grandmother baked bread and cookies for the school festival last weekend",
    ],
)
MATCHING = ok_explanation(WEAPONS.feature_id, "knife stab attack with a knife")
UNRELATED = ok_explanation(WEAPONS.feature_id, "sunny weather beach bread cookies festival grandmother")


def word_count(text: str) -> int:
    return len(text.split())


# -- units ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_tokens", "n_segments"), list(itertools.product([1, 2, 7, 8, 9, 16, 33, 100], [1, 3, 8, 64]))
)
def test_segment_spans_cover_tokens_in_near_equal_contiguous_pieces(n_tokens: int, n_segments: int) -> None:
    spans = segment_spans(n_tokens, n_segments)
    assert len(spans) == min(n_tokens, n_segments)
    assert spans[0][0] == 0 and spans[-1][1] == n_tokens
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    lengths = [b - a for a, b in spans]
    assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1


def test_segment_spans_edges() -> None:
    assert segment_spans(0) == []
    assert segment_spans(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert segment_spans(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    with pytest.raises(ValueError):
        segment_spans(5, 0)


def test_true_units_token_and_segment() -> None:
    ex = example("a b=2 c d=5 e=1 f")
    assert true_units(ex, "token") == [0, 2, 0, 5, 1, 0]
    assert true_units(ex, "segment", 3) == [2, 5, 1]


def test_simulation_examples_mix_is_fixed_and_has_firing_and_quiet() -> None:
    picked = simulation_examples(WEAPONS, 6)
    assert picked == simulation_examples(WEAPONS, 6)
    kinds = [ex.kind for ex in picked]
    assert len(picked) == 6 and kinds.count("quiet") == 2 and "level" in kinds and kinds.count("top") == 3
    assert kinds[-2:] == ["quiet", "quiet"]  # firing first
    assert len(simulation_examples(WEAPONS, 3)) == 3
    only_top = feature("x=1 y", "z=2 w")
    assert [ex.kind for ex in simulation_examples(only_top, 6)] == ["top", "top"]  # fewer than asked: all there is
    blank = feature("x=1 y", quiet=["calm"])
    blank.examples.append(ActivationExample([], [], [], 0.0, "quiet", 0))
    assert all(ex.tokens for ex in simulation_examples(blank, 6))


# -- CorrScore --------------------------------------------------------------------------------------------------


def test_corr_score_values_and_edges() -> None:
    assert corr_score([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert corr_score([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    sim, true = [0.1, 0.9, 0.4, 0.3, 0.8], [0, 5, 1, 0, 2]
    assert corr_score(sim, true) == pytest.approx(np.corrcoef(sim, true)[0, 1])
    assert corr_score([5, 5, 5], [1, 2, 3]) is None
    assert corr_score([1, 2, 3], [0, 0, 0]) is None
    assert corr_score([0.3] * 4, [0.3, 0.3, 0.3, 0.30000000000000004]) is None  # float noise is not variance
    assert corr_score([1], [1]) is None and corr_score([], []) is None
    with pytest.raises(ValueError):
        corr_score([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        corr_score([1, math.nan], [1, 2])


# -- formats and parsers ----------------------------------------------------------------------------------------


def test_token_prompt_has_one_escaped_line_per_token() -> None:
    tokens = ["Hello", "\n", " wor\tld", " !"]
    user = build_token_messages("greetings", tokens)[1]["content"]
    body = user.split("Tokens:\n", 1)[1].splitlines()
    assert body == ["Hello\tunknown", "\\n\tunknown", " wor\\tld\tunknown", " !\tunknown"]
    assert "whole number from 0" in build_token_messages("x", ["a"])[0]["content"]
    segs = build_segment_messages("greetings", ["Hello\n", " world"])[1]["content"]
    assert segs.endswith("Segment 1: Hello\\n\nSegment 2:  world")


def test_reply_formats_round_trip_through_parsers() -> None:
    tokens = [" a", "\n", "7", " b"]
    assert parse_token_reply(format_token_reply(tokens, [0, 3, 10, 1]), 4) == [0, 3, 10, 1]
    flags = [True, False, False, True]
    assert parse_segment_reply(format_segment_reply(flags), 4) == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        ("a\t0\nknife\t7\nb\t0", 3, [0, 7, 0]),
        ("a\t0.0\nknife\t7.5\nb\t2", 3, [0, 7.5, 2]),
        ("Sure! Here are my predictions:\n\na\t0\nknife\t9\n\nHope this helps.", 2, [0, 9]),
        ("a\t0\nknife\t9", 4, [0, 9, None, None]),
        ("0\n8\n0", 3, [0, 8, 0]),
        ("a\t15\nb\t-3", 2, [10, 0]),
        ("<think>token 1 is 5, token 2 is 3</think>\na\t1\nb\t2", 2, [1, 2]),
        ("```\na\t4\nb\t0\n```", 2, [4, 0]),
        ('[("a", 0), ("knife", 8), ("b", 0)]', 3, [0, 8, 0]),
        ('[["a", 0], ["knife", "8"], ["b", 1.5]]', 3, [0, 8, 1.5]),
        ("(a, 0)\n(knife, 6)", 2, [0, 6]),
        ("<think>hmm", 2, [None, None]),
        ("There are 3 tokens in total: 3\na\t1\nb\t0\nc\t6", 3, [1, 0, 6]),
        ("a: 2\nknife: 9\nb = 0", 3, [2, 9, 0]),
        ("| token | activation |\n|---|---|\n| a | 0 |\n| knife | 7 |", 2, [0, 7]),
        ("a\t1\nb\t2\nc\t3", 2, [1, 2]),
        ("a\tunknown\nb\t4", 2, [None, 4]),
        ("no numbers at all", 2, [None, None]),
        ("", 1, [None]),
    ],
)
def test_parse_token_reply(reply: str, n: int, expected: list[float | None]) -> None:
    assert parse_token_reply(reply, n) == expected


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        ("Segment 1: activate\nSegment 2: non-activate", 2, [1.0, 0.0]),
        ("segment 1: ACTIVATE\nSEGMENT 2: Non Activate", 2, [1.0, 0.0]),
        ("- Segment 1: not activate\n* Segment 2: inactive\n• Segment 3: activated", 3, [0.0, 0.0, 1.0]),
        ("**Segment 1**: **activate**\nSegment #2 - does not activate", 2, [1.0, 0.0]),
        ("Segment 1: activate, Segment 2: non-activate, Segment 3: activate", 3, [1.0, 0.0, 1.0]),
        ("Segment 2: activate", 3, [None, 1.0, None]),
        ("Segment 1: activate\nSegment 9: activate", 2, [1.0, None]),
        ("<think>Segment 1: activate? no</think>Segment 1: non-activate", 1, [0.0]),
        ("Segment 1: activate\nOn reflection:\nSegment 1: nonactivate", 1, [0.0]),
        ("1: activate\n2) non-activate", 2, [1.0, 0.0]),
        ("Segment 1: 'a man with a knife' -> activate\nSegment 2: the weather -> non-activate", 2, [1.0, 0.0]),
        ("Segment 1: maybe", 1, [None]),
        ("I cannot tell.", 2, [None, None]),
    ],
)
def test_parse_segment_reply(reply: str, n: int, expected: list[float | None]) -> None:
    assert parse_segment_reply(reply, n) == expected


# -- embedding simulator ----------------------------------------------------------------------------------------


def test_embedding_simulator_high_when_explanation_matches_low_when_not() -> None:
    sim = EmbeddingSimulator(FakeEmbedder(), word_count)
    assert sim.name == "embedding:fake-bow"
    # token windows also cover the two tokens after a hit (true 0 there), so token-level r is lower by design
    for method, floor in (("segment", 0.7), ("token", 0.4)):
        good = sim.simulate(WEAPONS, MATCHING, method)
        bad = sim.simulate(WEAPONS, UNRELATED, method)
        assert good.status == "ok" and bad.status == "ok"
        assert good.corr is not None and good.corr > floor, (method, good)
        assert bad.corr is not None and bad.corr < 0.0, (method, bad)
        assert good.n_examples == 6 and good.simulator == "embedding:fake-bow"
    seg = sim.simulate(WEAPONS, MATCHING, "segment", n_segments=4)
    assert seg.n_units == 6 * 4


def test_embedding_simulator_estimates_segment_cheaper_than_token() -> None:
    sim = EmbeddingSimulator(FakeEmbedder(), word_count)
    token = sim.simulate(WEAPONS, MATCHING, "token")
    segment = sim.simulate(WEAPONS, MATCHING, "segment")
    assert "estimated" in token.detail and "estimated" in segment.detail
    assert 0 < segment.generated_tokens < token.generated_tokens
    assert 0 < segment.prompt_tokens and 0 < token.prompt_tokens
    examples = simulation_examples(WEAPONS, 6)
    # token-level estimate = the exact reply the LLM would write, counted: 2 words per token line
    assert token.generated_tokens == sum(2 * len(ex.tokens) for ex in examples)
    assert segment.generated_tokens == sum(3 * len(segment_spans(len(ex.tokens), 8)) for ex in examples)


def test_embedding_simulator_caches_windows_and_reports_continuous_values() -> None:
    embedder = FakeEmbedder()
    sim = EmbeddingSimulator(embedder, word_count)
    sim.simulate(WEAPONS, MATCHING, "token")
    calls = len(embedder.calls)
    embedded = [t for call in embedder.calls for t in call]
    assert len(embedded) == len(set(embedded))  # each window text embedded once
    sim.simulate(WEAPONS, MATCHING, "token")
    assert len(embedder.calls) == calls  # second run served from the cache


def test_embedding_simulator_skipped_and_constant() -> None:
    sim = EmbeddingSimulator(FakeEmbedder(), word_count)
    failed = Explanation(WEAPONS.feature_id, None, "failed", "openai:m", detail="HTTP 500")
    assert sim.simulate(WEAPONS, failed, "token").status == "skipped"
    calm = feature(quiet=["the sea is calm tonight and the moon is bright", "we ate soup"])
    score = sim.simulate(calm, ok_explanation(calm.feature_id, "calm sea"), "segment")
    assert score.status == "constant" and score.corr is None and "true activations" in score.detail
    with pytest.raises(ValueError):
        sim.simulate(WEAPONS, MATCHING, "word")  # type: ignore[arg-type]


def test_simulate_many_with_embedding_simulator_calls_on_result_per_score() -> None:
    other = feature("a dog=5 barked", fid="3_9", quiet=["silent night"])
    items = [(WEAPONS, MATCHING), (other, Explanation("3_9", None, "skipped", "offline"))]
    seen: list[SimulationScore] = []
    scores = simulate_many(EmbeddingSimulator(FakeEmbedder(), word_count), items, progress=False, on_result=seen.append)
    assert [(s.feature_id, s.method) for s in scores] == [
        ("14_4828", "token"), ("14_4828", "segment"), ("3_9", "token"), ("3_9", "segment")]
    assert seen == scores and [s.status for s in scores] == ["ok", "ok", "skipped", "skipped"]


# -- LLM simulator ----------------------------------------------------------------------------------------------

HOT = {"knife", "stab"}


def oracle(request) -> Reply:
    """A fake simulator LLM that knows the feature fires on knife/stab, with a reasoning block in front."""
    user = last_user_text(request)
    if "Tokens:\n" in user:
        lines = user.split("Tokens:\n", 1)[1].splitlines()
        tokens = [line.rsplit("\t", 1)[0] for line in lines]
        body = "\n".join(f"{t}\t{10 if t.strip() in HOT else 0}" for t in tokens)
        return Reply(json=chat_body(f"<think>look for knives</think>\n{body}", prompt_tokens=50, completion_tokens=30))
    segments = [line for line in user.splitlines() if line.startswith("Segment ")]
    body = "\n".join(
        f"Segment {i}: {'activate' if HOT & set(seg.split(': ', 1)[1].split()) else 'non-activate'}"
        for i, seg in enumerate(segments, start=1)
    )
    return Reply(json=chat_body(body, prompt_tokens=40, completion_tokens=8))


def test_llm_simulator_scores_tokens_and_segments_with_token_accounting(server: FakeOpenAIServer) -> None:
    server.responder = oracle
    sim = LLMSimulator(make_client(server))
    seen: list[SimulationScore] = []
    token, segment = simulate_many(sim, [(WEAPONS, MATCHING)], progress=False, on_result=seen.append)
    assert sim.name == "openai:sim-m" and len(seen) == 2
    assert token.method == "token" and token.status == "ok" and token.corr is not None and token.corr > 0.9
    assert segment.method == "segment" and segment.status == "ok" and segment.corr is not None and segment.corr > 0.6
    assert (token.prompt_tokens, token.generated_tokens) == (6 * 50, 6 * 30)  # one request per example
    assert (segment.prompt_tokens, segment.generated_tokens) == (6 * 40, 6 * 8)
    assert token.n_units == sum(len(ex.tokens) for ex in simulation_examples(WEAPONS, 6))
    assert len(server.requests) == 12 and server.max_in_flight >= 1


def test_llm_simulator_counts_cached_tokens(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = oracle
    sim = LLMSimulator(make_client(server, cache_dir=tmp_path / "cache"))
    first = sim.simulate(WEAPONS, MATCHING, "segment")
    again = LLMSimulator(make_client(server, cache_dir=tmp_path / "cache")).simulate(WEAPONS, MATCHING, "segment")
    assert len(server.requests) == 6  # the second run never reached the server
    assert (again.prompt_tokens, again.generated_tokens, again.corr) == (first.prompt_tokens, first.generated_tokens,
                                                                         first.corr)


def test_llm_simulator_malformed_reply_is_unparseable_with_snippet(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(json=chat_body("I would rather discuss the weather instead."))
    score = LLMSimulator(make_client(server)).simulate(WEAPONS, MATCHING, "segment")
    assert score.status == "unparseable" and score.corr is None
    assert "rather discuss the weather" in score.detail and score.generated_tokens == 6 * 7


def test_llm_simulator_fills_a_few_missing_lines_with_zero(server: FakeOpenAIServer) -> None:
    def drop_last_line(request) -> Reply:
        reply = oracle(request)
        text = reply.json["choices"][0]["message"]["content"]
        return Reply(json=chat_body("\n".join(text.splitlines()[:-1])))

    server.responder = drop_last_line
    score = LLMSimulator(make_client(server)).simulate(WEAPONS, MATCHING, "segment")
    assert score.status == "ok" and "6 of 48 units missing" in score.detail


def test_llm_simulator_retries_transient_errors(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=500, json=error_body("boom")), Reply(status=429, headers={"Retry-After": "0"}))
    server.responder = oracle
    score = LLMSimulator(make_client(server, concurrency=1)).simulate(WEAPONS, MATCHING, "segment")
    assert score.status == "ok" and len(server.requests) == 6 + 2


def test_llm_simulator_permanent_failure_is_a_status(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(status=502, json=error_body("bad gateway"))
    score = LLMSimulator(make_client(server, max_retries=0)).simulate(WEAPONS, MATCHING, "token")
    assert score.status == "failed" and "bad gateway" in score.detail and "6 of 6 requests failed" in score.detail


def test_llm_simulator_skips_without_request(server: FakeOpenAIServer) -> None:
    failed = Explanation(WEAPONS.feature_id, None, "unparseable", "openai:m")
    seen: list[SimulationScore] = []
    scores = simulate_many(LLMSimulator(make_client(server)), [(WEAPONS, failed)], progress=False,
                           on_result=seen.append)
    assert [s.status for s in scores] == ["skipped", "skipped"] and seen == scores and not server.requests
