"""Fit the guard's risk head on the project's concept pairs (concept query = 1, de-concept twin = 0).

Inputs per text: each database feature's largest normalized activation over the user's tokens, exactly as the
runtime guard computes it (`Guard.scan_batch`, same firing rule). The head is a logistic regression with
non-negative weights and an L1 penalty (projected gradient), so the score is a short, exact sum of feature
contributions. The L1 strength is picked by grouped cross-validation (a pair's two texts stay in one fold).

How it connects: the ``guard_files`` stage of `safesail build-db` (`safesail_training.build_db_write`) fits the
head with `fit_risk_head` through a runtime `Guard` and stores it in the database; the guard loads it as a
`safesail_guard.runtime.scoring.RiskHead`. `pick_scoring_latents` serves the ``filter`` stage
(`build_db_select`), and `benchmarks/bench_detection.py` uses the pooled-matrix helpers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from safesail_guard.runtime.scoring import RiskHead, pool_features
from safesail_training.style_check import auroc

L1_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def pooled_matrix(guard: Any, prompts: Sequence[Any], *, batch_size: int = 16,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[str]]:
    """``[n, F]`` max normalized activation per prompt and feature (feature order: the guard's catalog)."""
    ids = list(guard.catalog)
    col = {f: j for j, f in enumerate(ids)}
    results = guard.scan_batch(list(prompts), batch_size=batch_size, progress=progress)
    X = np.zeros((len(prompts), len(ids)), dtype=np.float32)
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            raise ValueError(f"prompt {i} could not be scanned: {r}")
        for f, v in pool_features(r.tokens).items():
            X[i, col[f]] = v
    return X, ids


def fit_nonneg_logistic(X: np.ndarray, y: np.ndarray, l1: float, *, steps: int = 600, lr: float = 0.05,
                        seed: int = 0) -> tuple[np.ndarray, float]:
    """Minimise mean BCE + ``l1 * sum(w)`` subject to ``w >= 0`` (Adam, projection after each step)."""
    g = torch.Generator().manual_seed(seed)
    Xt, yt = torch.from_numpy(X).float(), torch.from_numpy(y).float()
    w = (torch.rand(X.shape[1], generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w + b, yt) + l1 * w.sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0)
    wf = w.detach().numpy().astype(np.float64)
    wf[wf < 1e-4] = 0.0
    return wf, float(b.detach())


def _folds(groups: Sequence[str], k: int, seed: int) -> list[set[str]]:
    uniq = sorted(set(groups))
    random.Random(seed).shuffle(uniq)
    return [set(uniq[i::k]) for i in range(k)]


def cross_validate(X: np.ndarray, y: np.ndarray, groups: Sequence[str], l1: float, *, k: int = 5,
                   seed: int = 0) -> float:
    """Mean held-out AUROC over ``k`` grouped folds."""
    groups_arr = np.array(groups)
    scores = []
    for fold in _folds(groups, k, seed):
        test = np.isin(groups_arr, list(fold))
        w, b = fit_nonneg_logistic(X[~test], y[~test], l1, seed=seed)
        z = X[test] @ w + b
        a = auroc(z[y[test] == 1].tolist(), z[y[test] == 0].tolist())
        if a is not None:
            scores.append(a)
    return float(np.mean(scores)) if scores else float("nan")


def select_and_fit(X: np.ndarray, y: np.ndarray, groups: Sequence[str], *, l1_grid: Sequence[float] = L1_GRID,
                   folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float, float, dict[float, float]]:
    """Pick the L1 strength by grouped CV (ties go to the sparser one) and refit on all rows.

    Returns ``(weights, bias, chosen l1, {l1: mean held-out AUROC})``.
    """
    cv = {l1: cross_validate(X, y, groups, l1, k=folds, seed=seed) for l1 in l1_grid}
    best = max(cv, key=lambda l1: (round(cv[l1], 3), l1))
    w, b = fit_nonneg_logistic(X, y, best, seed=seed)
    return w, b, best, cv


def fit_risk_head(guard: Any, pairs: Sequence[Any], *, l1_grid: Sequence[float] = L1_GRID, folds: int = 5,
                  seed: int = 0, log: Callable[[str], None] = print,
                  progress: Callable[[int], None] | None = None) -> RiskHead:
    """Scan every pair's two texts with ``guard``, pick L1 by grouped CV, refit on all pairs."""
    texts = [p.concept for p in pairs] + [p.deconcept for p in pairs]
    y = np.array([1] * len(pairs) + [0] * len(pairs), dtype=np.float32)
    groups = [p.id for p in pairs] * 2
    X, ids = pooled_matrix(guard, texts, progress=progress)
    w, b, best, cv = select_and_fit(X, y, groups, l1_grid=l1_grid, folds=folds, seed=seed)
    weights = {ids[j]: float(w[j]) for j in np.nonzero(w)[0]}
    z = X @ w + b
    meta = {"fitted_on": "concept pairs (concept=1, de-concept twin=0)", "texts": len(texts), "pairs": len(pairs),
            "pooling": "max normalized activation over user tokens", "firing": guard.firing,
            "l1": best, "cv_auroc": {str(k): round(v, 4) for k, v in cv.items()},
            "train_auroc": round(auroc(z[y == 1].tolist(), z[y == 0].tolist()) or 0.0, 4),
            "nonzero_weights": len(weights), "features": len(ids)}
    log(f"risk head: l1={best}, grouped-CV AUROC {cv[best]:.3f}, {len(weights)}/{len(ids)} features with weight > 0")
    return RiskHead(weights, b, guard.catalog, meta)


def pick_scoring_latents(pair_max: dict[str, dict[str, torch.Tensor]], n: int, exclude: dict[str, set[int]], *,
                         l1: float = 3e-4, seed: int = 0) -> dict[str, list[int]]:
    """Latents of the whole dictionary that a non-negative L1 head on the pairs weights most.

    ``pair_max[point]`` holds ``concept`` / ``deconcept`` tensors ``[pairs, n_latents]`` of max activations (as
    build-db's pair stage stores them). Each latent is scaled by its largest value over all pair texts, the head
    is fitted on concept = 1 / twin = 0, and up to ``n`` latents not in ``exclude`` are returned per point,
    ranked by weight x mean activation on concept texts.
    """
    points = sorted(pair_max)
    blocks, owners = [], []
    for p in points:
        X = torch.cat([pair_max[p]["concept"].float(), pair_max[p]["deconcept"].float()])
        scale = X.amax(0).clamp_min(1e-6)
        blocks.append(X / scale)
        owners += [(p, j) for j in range(X.shape[1])]
    X = torch.cat(blocks, dim=1).numpy()
    n_pairs = pair_max[points[0]]["concept"].shape[0]
    y = np.array([1] * n_pairs + [0] * n_pairs, dtype=np.float32)
    w, _ = fit_nonneg_logistic(X, y, l1, steps=400, seed=seed)
    merit = w * X[:n_pairs].mean(0)
    order = [int(i) for i in np.argsort(-merit) if merit[i] > 0]
    out: dict[str, list[int]] = {p: [] for p in points}
    taken = 0
    for i in order:
        p, j = owners[i]
        if j in exclude.get(p, set()):
            continue
        out[p].append(j)
        taken += 1
        if taken >= n:
            break
    return {p: sorted(v) for p, v in out.items()}
