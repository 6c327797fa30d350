"""Precision/recall filter of SAE features on concept-contrastive query pairs (Safe-SAIL eq. 6).

For a level-1 concept with ``n`` pairs, let ``QC_i`` / ``QD_i`` say whether a feature fires anywhere in the
concept query / its de-concept twin of pair ``i``. Then

    precision = sum QC / (sum QC + sum QD)        recall = sum QC / n

A feature is kept for every concept where ``precision >= min_precision`` and ``recall >= min_recall``
(paper: 0.75 and 0.2 - a high precision bar because a neuron's concept may be narrower than our category,
hence the low recall bar). Because each twin differs from its query only by the concept, a feature that
fires on both - a style or topic-frame feature - gets precision near 0.5 and is dropped.

How it connects: the ``filter`` stage of `safesail build-db` (`safesail_training.build_db_select`) runs
`calibrate_recall` and `filter_features` per hook point on the pair activations of the ``pairs`` stage; the
`ConceptHit` records it returns (`safesail_neuron_db.records`) become each feature's concept tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from safesail_neuron_db.records import ConceptHit


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the filter; defaults are the paper's."""

    min_precision: float = 0.75
    min_recall: float = 0.2
    fire_threshold: float = 0.0  # a feature "fires" on a query when its max activation exceeds this
    min_pairs: int = 5  # concepts with fewer pairs are not filtered on (too few to estimate recall)

    def __post_init__(self) -> None:
        if not 0 < self.min_precision <= 1 or not 0 < self.min_recall <= 1:
            raise ValueError(f"min_precision and min_recall must be in (0, 1], got {self.min_precision}, {self.min_recall}")
        if self.fire_threshold < 0 or self.min_pairs < 1:
            raise ValueError("fire_threshold must be >= 0 and min_pairs >= 1")


def precision_recall(concept_max: torch.Tensor, deconcept_max: torch.Tensor, fire_threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-feature precision, recall and fire counts over one concept's pairs.

    ``concept_max`` / ``deconcept_max``: ``[n_pairs, n_features]`` max activation per query. Returns
    ``(precision, recall, qc, qd)`` each ``[n_features]``; precision is 0 where the feature never fires.
    """
    if concept_max.shape != deconcept_max.shape or concept_max.dim() != 2:
        raise ValueError(f"expected two [n_pairs, n_features] tensors of one shape, got {tuple(concept_max.shape)} and {tuple(deconcept_max.shape)}")
    n = concept_max.shape[0]
    if n == 0:
        raise ValueError("precision_recall needs at least one pair")
    qc = (concept_max > fire_threshold).sum(0)
    qd = (deconcept_max > fire_threshold).sum(0)
    fired = qc + qd
    precision = torch.where(fired > 0, qc.float() / fired.clamp_min(1).float(), torch.zeros_like(qc, dtype=torch.float32))
    recall = qc.float() / n
    return precision, recall, qc, qd


def filter_features(
    concept_max: torch.Tensor,
    deconcept_max: torch.Tensor,
    concepts: Sequence[tuple[str, str]],
    cfg: FilterConfig | None = None,
) -> dict[int, list[ConceptHit]]:
    """Features passing the filter for at least one level-1 concept: ``{latent: [ConceptHit, ...]}``.

    ``concepts[i] = (level0, level1)`` of pair ``i``; rows of the two tensors follow the same pair order.
    Hits of one feature are sorted best first (precision, then recall).
    """
    cfg = cfg or FilterConfig()
    if len(concepts) != concept_max.shape[0]:
        raise ValueError(f"{len(concepts)} concept labels for {concept_max.shape[0]} pairs")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(concepts):
        groups.setdefault((c[0], c[1]), []).append(i)
    kept: dict[int, list[ConceptHit]] = {}
    for (level0, level1), idx in sorted(groups.items()):
        if len(idx) < cfg.min_pairs:
            continue
        rows = torch.tensor(idx)
        precision, recall, qc, qd = precision_recall(concept_max[rows], deconcept_max[rows], cfg.fire_threshold)
        passing = ((precision >= cfg.min_precision) & (recall >= cfg.min_recall)).nonzero().flatten().tolist()
        for j in passing:
            kept.setdefault(j, []).append(
                ConceptHit(
                    level0=level0,
                    level1=level1,
                    precision=round(float(precision[j]), 4),
                    recall=round(float(recall[j]), 4),
                    n_pairs=len(idx),
                    concept_fires=int(qc[j]),
                    deconcept_fires=int(qd[j]),
                )
            )
    for hits in kept.values():
        hits.sort(key=lambda h: (-h.precision, -h.recall, h.level0, h.level1))
    return dict(sorted(kept.items()))


def null_pass_count(
    concept_max: torch.Tensor,
    deconcept_max: torch.Tensor,
    concepts: Sequence[tuple[str, str]],
    cfg: FilterConfig,
    *,
    n_null: int = 5,
    seed: int = 0,
) -> float:
    """Mean number of features passing the filter when each pair's two sides are swapped at random.

    Under that null the concept label carries no information, so what still passes is chance: it estimates
    how many of the real passes are false discoveries."""
    counts = []
    for s in range(n_null):
        gen = torch.Generator().manual_seed(seed * 7919 + s)
        flip = (torch.rand(concept_max.shape[0], generator=gen) < 0.5).unsqueeze(1)
        c = torch.where(flip, deconcept_max, concept_max)
        d = torch.where(flip, concept_max, deconcept_max)
        counts.append(len(filter_features(c, d, concepts, cfg)))
    return sum(counts) / len(counts)


@dataclass(frozen=True)
class Calibration:
    """The recall bar chosen so the estimated false-discovery rate stays under target, and the whole sweep."""

    config: FilterConfig
    estimated_fdr: float
    sweep: list[dict[str, float]]  # per recall bar tried: min_recall, passed, null_passed, fdr


def calibrate_recall(
    concept_max: torch.Tensor,
    deconcept_max: torch.Tensor,
    concepts: Sequence[tuple[str, str]],
    base: FilterConfig,
    *,
    target_fdr: float = 0.1,
    grid: Sequence[float] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7),
    n_null: int = 5,
    seed: int = 0,
) -> Calibration:
    """Raise the recall bar from ``base.min_recall`` along `grid` until the side-swap null predicts at most
    `target_fdr` false discoveries among the passing features (or the grid ends).

    With few pairs per concept (ours: 16-23) a feature that fires on a quarter of all queries passes the paper's
    0.75 / 0.2 bars by chance; with the paper's hundreds of pairs per concept the first bar already holds.
    """
    if not 0 < target_fdr < 1:
        raise ValueError(f"target_fdr must be in (0, 1), got {target_fdr}")
    sweep: list[dict[str, float]] = []
    chosen: FilterConfig | None = None
    fdr = 1.0
    for r in sorted({max(base.min_recall, g) for g in grid}):
        cfg = FilterConfig(min_precision=base.min_precision, min_recall=r, fire_threshold=base.fire_threshold, min_pairs=base.min_pairs)
        real = len(filter_features(concept_max, deconcept_max, concepts, cfg))
        null = null_pass_count(concept_max, deconcept_max, concepts, cfg, n_null=n_null, seed=seed)
        fdr = min(1.0, null / real) if real else 0.0
        sweep.append({"min_recall": r, "passed": real, "null_passed": round(null, 1), "fdr": round(fdr, 3)})
        chosen = cfg
        if fdr <= target_fdr:
            break
    assert chosen is not None  # the grid always holds at least base.min_recall
    return Calibration(chosen, fdr, sweep)
