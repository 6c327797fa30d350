"""Compact storage of a full SAE encoder for the guard's exact TopK firing rule.

The guard computes its selected features in fp32 from the database's own rows; the *competition* (all encoder
rows) only decides the per-token k-th largest pre-activation. It is stored in 12 bits per weight: an int8 code
per weight with one fp32 scale per row, plus a 4-bit code of the int8 rounding error (two per byte). That is
1.5 bytes per weight (5 MB for a 5,760 x 576 layer) and keeps the per-weight error below ``scale / 28``, small
enough that firing agrees with fp32 TopK about as well as fp16 weights do (see
``benchmarks/results/topk_agreement.json``). `dequantize` restores fp16 at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RESIDUAL_STEPS = 14  # the int8 rounding error (|e| <= scale/2) is coded in steps of scale/14: codes -7..7


@dataclass(frozen=True)
class QuantizedRows:
    """``W ~= (q + r / 14) * scale[:, None]`` with int8 ``q`` and 4-bit ``r`` in -7..7 (None: int8 only)."""

    q: Tensor  # [n, d] int8
    scale: Tensor  # [n] fp32
    r_packed: Tensor | None = None  # [n, ceil(d / 2)] uint8: two 4-bit codes (r + 8) per byte, low nibble first

    def residual(self) -> Tensor | None:
        """The 4-bit residual codes as int8 ``[n, d]`` (None for int8-only)."""
        if self.r_packed is None:
            return None
        lo = (self.r_packed & 0x0F).to(torch.int8) - 8
        hi = (self.r_packed >> 4).to(torch.int8) - 8
        both = torch.stack([lo, hi], dim=-1).reshape(self.r_packed.shape[0], -1)
        return both[:, : self.q.shape[1]]

    def dequantize(self, dtype: torch.dtype = torch.float16) -> Tensor:
        """The approximate matrix in ``dtype``."""
        W = self.q.float()
        r = self.residual()
        if r is not None:
            W = W + r.float() / RESIDUAL_STEPS
        return (W * self.scale.unsqueeze(-1)).to(dtype)


def quantize_rows(W: Tensor, *, residual: bool = True) -> QuantizedRows:
    """Quantise each row of ``W [n, d]``: int8 codes with scale ``max|row| / 127`` and, with ``residual``,
    a 4-bit code of the remaining error (all-zero rows get scale 1)."""
    W = W.detach().float()
    amax = W.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    qf = torch.clamp(torch.round(W / scale.unsqueeze(-1)), -127, 127)
    q = qf.to(torch.int8).contiguous()
    if not residual:
        return QuantizedRows(q, scale.contiguous())
    err = W / scale.unsqueeze(-1) - qf  # in [-0.5, 0.5] except where clamped
    r = torch.clamp(torch.round(err * RESIDUAL_STEPS), -7, 7).to(torch.int16) + 8  # 1..15
    if r.shape[1] % 2:
        r = torch.cat([r, torch.full((r.shape[0], 1), 8, dtype=r.dtype)], dim=1)
    packed = (r[:, 0::2] | (r[:, 1::2] << 4)).to(torch.uint8).contiguous()
    return QuantizedRows(q, scale.contiguous(), packed)
