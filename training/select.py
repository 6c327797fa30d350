"""SAE configuration selection on concept-contrastive query pairs (Safe-SAIL section 2.1.2).

For a domain with n pairs, a feature's *delta frequency* is the share of pairs where it fires on the concept
query but not on its de-concept twin:

    freq_f = (1/n) * sum_i Q_C,i(f) * (1 - Q_D,i(f)),   Q in {0, 1}            (paper eq. 1)

A feature "fires" on a query when its SAE activation is > 0 on at least one of the query's own tokens. Over all
features of an SAE, per domain:

    L0,t  = #{f : freq_f > t}              (eq. 4, t = 0.25 by default)
    I_CDF = E[freq] = integral_0^1 (1 - F(x)) dx   (eq. 5; F is the CDF of freq over features)

The baseline is k-sparse probing (Gurnee et al. 2023): pick the k features whose mean max-activation differs
most between concept and de-concept queries on the training folds, fit a logistic regression on them, and
report held-out accuracy (folds split by pair, so a twin never sits on the other side of the split).

How it connects: `safesail_training.build_sae` ranks its SAE sweep with these metrics (activations from
`safesail_training.model_metrics`); `feature_max` also serves the ``pairs`` and ``style`` stages of
`safesail build-db` (`build_db_select`, `build_db_checks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


def feature_max(sae: torch.nn.Module, acts: Sequence[torch.Tensor], n_latents: int, *, batch: int = 8192) -> torch.Tensor:
    """Max SAE activation of every latent over each query's tokens: `[n_queries, n_latents]`.

    `acts[i]` is `[n_tokens_i, d_model]` for query i; `sae.encode` returns sparse `(values, indices)`.
    """
    out = torch.zeros((len(acts), n_latents))
    lengths = [a.shape[0] for a in acts]
    flat = torch.cat(list(acts)) if acts else torch.zeros((0, 1))
    owner = torch.repeat_interleave(torch.arange(len(acts)), torch.tensor(lengths))
    with torch.inference_mode():
        for start in range(0, flat.shape[0], batch):
            code = sae.encode(flat[start : start + batch].float())
            rows = owner[start : start + batch].unsqueeze(1).expand_as(code.indices)
            flat_index = (rows * n_latents + code.indices).reshape(-1)
            out.view(-1).scatter_reduce_(0, flat_index, code.values.reshape(-1).clamp_min(0), reduce="amax")
    return out


def delta_freq(concept_max: torch.Tensor, deconcept_max: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Per-feature share of pairs where the feature fires on the concept query and not on its twin: `[F]`."""
    if concept_max.shape != deconcept_max.shape:
        raise ValueError(f"concept and de-concept activations differ in shape: {tuple(concept_max.shape)} vs {tuple(deconcept_max.shape)}")
    if concept_max.shape[0] == 0:
        raise ValueError("delta_freq needs at least one pair")
    return ((concept_max > threshold) & ~(deconcept_max > threshold)).float().mean(0)


def l0_t(freq: torch.Tensor, t: float = 0.25) -> int:
    """L0,t: number of features with delta frequency above t."""
    return int((freq > t).sum())


def i_cdf(freq: torch.Tensor) -> float:
    """I_CDF: expected delta frequency over all features, the area above the CDF of freq on [0, 1]."""
    return float(freq.mean())


def cdf_curve(freq: torch.Tensor, grid: int = 101) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (x, F(x)) of the empirical CDF of freq, for plots."""
    xs = torch.linspace(0, 1, grid)
    return xs, (freq.unsqueeze(0) <= xs.unsqueeze(1)).float().mean(1)


def _logreg_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, l2: float = 1e-2) -> float:
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xt, xs = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(xt.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, y_train) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (xs @ w + b) > 0
    return float((pred == y_test.bool()).float().mean())


def k_sparse_probe(
    concept_max: torch.Tensor, deconcept_max: torch.Tensor, ks: Sequence[int] = (1, 3, 5, 20), *, folds: int = 5, seed: int = 0
) -> dict[int, float]:
    """Held-out accuracy of a logistic probe on the top-k features by mean activation difference, per k."""
    n = concept_max.shape[0]
    if n < 2:
        return {k: float("nan") for k in ks}
    folds = max(2, min(folds, n))
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[perm] = torch.arange(n) % folds
    acc: dict[int, list[float]] = {k: [] for k in ks}
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        x_tr = torch.cat([concept_max[tr], deconcept_max[tr]])
        y_tr = torch.cat([torch.ones(int(tr.sum())), torch.zeros(int(tr.sum()))])
        x_te = torch.cat([concept_max[te], deconcept_max[te]])
        y_te = torch.cat([torch.ones(int(te.sum())), torch.zeros(int(te.sum()))])
        diff = concept_max[tr].mean(0) - deconcept_max[tr].mean(0)
        order = diff.abs().argsort(descending=True)
        for k in ks:
            idx = order[:k]
            acc[k].append(_logreg_accuracy(x_tr[:, idx], y_tr, x_te[:, idx], y_te))
    return {k: sum(v) / len(v) for k, v in acc.items()}


@dataclass
class DomainScores:
    """Selection metrics of one SAE on one level-0 domain."""

    domain: str
    n_pairs: int
    l0_t: int
    i_cdf: float
    probe: dict[int, float] = field(default_factory=dict)


def domain_scores(
    concept_max: torch.Tensor,
    deconcept_max: torch.Tensor,
    domains: Sequence[str],
    *,
    t: float = 0.25,
    probe_ks: Sequence[int] = (1, 3, 5, 20),
    seed: int = 0,
) -> dict[str, DomainScores]:
    """L0,t, I_CDF and k-sparse-probe accuracy per domain; `domains[i]` is pair i's level-0 domain."""
    out: dict[str, DomainScores] = {}
    labels = list(domains)
    for dom in sorted(set(labels)):
        idx = torch.tensor([i for i, d in enumerate(labels) if d == dom])
        c, d = concept_max[idx], deconcept_max[idx]
        freq = delta_freq(c, d)
        out[dom] = DomainScores(dom, len(idx), l0_t(freq, t), i_cdf(freq), k_sparse_probe(c, d, probe_ks, seed=seed) if probe_ks else {})
    return out
