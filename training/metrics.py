"""Reconstruction metrics of a TopK SAE on held-out activations.

How it connects: `safesail_training.train` calls `reconstruction_metrics` on its validation split at the end
of training; the configuration sweep / selection step (`safesail_training.select`) calls it on held-out shards
to compare SAEs, next to the concept metrics (L0,t, I_CDF) and the delta next-token loss that needs the model.
Inputs are activations as a tensor, an iterable of batches, or a `ShardReader`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from safesail_guard.sae import TopKSAE

from .shards import ShardReader

__all__ = ["ReconMetrics", "reconstruction_metrics"]


@dataclass
class ReconMetrics:
    """Reconstruction quality of an SAE on a set of tokens.

    mse: mean squared error per element, ``sum ||x - x̂||² / (n_tokens * d_in)``.
    fvu: fraction of variance unexplained, ``sum ||x - x̂||² / sum ||x - mean(x)||²`` over all tokens.
    mean_l0: average number of active (value > 0) latents per token (<= k).
    r_alive: share of latents active on at least one token (the paper's R_alive).
    n_tokens: tokens evaluated.
    fire_counts: ``[n_latents]`` int64, tokens on which each latent was active.
    """

    mse: float
    fvu: float
    mean_l0: float
    r_alive: float
    n_tokens: int
    fire_counts: Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-ready dict (without ``fire_counts``)."""
        return {"mse": self.mse, "fvu": self.fvu, "mean_l0": self.mean_l0, "r_alive": self.r_alive,
                "n_tokens": self.n_tokens}


def _batches(acts: Tensor | ShardReader | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(acts, Tensor):
        flat = acts.reshape(-1, acts.shape[-1])
        for i in range(0, flat.shape[0], batch_size):
            yield flat[i : i + batch_size]
    elif isinstance(acts, ShardReader):
        yield from acts.iter_batches(batch_size, shuffle=False)
    else:
        for t in acts:
            yield t.reshape(-1, t.shape[-1])


@torch.no_grad()
def reconstruction_metrics(
    sae: TopKSAE,
    acts: Tensor | ShardReader | Iterable[Tensor],
    *,
    batch_size: int = 4096,
    matmul_dtype: torch.dtype | None = None,
) -> ReconMetrics:
    """Compute `ReconMetrics` of ``sae`` over ``acts`` (``[..., d_in]`` tensor, iterable of them, or shards).

    Sums are accumulated in float64, so FVU is exact over the whole set rather than averaged per batch.
    Raises ValueError on an empty set or a width mismatch.
    """
    n_lat = sae.n_latents
    fire = torch.zeros(n_lat, dtype=torch.int64, device=sae.device)
    sse = torch.zeros((), dtype=torch.float64, device=sae.device)
    s1 = torch.zeros(sae.d_in, dtype=torch.float64, device=sae.device)
    s2 = torch.zeros((), dtype=torch.float64, device=sae.device)
    l0 = torch.zeros((), dtype=torch.float64, device=sae.device)
    n = 0
    for batch in _batches(acts, batch_size):
        if batch.shape[-1] != sae.d_in:
            raise ValueError(f"activations have width {batch.shape[-1]}, the SAE expects d_in={sae.d_in}")
        if batch.shape[0] == 0:
            continue
        x = batch.to(device=sae.device, dtype=sae.dtype)
        out = sae(x, matmul_dtype=matmul_dtype)
        x64 = x.double()
        sse += (x64 - out.x_hat.double()).pow(2).sum()
        s1 += x64.sum(0)
        s2 += x64.pow(2).sum()
        active = out.code.values > 0
        l0 += active.sum()
        fire.index_add_(0, out.code.indices[active], torch.ones_like(out.code.indices[active]))
        n += x.shape[0]
    if n == 0:
        raise ValueError("reconstruction_metrics got no tokens")
    total_var = s2 - s1.pow(2).sum() / n
    fvu = float(sse / total_var) if total_var > 0 else float("nan")
    return ReconMetrics(
        mse=float(sse / (n * sae.d_in)),
        fvu=fvu,
        mean_l0=float(l0 / n),
        r_alive=float((fire > 0).double().mean()),
        n_tokens=n,
        fire_counts=fire.cpu(),
    )
