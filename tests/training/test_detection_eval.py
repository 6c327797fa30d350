"""Pooling, metrics and leave-one-source-out evaluation on synthetic data where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safesail_training.detection_eval import (
    auroc,
    fit_probe,
    flag_rate,
    inner_select_c,
    leave_pair_out,
    loso_predict,
    pool,
    pool_last,
    pool_max,
    pool_mean,
    pool_rolling,
    summarise,
    threshold_at_fpr,
    tpr_at_fpr,
)

# ------------------------------------------------------------------------------------------------- pooling


def test_simple_pools() -> None:
    a = np.array([[1.0, -2.0], [3.0, 0.0], [2.0, 5.0]])
    assert pool_last(a).tolist() == [2.0, 5.0]
    assert pool_mean(a).tolist() == [2.0, 1.0]
    assert pool_max(a).tolist() == [3.0, 5.0]
    assert pool(a, "mean").tolist() == [2.0, 1.0]
    with pytest.raises(ValueError):
        pool(a, "median")
    with pytest.raises(ValueError):
        pool_mean(np.zeros((0, 3)))


def test_rolling_pool_is_a_bias_corrected_ema_then_max() -> None:
    a = np.array([[4.0], [0.0], [0.0]])
    w = 0.5  # half-life 1 token
    m = [4.0, (w * 4) / (w + 1), (w * w * 4) / (w * w + w + 1)]
    assert pool_rolling(a, half_life=1.0)[0] == pytest.approx(max(m))
    # one spike among many tokens moves the rolling pool far less than the max pool
    spike = np.zeros((50, 1))
    spike[25] = 10.0
    assert pool_max(spike)[0] == 10.0
    assert pool_rolling(spike, half_life=8.0)[0] < 1.0
    # a sustained signal reaches its level; tiny half-life -> max, huge -> running mean
    assert pool_rolling(np.ones((40, 1)) * 3.0)[0] == pytest.approx(3.0)
    b = np.array([[1.0], [5.0], [2.0]])
    assert pool_rolling(b, half_life=1e-3)[0] == pytest.approx(5.0)
    assert pool_rolling(b, half_life=1e9)[0] == pytest.approx(max(1.0, 3.0, 8.0 / 3))
    with pytest.raises(ValueError):
        pool_rolling(b, half_life=0.0)


# ------------------------------------------------------------------------------------------------- metrics


def test_auroc_hand_cases() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # pairs: (0.3 > 0.1), (0.3 < 0.4), (0.7 > 0.1), (0.7 > 0.4) -> 3 / 4
    assert auroc([0.1, 0.4, 0.3, 0.7], [0, 0, 1, 1]) == 0.75
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_tpr_at_fpr_hand_example() -> None:
    neg = [float(i) for i in range(20)]  # 0..19: 5% of 20 = one negative may sit above the threshold
    assert threshold_at_fpr(neg, 0.05) == 18.0
    assert flag_rate(neg, 18.0) == pytest.approx(0.05)
    pos = [18.5, 19.5, 25.0, 3.0]  # above 18: three of four
    scores = neg + pos
    labels = [0] * 20 + [1] * 4
    assert tpr_at_fpr(scores, labels, 0.05) == pytest.approx(0.75)
    assert tpr_at_fpr(scores, labels, 0.0) == pytest.approx(0.5)  # threshold 19: 19.5 and 25 only
    assert threshold_at_fpr([], 0.05) == float("inf")


def test_summarise_edgy_rate_uses_benign_threshold() -> None:
    kinds = np.array(["benign"] * 20 + ["edgy"] * 4 + ["unsafe"] * 2)
    s = np.r_[np.arange(20.0), [18.5, 30.0, 1.0, 2.0], [40.0, 0.5]]
    y = (kinds == "unsafe").astype(int)
    groups = np.array(["a"] * 10 + ["b"] * 16)
    out = summarise(s, y, groups, kinds)
    assert out["benign_threshold"] == 18.0
    assert out["edgy_flag@5%benign"] == pytest.approx(0.5)
    assert out["tpr@5%benign"] == pytest.approx(0.5)
    assert math.isnan(out["per_group"]["a"]["auroc"]) and not math.isnan(out["per_group"]["b"]["auroc"])
    assert out["per_group"]["a"]["n"] == 10 and out["per_group"]["b"]["n_pos"] == 2


# ------------------------------------------------------------------------------------------------- LOSO


def _toy(separable: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six sources; some hold one class only, as in the real set. ``X [n, 8]``."""
    rng = np.random.default_rng(seed)
    layout = {"s0": (30, 30), "s1": (40, 0), "s2": (0, 40), "s3": (25, 25), "s4": (0, 30), "s5": (30, 0)}
    X, y, g = [], [], []
    for src, (n_pos, n_neg) in layout.items():
        for lab, n in ((1, n_pos), (0, n_neg)):
            x = rng.normal(size=(n, 8))
            if separable:
                x[:, 0] += 4.0 * (2 * lab - 1)
            X.append(x)
            y += [lab] * n
            g += [src] * n
    return np.vstack(X), np.array(y), np.array(g)


def test_loso_separable_gives_auroc_near_one() -> None:
    X, y, g = _toy(separable=True)
    res = loso_predict(X, y, g, c_grid=(0.01, 1.0))
    assert not np.isnan(res.scores).any()
    assert auroc(res.scores, y) > 0.99
    assert tpr_at_fpr(res.scores, y, 0.05) > 0.95
    assert set(res.fold_c) == set(g.tolist())


def test_loso_random_gives_auroc_near_half() -> None:
    X, y, g = _toy(separable=False, seed=1)
    res = loso_predict(X, y, g, c_grid=(0.01, 1.0))
    assert abs(auroc(res.scores, y) - 0.5) < 0.12


def test_loso_never_trains_or_selects_c_on_the_held_out_source() -> None:
    X, y, g = _toy(separable=True)
    X = np.c_[X, np.arange(len(y))]  # last column: the row index, so a fit can tell which rows it saw
    seen: list[set[int]] = []

    def spy(Xt: np.ndarray, yt: np.ndarray, C: float):
        seen.append({int(i) for i in Xt[:, -1]})
        return fit_probe(Xt, yt, C)

    rows_of = {s: {int(i) for i in np.nonzero(g == s)[0]} for s in set(g.tolist())}
    res = loso_predict(X, y, g, c_grid=(1.0,), fit=spy)
    assert len(seen) == len(rows_of)
    for held, rows in zip(sorted(rows_of), seen):
        assert rows.isdisjoint(rows_of[held])
        assert rows == set(range(len(y))) - rows_of[held]
        assert held not in res.train_groups[held]

    # the inner C search sees the training rows only: held-out rows never reach any inner fit
    import safesail_training.detection_eval as de

    inner_rows: list[set[int]] = []
    real = de.fit_probe

    def spy_inner(Xt: np.ndarray, yt: np.ndarray, C: float, **kw):
        inner_rows.append({int(i) for i in Xt[:, -1]})
        return real(Xt, yt, C, **kw)

    de.fit_probe = spy_inner
    try:
        sub = g != "s0"
        inner_select_c(X[sub], y[sub], g[sub], c_grid=(0.1, 1.0))
    finally:
        de.fit_probe = real
    assert inner_rows and all(r.isdisjoint(rows_of["s0"]) for r in inner_rows)


def test_inner_select_c_prefers_strong_regularisation_on_noise_features() -> None:
    X, y, g = _toy(separable=True, seed=3)
    rng = np.random.default_rng(0)
    X = np.c_[X[:, :1] + rng.normal(scale=3.0, size=(len(y), 1)), rng.normal(size=(len(y), 150))]
    C, scores = inner_select_c(X, y, g, c_grid=(1e-3, 10.0))
    assert set(scores) == {1e-3, 10.0}
    assert C == 1e-3 and scores[1e-3] > scores[10.0]


def test_leave_pair_out_holds_out_both_sources_and_ranks_within_one_model() -> None:
    X, y, g = _toy(separable=True)
    X = np.c_[X, np.arange(len(y))]
    seen: list[set[int]] = []

    def spy(Xt: np.ndarray, yt: np.ndarray, C: float):
        seen.append({int(i) for i in Xt[:, -1]})
        return fit_probe(Xt[:, :-1], yt, C)

    class Drop:  # scores with the row-index column removed, as the spy fitted
        def __init__(self, m):
            self.m = m

        def decision_function(self, Z: np.ndarray) -> np.ndarray:
            return self.m.decision_function(Z[:, :-1])

    out = leave_pair_out(X, y, g, c_grid=(1.0,), fit=lambda a, b, c: Drop(spy(a, b, c)))
    pos = {"s0", "s1", "s3", "s5"}
    neg = {"s0", "s2", "s3", "s4"}
    assert set(out) == {(p, n) for p in pos for n in neg if p != n}
    assert all(v > 0.99 for v in out.values())
    rows_of = {s: {int(i) for i in np.nonzero(g == s)[0]} for s in set(g.tolist())}
    for (p, n), rows in zip(sorted(out), seen):
        assert rows.isdisjoint(rows_of[p] | rows_of[n])
