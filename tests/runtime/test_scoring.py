"""Risk head, batch-score records and the pair-fitted head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safesail_guard.events import FeatureCatalog, FeatureHit, FeatureInfo, TokenActivations
from safesail_guard.runtime.batch_score import ScoreError, ScoreItem, parse_jsonl, parse_record
from safesail_guard.runtime.scoring import RiskHead, RiskHeadError, pool_features
from safesail_training.risk_head import cross_validate, fit_nonneg_logistic

CAT = FeatureCatalog([
    FeatureInfo("6_1", 6, 1, ("weapons",), ("weapons/firearms",), "guns", 2.0),
    FeatureInfo("6_2", 6, 2, ("drugs",), ("drugs/synthesis",), "meth", 4.0),
    FeatureInfo("14_3", 14, 3, ("weapons", "terror"), ("weapons/explosives", "terror/attack"), "bombs", 1.0),
])


def tok(pos, hits, scope="prompt", content=True):
    return TokenActivations(pos, pos, f"t{pos}", scope, content, [FeatureHit(f, a * 2, a) for f, a in hits])


def test_pool_takes_max_over_watched_prompt_tokens():
    toks = [tok(0, [("6_1", 0.2)]), tok(1, [("6_1", 0.7), ("6_2", 0.1)]), tok(2, [("6_2", 0.9)], content=False),
            tok(3, [("14_3", 0.5)], scope="response")]
    assert pool_features(toks) == {"6_1": 0.7, "6_2": 0.1}
    assert pool_features(toks, ("prompt", "response")) == {"6_1": 0.7, "6_2": 0.1, "14_3": 0.5}


def test_score_is_an_exact_sum_of_contributions_and_domains_use_their_features():
    head = RiskHead({"6_1": 2.0, "14_3": 1.0}, -1.0, CAT)
    r = head.score([tok(0, [("6_1", 0.5), ("14_3", 1.0), ("6_2", 0.9)])])
    z = -1.0 + 2.0 * 0.5 + 1.0 * 1.0
    assert r.score == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
    assert [f["id"] for f in r.top_features] == ["6_1", "14_3"]  # 6_2 has no weight: no contribution
    assert sum(f["contribution"] for f in r.top_features) == pytest.approx(z + 1.0)
    assert r.concepts["drugs"] == pytest.approx(1 / (1 + np.exp(1.0)), abs=1e-6)  # bias only
    assert r.concepts["terror"] < r.concepts["weapons"] <= r.score
    assert r.top_features[0]["explanation"] == "guns" and r.top_features[0]["layer"] == 6


def test_no_hits_gives_the_bias_score():
    head = RiskHead({"6_1": 2.0}, -3.0, CAT)
    assert head.score([tok(0, [])]).score == pytest.approx(1 / (1 + np.exp(3.0)), abs=1e-6)


def test_head_json_round_trip_and_validation():
    head = RiskHead({"6_1": 0.5, "6_2": 0.0}, -1.25, CAT, {"fitted_on": "x"})
    back = RiskHead.from_json(head.to_json(), CAT)
    assert back.weights == {"6_1": 0.5} and back.bias == -1.25 and back.meta == {"fitted_on": "x"}
    with pytest.raises(RiskHeadError, match="not in the database"):
        RiskHead.from_json(json.dumps({"schema": 1, "bias": 0, "weights": {"99_9": 1.0}}), CAT)
    with pytest.raises(RiskHeadError, match=">= 0"):
        RiskHead.from_json(json.dumps({"schema": 1, "bias": 0, "weights": {"6_1": -1.0}}), CAT)
    with pytest.raises(RiskHeadError, match="not JSON"):
        RiskHead.from_json("{", CAT)


def test_nonneg_logistic_recovers_the_informative_feature():
    rng = np.random.default_rng(0)
    X = rng.random((400, 5)).astype(np.float32)
    y = (X[:, 2] + 0.1 * rng.standard_normal(400) > 0.5).astype(np.float32)
    w, b = fit_nonneg_logistic(X, y, 1e-3)
    assert (w >= 0).all() and int(np.argmax(w)) == 2 and w[2] > 3 * np.delete(w, 2).max()
    groups = [str(i // 2) for i in range(400)]
    assert cross_validate(X, y, groups, 1e-3) > 0.9
    w_sparse, _ = fit_nonneg_logistic(X, y, 0.5)
    assert (w_sparse > 0).sum() <= (w > 0).sum()


def test_parse_records_and_bad_lines():
    lines = ['{"id": 1, "text": "hello"}', "", "not json", '{"id": "m", "messages": [{"role": "user", "content": "hi"}]}',
             '{"id": 3, "text": ""}', '{"id": 4}', '{"id": 5, "text": "a", "messages": []}', '[1]',
             '{"id": 6, "messages": [{"role": "bot", "content": "x"}]}', '{"id": true, "text": "x"}']
    out = list(parse_jsonl(lines))
    assert isinstance(out[0], ScoreItem) and out[0].prompt == "hello"
    assert isinstance(out[1], ScoreError) and "line 3" in out[1].error and "invalid JSON" in out[1].error
    assert isinstance(out[2], ScoreItem) and out[2].prompt[0]["content"] == "hi"
    errors = [o.error for o in out[3:]]
    assert "empty" in errors[0] and "exactly one" in errors[1] and "exactly one" in errors[2]
    assert "JSON object" in errors[3] and "role" in errors[4] and "'id'" in errors[5]
    assert parse_record({"id": 1, "text": "x" * 300_000}, "line 1").error.endswith("200000")


def test_pick_scoring_latents_prefers_concept_latents_and_skips_excluded():
    import torch

    from safesail_training.risk_head import pick_scoring_latents

    g = torch.Generator().manual_seed(0)
    n, L = 200, 30
    concept = torch.rand(n, L, generator=g) * 0.2
    deconcept = torch.rand(n, L, generator=g) * 0.2
    concept[:, 7] += 1.0  # latents 7 (point a) and 3 (point b) separate concept from twin
    other_c, other_d = torch.rand(n, L, generator=g) * 0.2, torch.rand(n, L, generator=g) * 0.2
    other_c[:, 3] += 1.0
    pm = {"a": {"concept": concept, "deconcept": deconcept}, "b": {"concept": other_c, "deconcept": other_d}}
    got = pick_scoring_latents(pm, 2, {})
    assert got == {"a": [7], "b": [3]}
    got = pick_scoring_latents(pm, 1, {"a": {7}})
    assert got["a"] != [7] and sum(len(v) for v in got.values()) == 1
