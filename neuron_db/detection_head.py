"""``detection_head.safetensors``: the guard's detection head, a linear score over SAE codes and their error.

For a TopK SAE at layer ``L``, every hook activation splits exactly as ``x = W_dec z + b_dec + e``. The head's
per-token logit is

    s_t = bias + sum_L [ sum_{i in head(L)} w_i (z_{L,i,t} - mu_i)  +  (w_e_L . x_{L,t} - v_L . z_{L,t} - c_L) ]

where the first sum is the *named* part (each ``i`` is a database feature ``"{L}_{i}"``) and the bracket's
second part is the *remainder* ``w_e_L . (e_{L,t} - mean e)``: ``v_L = W_dec^T w_e_L`` over the whole dictionary
and ``c_L = w_e_L . b_dec_L + w_e_L . mean(e_L)``, so the remainder needs only the hook activation and the
token's TopK code, never the full decoder. ``mu_i`` and ``mean(e_L)`` are training means, which makes every
contribution zero at the training average (shares are read from centred contributions). Token logits are
aggregated over a scope by the ``aggregation`` in the metadata (see `HeadSpec`), and the risk is
``sigmoid(aggregate)``: the probability of *unsafe* at the class prior named by ``calibration.prior``.

File layout (all fp32 unless said): ``layers.<L>.w_e [d]``, ``layers.<L>.v [n_latents]``,
``layers.<L>.c [1]``, ``layers.<L>.latents`` (int64 ``[m]``), ``layers.<L>.w_z [m]``, ``layers.<L>.mu_z [m]``;
metadata ``{"head": <JSON of HeadSpec>, "model_fingerprint": ..., "schema_version": "1"}``.

This module is the format only (no model, no guard): `head_bytes` writes, `read_head` reads and validates.
It imports torch at module level, so the package imports it only inside the functions that need it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from safesail_neuron_db.errors import CorruptDatabaseError
from safesail_neuron_db.tensor_file import safetensors_bytes

__all__ = ["HEAD_SCHEMA", "AGGREGATIONS", "HeadLayer", "DetectionHeadFile", "head_bytes", "read_head"]

HEAD_SCHEMA = 1
AGGREGATIONS = ("mean", "rolling_max")
"""``mean``: mean token logit over the scope. ``rolling_max``: the largest mean over any ``window`` consecutive
tokens (the plain mean while the scope is shorter than ``window``), so the score neither grows with length nor
follows one token."""


@dataclass(frozen=True)
class HeadLayer:
    """One layer's part of the head (see the module docstring for the formula)."""

    layer: int
    w_e: Tensor  # [d] fp32
    v: Tensor  # [n_latents] fp32, W_dec^T w_e
    c: float
    latents: Tensor  # [m] int64
    w_z: Tensor  # [m] fp32
    mu_z: Tensor  # [m] fp32

    def feature_ids(self) -> list[str]:
        """Database feature ids of the latents with a weight, in file order."""
        return [f"{self.layer}_{int(i)}" for i in self.latents.tolist()]


@dataclass(frozen=True)
class DetectionHeadFile:
    """The head's tensors per layer and its JSON spec (bias, aggregation, calibration, domains, fit report)."""

    layers: dict[int, HeadLayer]
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def bias(self) -> float:
        """Logit at the training average."""
        return float(self.spec["bias"])

    @property
    def aggregation(self) -> dict[str, Any]:
        """``{"kind": "mean" | "rolling_max", "window": int}``."""
        return dict(self.spec["aggregation"])


def _check_spec(spec: dict[str, Any], where: str) -> None:
    bias = spec.get("bias")
    if not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise CorruptDatabaseError(f"{where}: head spec needs a finite 'bias'")
    agg = spec.get("aggregation")
    if not isinstance(agg, dict) or agg.get("kind") not in AGGREGATIONS:
        raise CorruptDatabaseError(f"{where}: head 'aggregation.kind' must be one of {', '.join(AGGREGATIONS)}")
    window = agg.get("window", 1)
    if not isinstance(window, int) or window < 1:
        raise CorruptDatabaseError(f"{where}: head 'aggregation.window' must be an integer >= 1")


def head_bytes(layers: dict[int, HeadLayer], spec: dict[str, Any], model_fingerprint: str) -> bytes:
    """``detection_head.safetensors`` for ``layers`` and the JSON ``spec`` (must hold ``bias`` and
    ``aggregation``); deterministic bytes for the same content."""
    _check_spec(spec, "detection head")
    tensors: dict[str, Tensor] = {}
    for L in sorted(layers):
        hl = layers[L]
        tensors[f"layers.{L}.w_e"] = hl.w_e.detach().float().contiguous()
        tensors[f"layers.{L}.v"] = hl.v.detach().float().contiguous()
        tensors[f"layers.{L}.c"] = torch.tensor([float(hl.c)], dtype=torch.float32)
        tensors[f"layers.{L}.latents"] = hl.latents.detach().to(torch.int64).contiguous()
        tensors[f"layers.{L}.w_z"] = hl.w_z.detach().float().contiguous()
        tensors[f"layers.{L}.mu_z"] = hl.mu_z.detach().float().contiguous()
    meta = {"head": json.dumps(spec, sort_keys=True, separators=(",", ":")), "model_fingerprint": model_fingerprint,
            "schema_version": str(HEAD_SCHEMA)}
    return safetensors_bytes(tensors, meta)


def read_head(path: Path, model_fingerprint: str, *, d_model: int | None = None) -> DetectionHeadFile:
    """Read and validate the head at ``path``; `CorruptDatabaseError` names what is wrong (unreadable file,
    another model, a bad spec, shapes that disagree, non-finite weights)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CorruptDatabaseError(f"{path}: cannot read the detection head ({e})") from e
    if meta.get("schema_version") != str(HEAD_SCHEMA):
        raise CorruptDatabaseError(f"{path}: detection head schema {meta.get('schema_version')!r}, expected {HEAD_SCHEMA}")
    if meta.get("model_fingerprint") != model_fingerprint:
        raise CorruptDatabaseError(f"{path}: detection head built for another model than the manifest's")
    try:
        spec = json.loads(meta.get("head", ""))
    except json.JSONDecodeError as e:
        raise CorruptDatabaseError(f"{path}: detection head spec is not JSON ({e})") from e
    if not isinstance(spec, dict):
        raise CorruptDatabaseError(f"{path}: detection head spec must be a JSON object")
    _check_spec(spec, str(path))
    layer_ids = sorted({int(k.split(".")[1]) for k in raw if k.startswith("layers.")})
    if not layer_ids:
        raise CorruptDatabaseError(f"{path}: detection head has no layers")
    layers: dict[int, HeadLayer] = {}
    for L in layer_ids:
        try:
            t = {n: raw[f"layers.{L}.{n}"] for n in ("w_e", "v", "c", "latents", "w_z", "mu_z")}
        except KeyError as e:
            raise CorruptDatabaseError(f"{path}: layer {L} lacks tensor {e.args[0]}") from e
        m = t["latents"].shape[0]
        if t["w_e"].dim() != 1 or (d_model is not None and t["w_e"].shape[0] != d_model):
            raise CorruptDatabaseError(f"{path}: layer {L} w_e has shape {list(t['w_e'].shape)}, expected [{d_model}]")
        if t["w_z"].shape != (m,) or t["mu_z"].shape != (m,) or t["c"].shape != (1,):
            raise CorruptDatabaseError(f"{path}: layer {L} tensors disagree in shape")
        if m and (int(t["latents"].min()) < 0 or int(t["latents"].max()) >= t["v"].shape[0]):
            raise CorruptDatabaseError(f"{path}: layer {L} latent index outside the dictionary")
        for n in ("w_e", "v", "c", "w_z", "mu_z"):
            if not bool(torch.isfinite(t[n]).all()):
                raise CorruptDatabaseError(f"{path}: layer {L} tensor {n} is not finite")
        layers[L] = HeadLayer(L, t["w_e"].float(), t["v"].float(), float(t["c"][0]), t["latents"].long(),
                              t["w_z"].float(), t["mu_z"].float())
    return DetectionHeadFile(layers, spec)
