"""Precision/recall filter (paper eq. 6) on hand-made pair activations."""

from __future__ import annotations

import pytest
import torch

from safesail_training.db_filter import FilterConfig, filter_features, precision_recall


def test_precision_recall_by_hand() -> None:
    # 4 pairs, 3 features
    c = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    p, r, qc, qd = precision_recall(c, d)
    assert qc.tolist() == [3, 2, 0] and qd.tolist() == [0, 3, 0]
    assert p.tolist() == pytest.approx([1.0, 0.4, 0.0])
    assert r.tolist() == pytest.approx([0.75, 0.5, 0.0])


def test_fire_threshold_counts_only_stronger_activations() -> None:
    c = torch.tensor([[0.2], [0.9]])
    d = torch.tensor([[0.3], [0.0]])
    p, r, _, _ = precision_recall(c, d, fire_threshold=0.5)
    assert p.item() == 1.0 and r.item() == 0.5


def test_filter_keeps_concept_features_and_drops_style_features() -> None:
    n = 10
    concepts = [("violence", "assault")] * n + [("drugs", "use")] * n
    c = torch.zeros(2 * n, 3)
    d = torch.zeros(2 * n, 3)
    c[:n, 0] = 1.0  # feature 0: fires on every violence query, never on twins -> kept for violence
    c[:, 1] = 1.0  # feature 1: fires on both sides of every pair (a style feature) -> dropped
    d[:, 1] = 1.0
    c[n : n + 3, 2] = 1.0  # feature 2: drugs recall 0.3, precision 1 -> kept for drugs
    c[:1, 2] = 1.0  # and recall 0.1 on violence -> not kept for violence
    kept = filter_features(c, d, concepts)
    assert set(kept) == {0, 2}
    assert [(h.level0, h.level1) for h in kept[0]] == [("violence", "assault")]
    assert kept[0][0].precision == 1.0 and kept[0][0].recall == 1.0 and kept[0][0].n_pairs == n
    assert [h.level0 for h in kept[2]] == ["drugs"]
    assert kept[2][0].concept_fires == 3 and kept[2][0].deconcept_fires == 0


def test_feature_keeps_every_concept_it_passes() -> None:
    concepts = [("a", "x")] * 5 + [("b", "y")] * 5
    c = torch.ones(10, 1)
    d = torch.zeros(10, 1)
    d[0, 0] = 1.0  # precision 5/6 on concept a, 1.0 on b
    kept = filter_features(c, d, concepts)
    assert [(h.level0, h.precision) for h in kept[0]] == [("b", 1.0), ("a", pytest.approx(0.8333, abs=1e-4))]


def test_concepts_with_too_few_pairs_are_skipped_and_bad_shapes_rejected() -> None:
    concepts = [("a", "x")] * 3
    assert filter_features(torch.ones(3, 2), torch.zeros(3, 2), concepts, FilterConfig(min_pairs=5)) == {}
    with pytest.raises(ValueError, match="concept labels"):
        filter_features(torch.ones(3, 2), torch.zeros(3, 2), concepts[:2])
    with pytest.raises(ValueError, match="shape"):
        precision_recall(torch.ones(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        FilterConfig(min_precision=0)


def _noisy_pairs(seed: int = 0, n_concepts: int = 4, n_pairs: int = 20, n_features: int = 400, rate: float = 0.25):
    """Features firing at random on a quarter of queries, plus 5 real concept features per concept."""
    g = torch.Generator().manual_seed(seed)
    concepts = [("d", f"c{i}") for i in range(n_concepts) for _ in range(n_pairs)]
    c = (torch.rand(n_concepts * n_pairs, n_features, generator=g) < rate).float()
    d = (torch.rand(n_concepts * n_pairs, n_features, generator=g) < rate).float()
    real = {}
    for i in range(n_concepts):
        rows = slice(i * n_pairs, (i + 1) * n_pairs)
        for j in range(5):
            f = i * 5 + j
            c[rows, f] = (torch.arange(n_pairs) % 5 != j % 5).float()  # fires on exactly 80% of its concept's queries
            d[rows, f] = 0.0
            real[f] = f"c{i}"
    return c, d, concepts, real


def test_null_count_is_near_zero_for_real_features_and_large_for_chance_ones() -> None:
    c, d, concepts, real = _noisy_pairs()
    from safesail_training.db_filter import null_pass_count

    passed = filter_features(c, d, concepts)
    assert set(real) <= set(passed)  # the planted features pass
    null = null_pass_count(c, d, concepts, FilterConfig())
    assert null > 0.3 * len(passed)  # and many chance features pass the paper's bars too


def test_calibration_raises_recall_until_the_null_is_small() -> None:
    from safesail_training.db_filter import calibrate_recall

    c, d, concepts, real = _noisy_pairs()
    cal = calibrate_recall(c, d, concepts, FilterConfig(), target_fdr=0.1)
    assert cal.config.min_recall > 0.2 and cal.estimated_fdr <= 0.1
    kept = filter_features(c, d, concepts, cal.config)
    assert set(real) <= set(kept) and len(kept) <= len(real) * 1.2
    assert [s["min_recall"] for s in cal.sweep] == sorted(s["min_recall"] for s in cal.sweep)
    assert cal.sweep[0]["min_recall"] == 0.2 and cal.sweep[0]["fdr"] > 0.1
    with pytest.raises(ValueError):
        calibrate_recall(c, d, concepts, FilterConfig(), target_fdr=0)
