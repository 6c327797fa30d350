"""Precision/recall filter of SAE features on concept-contrastive query pairs (Safe-SAIL eq. 6).

For a level-1 concept with ``n`` pairs, let ``QC_i`` / ``QD_i`` say whether a feature fires anywhere in the
concept query / its de-concept twin of pair ``i``. Then

    precision = sum QC / (sum QC + sum QD)        recall = sum QC / n

A feature is kept for every concept where ``precision >= min_precision`` and ``recall >= min_recall``
(paper: 0.75 and 0.2 - a high precision bar because a neuron's concept may be narrower than our category,
hence the low recall bar). Because each twin differs from its query only by the concept, a feature that
fires on both - a style or topic-frame feature - gets precision near 0.5 and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from safesail_training.db_types import ConceptHit


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
