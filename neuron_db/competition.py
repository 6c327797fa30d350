"""``competition.safetensors``: a compact copy of every SAE encoder row, for the guard's exact TopK firing rule.

The guard computes its selected features in fp32 from the database's own rows (`safesail_neuron_db.encoders`);
the *competition* (all encoder rows) only decides the per-token k-th largest pre-activation. It is stored in 12
bits per weight: an int8 code per weight with one fp32 scale per row, plus a 4-bit code of the int8 rounding
error (two per byte). That is 1.5 bytes per weight (5 MB for a 5,760 x 576 layer) and keeps the per-weight error
below ``scale / 28``, small enough that firing agrees with fp32 TopK about as well as fp16 weights do (see
``benchmarks/results/topk_agreement.json``). `QuantizedRows.dequantize` restores fp16 at load.

This module is the file format: `quantize_rows` / `QuantizedRows` (the code), `competition_bytes` (writing; the
pipeline's `safesail build-db` adds the file with `safesail_neuron_db.publish.add_files`) and `read_competition`
(reading; `NeuronDB.competition` calls it and the guard's runtime encoder computes with the result). It imports
torch at module level, so the package imports it only inside the functions that need it.

File layout: ``layers.<L>.{W_q (int8 [n, d]), W_r (uint8 [n, ceil(d/2)]), scale (fp32 [n]), b_enc (fp32 [n])}``
and metadata ``{model_fingerprint, schema_version, quantization, layers.<L>.k}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from safesail_neuron_db.errors import CorruptDatabaseError
from safesail_neuron_db.manifest import SCHEMA_VERSION
from safesail_neuron_db.tensor_file import safetensors_bytes

__all__ = ["RESIDUAL_STEPS", "QuantizedRows", "quantize_rows", "competition_bytes", "read_competition"]

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


def competition_bytes(layers: dict[int, tuple[Tensor, Tensor, int]], model_fingerprint: str) -> bytes:
    """``competition.safetensors`` from ``{layer: (W_enc [n, d] fp32, b_enc [n], k)}``: 12-bit rows (int8 code,
    4-bit residual code, fp32 row scale; see `quantize_rows`)."""
    tensors: dict[str, Tensor] = {}
    meta = {"model_fingerprint": model_fingerprint, "schema_version": str(SCHEMA_VERSION), "quantization": "int8+int4-residual-row"}
    for layer in sorted(layers):
        W, b, k = layers[layer]
        qr = quantize_rows(W)
        tensors[f"layers.{layer}.W_q"] = qr.q
        tensors[f"layers.{layer}.W_r"] = qr.r_packed
        tensors[f"layers.{layer}.scale"] = qr.scale
        tensors[f"layers.{layer}.b_enc"] = b.detach().float().contiguous()
        meta[f"layers.{layer}.k"] = str(int(k))
    return safetensors_bytes(tensors, meta)


def read_competition(path: Path, layer: int, model_fingerprint: str) -> dict[str, Any]:
    """All encoder rows of ``layer``: ``{W_enc (fp16 [n, d]), b_enc (fp32 [n]), k}``; `CorruptDatabaseError` when
    the file cannot be read or was built for another model than ``model_fingerprint``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            q = f.get_tensor(f"layers.{layer}.W_q")
            r = f.get_tensor(f"layers.{layer}.W_r")
            scale = f.get_tensor(f"layers.{layer}.scale")
            b_enc = f.get_tensor(f"layers.{layer}.b_enc")
    except (SafetensorError, OSError, KeyError) as e:
        raise CorruptDatabaseError(f"{path}: cannot read layer {layer} ({e})") from e
    if meta.get("model_fingerprint") != model_fingerprint:
        raise CorruptDatabaseError(f"{path}: built for another model than the manifest's")
    W = QuantizedRows(q, scale.float(), r).dequantize(torch.float16)
    return {"W_enc": W, "b_enc": b_enc.float(), "k": int(meta.get(f"layers.{layer}.k", "0"))}
