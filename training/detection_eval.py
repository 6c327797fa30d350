"""Token pooling and leave-one-source-out (LOSO) evaluation of linear prompt detectors.

The bar a detection head must meet (issue 14) is a dense logistic probe on the model's activations, judged on
sources it never saw. This module holds the pure parts of that measurement, on numpy arrays:

* pooling per-token activations ``[T, d]`` of one prompt's content tokens into one vector ``[d]``
  (`pool_last`, `pool_mean`, `pool_max`, `pool_rolling`: an exponential moving average over tokens, then the
  maximum over tokens, with a stated half-life in tokens);
* metrics: `auroc`, `threshold_at_fpr`, `tpr_at_fpr`, and `flag_rate` of a group of items at a threshold;
* `loso_predict`: for every held-out source group, fit a standardised L2 logistic regression on the other
  groups (its ``C`` chosen by an inner group split of those training groups only) and predict the held-out
  rows; the held-out predictions are returned pooled over folds;
* `summarise`: pooled AUROC, TPR at 5% FPR, per-group AUROC / TPR / FPR, and the flag rate of ``edgy`` items at
  the threshold that flags 5% of plain ``benign`` items.

Nothing here loads a model or data; ``benchmarks/bench_detection_loso.py`` does that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "C_GRID",
    "DEFAULT_HALF_LIFE",
    "POOLS",
    "LosoResult",
    "auroc",
    "fit_probe",
    "flag_rate",
    "inner_select_c",
    "leave_pair_out",
    "loso_predict",
    "pool",
    "pool_last",
    "pool_max",
    "pool_mean",
    "pool_rolling",
    "summarise",
    "threshold_at_fpr",
    "tpr_at_fpr",
]

DEFAULT_HALF_LIFE = 8.0
"""Half-life, in tokens, of the EMA in the ``rolling`` pool: a token's weight halves every 8 tokens."""
C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
"""Inverse L2 strengths tried by the inner split (features are standardised first)."""


# ------------------------------------------------------------------------------------------------- pooling


def _check_tokens(acts: np.ndarray) -> np.ndarray:
    a = np.asarray(acts, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected per-token activations [T, d] with T >= 1, got shape {a.shape}")
    return a


def pool_last(acts: np.ndarray) -> np.ndarray:
    """The last token's activation: ``[T, d] -> [d]``."""
    return _check_tokens(acts)[-1].copy()


def pool_mean(acts: np.ndarray) -> np.ndarray:
    """The mean over tokens: ``[T, d] -> [d]``."""
    return _check_tokens(acts).mean(axis=0)


def pool_max(acts: np.ndarray) -> np.ndarray:
    """The per-dimension maximum over tokens: ``[T, d] -> [d]``."""
    return _check_tokens(acts).max(axis=0)


def pool_rolling(acts: np.ndarray, half_life: float = DEFAULT_HALF_LIFE) -> np.ndarray:
    """EMA over tokens, then the per-dimension maximum over positions: ``[T, d] -> [d]``.

    ``m_t = sum_{i<=t} w^(t-i) x_i / sum_{i<=t} w^(t-i)`` with ``w = 2 ** (-1 / half_life)`` (a bias-corrected
    EMA: ``m_1 = x_1``, and early positions are not shrunk towards zero). The result is ``max_t m_t``: a smoothed
    maximum that one outlying token moves by at most ``(1 - w)`` of its excess, and that does not grow with
    length the way a sum does. ``half_life -> 0`` gives `pool_max`; ``half_life -> inf`` gives the maximum of
    the running mean.
    """
    a = _check_tokens(acts)
    if not half_life > 0:
        raise ValueError("half_life must be > 0")
    w = 2.0 ** (-1.0 / half_life)
    num = np.zeros(a.shape[1])
    den = 0.0
    best = np.full(a.shape[1], -np.inf)
    for x in a:
        num = w * num + x
        den = w * den + 1.0
        np.maximum(best, num / den, out=best)
    return best


POOLS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "last": pool_last,
    "mean": pool_mean,
    "max": pool_max,
    "rolling": pool_rolling,
}
"""The pools by name; ``rolling`` uses `DEFAULT_HALF_LIFE`."""


def pool(acts: np.ndarray, how: str) -> np.ndarray:
    """Pool ``[T, d]`` into ``[d]`` with the named pool (one of `POOLS`)."""
    try:
        fn = POOLS[how]
    except KeyError:
        raise ValueError(f"unknown pool {how!r}; known: {sorted(POOLS)}") from None
    return fn(acts)


# ------------------------------------------------------------------------------------------------- metrics


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Mann-Whitney AUROC of ``scores [n]`` against binary ``labels [n]``, ties counted half; NaN if one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_at_fpr(neg_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """The smallest threshold ``t`` among the negatives' scores with at most ``fpr`` of them strictly above ``t``.

    An item is flagged when its score is ``> t``. With no negatives, ``+inf`` (flag nothing).
    """
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))
    if len(neg) == 0:
        return float("inf")
    k = int(math.floor(fpr * len(neg) + 1e-9))  # negatives allowed above t
    if k >= len(neg):
        return float("-inf")
    t = float(neg[len(neg) - k - 1])
    return t


def flag_rate(scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of ``scores`` strictly above ``threshold`` (NaN for none)."""
    s = np.asarray(scores, dtype=np.float64)
    return float((s > threshold).mean()) if len(s) else float("nan")


def tpr_at_fpr(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, fpr: float = 0.05) -> float:
    """True-positive rate at `threshold_at_fpr` of the label-0 scores (strictly above it counts as flagged)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    return flag_rate(s[y == 1], threshold_at_fpr(s[y == 0], fpr)) if (y == 1).any() else float("nan")


# --------------------------------------------------------------------------------------------------- probes


def fit_probe(X: np.ndarray, y: np.ndarray, C: float, *, max_iter: int = 1000):
    """Standardised, class-balanced L2 logistic regression on ``X [n, d]``, ``y [n]`` (a fitted pipeline).

    Classes are weighted to equal total weight, so that a fold whose held-out source removes many rows of one
    class does not shift the intercept by the change in base rate (which would distort AUROC pooled over folds).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced"))
    return model.fit(X, y)


def _decision(model, X: np.ndarray) -> np.ndarray:
    return np.asarray(model.decision_function(X), dtype=np.float64)


def group_folds(groups: Sequence[str] | np.ndarray, n_splits: int) -> np.ndarray:
    """Fold index of every row: the distinct groups, sorted, dealt round-robin into ``min(n_splits, n_groups)``
    folds, so a group's rows always share a fold. Shape: ``groups [n]`` -> ``[n]``."""
    groups = np.asarray(groups)
    keys = sorted(set(groups.tolist()))
    k = min(n_splits, len(keys))
    fold_of = {g: i % k for i, g in enumerate(keys)}
    return np.array([fold_of[g] for g in groups.tolist()])


def inner_select_c(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, c_grid: Sequence[float] = C_GRID, n_splits: int = 3
) -> tuple[float, dict[float, float]]:
    """Choose ``C`` by a group split of the rows given (the outer fold's *training* rows only).

    The distinct groups are dealt, in sorted order, round-robin into ``min(n_splits, n_groups)`` folds; each fold
    is predicted by a probe fitted on the others, the predictions are pooled, and the ``C`` with the highest
    pooled AUROC wins (ties: the smaller ``C``). With fewer than two groups, or a training part holding one class,
    a stratified row split stands in for that fold. Returns ``(C, {C: pooled AUROC})``.

    Shapes: ``X [n, d]``, ``y [n]``, ``groups [n]``.
    """
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups)
    k = min(n_splits, len(set(groups.tolist())))
    if k >= 2:
        fold = group_folds(groups, n_splits)
    else:  # one group: stratified row split
        k = n_splits
        fold = np.zeros(len(y), dtype=int)
        for cls in (0, 1):
            idx = np.nonzero(y == cls)[0]
            fold[idx] = np.arange(len(idx)) % k
    scores: dict[float, float] = {}
    for C in c_grid:
        pred = np.full(len(y), np.nan)
        for f in range(k):
            tr, te = fold != f, fold == f
            if not te.any():
                continue
            if len(set(y[tr].tolist())) < 2:
                continue
            pred[te] = _decision(fit_probe(X[tr], y[tr], C), X[te])
        ok = ~np.isnan(pred)
        scores[float(C)] = auroc(pred[ok], y[ok])
    best = max(scores, key=lambda c: (np.nan_to_num(scores[c], nan=-1.0), -c))
    return best, scores


@dataclass
class LosoResult:
    """Held-out predictions pooled over LOSO folds.

    Attributes:
        scores: ``[n]`` held-out decision value of every row (each from the fold that held its group out).
        fold_c: the ``C`` each held-out group's probe used.
        inner_auroc: per held-out group, the inner split's pooled AUROC for each ``C`` tried.
        train_groups: per held-out group, the groups its probe was trained on (for checks and the report).
    """

    scores: np.ndarray
    fold_c: dict[str, float] = field(default_factory=dict)
    inner_auroc: dict[str, dict[float, float]] = field(default_factory=dict)
    train_groups: dict[str, list[str]] = field(default_factory=dict)


def loso_predict(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    c_grid: Sequence[float] = C_GRID,
    n_inner: int = 3,
    fit: Callable[[np.ndarray, np.ndarray, float], object] | None = None,
) -> LosoResult:
    """Leave-one-group-out predictions of a standardised L2 logistic probe.

    For each group ``g`` (sorted): the rows of the other groups are the training rows; ``C`` is chosen on them
    alone by `inner_select_c` (``g`` takes no part), a probe is fitted on all of them with that ``C``, and the
    rows of ``g`` are scored. A fold whose training rows hold one class scores its rows NaN.

    Args:
        X: features ``[n, d]``.
        y: binary labels ``[n]`` (1 = unsafe).
        groups: fold key of every row ``[n]`` (the source group).
        c_grid: the ``C`` values the inner split tries.
        n_inner: inner folds (over training groups).
        fit: ``fit(X_train, y_train, C) -> model`` with ``decision_function`` (default: `fit_probe`); a hook for
            tests.
    """
    fitter = fit or fit_probe
    y = np.asarray(y, dtype=int)
    g = np.asarray(groups)
    scores = np.full(len(y), np.nan)
    out = LosoResult(scores)
    for held in sorted(set(g.tolist())):
        te = g == held
        tr = ~te
        out.train_groups[held] = sorted(set(g[tr].tolist()))
        if len(set(y[tr].tolist())) < 2:
            continue
        if len(c_grid) == 1:
            C, inner = float(c_grid[0]), {}
        else:
            C, inner = inner_select_c(X[tr], y[tr], g[tr], c_grid=c_grid, n_splits=n_inner)
        model = fitter(X[tr], y[tr], C)
        scores[te] = _decision(model, X[te])
        out.fold_c[held] = C
        out.inner_auroc[held] = inner
    return out


def leave_pair_out(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    c_grid: Sequence[float] = C_GRID,
    n_inner: int = 3,
    fit: Callable[[np.ndarray, np.ndarray, float], object] | None = None,
) -> dict[tuple[str, str], float]:
    """AUROC of one probe on two held-out groups at once: one that holds unsafe rows, one that holds safe rows.

    Pooling LOSO predictions compares scores of different fold models, so a source whose fold model is offset
    (other intercept, other scale) lowers the pooled AUROC even when each model ranks well. Here, for every pair
    ``(p, n)`` of distinct groups with ``p`` holding label-1 rows and ``n`` label-0 rows, the probe is fitted on
    the *other* groups (``C`` by `inner_select_c` on them only) and the AUROC is taken over the label-1 rows of
    ``p`` against the label-0 rows of ``n``, all scored by that one model. Shapes: ``X [n, d]``, ``y [n]``,
    ``groups [n]``. Returns ``{(p, n): AUROC}`` (NaN where the training part holds one class).
    """
    fitter = fit or fit_probe
    y = np.asarray(y, dtype=int)
    g = np.asarray(groups)
    keys = sorted(set(g.tolist()))
    pos = [k for k in keys if ((g == k) & (y == 1)).any()]
    neg = [k for k in keys if ((g == k) & (y == 0)).any()]
    out: dict[tuple[str, str], float] = {}
    for p in pos:
        for n in neg:
            if p == n:
                continue
            tr = (g != p) & (g != n)
            if len(set(y[tr].tolist())) < 2:
                out[(p, n)] = float("nan")
                continue
            C, _ = inner_select_c(X[tr], y[tr], g[tr], c_grid=c_grid, n_splits=n_inner)
            model = fitter(X[tr], y[tr], C)
            te = ((g == p) & (y == 1)) | ((g == n) & (y == 0))
            out[(p, n)] = auroc(_decision(model, X[te]), y[te])
    return out


# --------------------------------------------------------------------------------------------------- report


def summarise(
    scores: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    kinds: Sequence[str] | np.ndarray,
    *,
    fpr: float = 0.05,
) -> dict:
    """Pooled and per-group metrics of held-out scores.

    Args:
        scores: ``[n]`` held-out scores (higher = more unsafe).
        y: ``[n]`` binary labels.
        groups: ``[n]`` the group each row is reported under (for example the source, or source + wrapping).
        kinds: ``[n]`` fine labels: ``unsafe`` | ``benign`` | ``edgy``.
        fpr: the false-positive budget.

    Returns a dict: ``auroc`` (pooled), ``tpr@5%fpr`` (threshold on all label-0 rows), ``benign_threshold`` (flags
    `fpr` of plain ``benign`` rows), ``tpr@5%benign`` and ``edgy_flag@5%benign`` at that threshold, and
    ``per_group``: ``{group: {n, n_pos, auroc (NaN unless both classes), tpr, fpr}}`` with TPR / FPR at the pooled
    all-negatives threshold.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    g = np.asarray(groups)
    kinds = np.asarray(kinds)
    t_all = threshold_at_fpr(s[y == 0], fpr)
    t_benign = threshold_at_fpr(s[kinds == "benign"], fpr)
    pct = f"{round(fpr * 100)}%"
    out: dict = {
        "n": int(len(s)),
        "n_pos": int((y == 1).sum()),
        "auroc": auroc(s, y),
        f"tpr@{pct}fpr": flag_rate(s[y == 1], t_all),
        "threshold": t_all,
        "benign_threshold": t_benign,
        f"tpr@{pct}benign": flag_rate(s[kinds == "unsafe"], t_benign),
        f"edgy_flag@{pct}benign": flag_rate(s[kinds == "edgy"], t_benign),
        f"edgy_flag@{pct}fpr": flag_rate(s[kinds == "edgy"], t_all),
    }
    per: dict[str, dict] = {}
    for key in sorted(set(g.tolist())):
        m = g == key
        per[key] = {
            "n": int(m.sum()),
            "n_pos": int((y[m] == 1).sum()),
            "auroc": auroc(s[m], y[m]),
            "tpr": flag_rate(s[m & (y == 1)], t_all),
            "fpr": flag_rate(s[m & (y == 0)], t_all),
        }
    out["per_group"] = per
    return out
