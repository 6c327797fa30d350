"""TopK sparse autoencoder (Gao et al. 2024): one module for offline training and run-time encoding.

How it connects: `safesail_training.train` trains a `TopKSAE` on activation shards and saves it with
`TopKSAE.save` (a build directory holding `cfg.json` + `sae.safetensors`); `safesail_training.metrics`
scores it; the neuron-database builder reads the encoder/decoder rows of the selected safety features out of
it; at run time the guard may load a full checkpoint with `TopKSAE.load` (for exact-TopK agreement checks
and steering). This module imports nothing from the offline pipeline.

Math (shapes: ``x [..., d_in]``, ``W_enc [n_latents, d_in]``, ``W_dec [n_latents, d_in]``)::

    pre  = W_enc (x - b_dec) + b_enc                  # [..., n_latents]
    z    = ReLU(TopK_k(pre))                          # k values + k indices per token (a SparseCode)
    x̂    = W_dec^T z + b_dec = sum_j z_j W_dec[i_j] + b_dec     # [..., d_in]

Storage layout: both weight matrices are stored **row-per-latent** (``[n_latents, d_in]``). Row ``i`` of
``W_dec`` is latent ``i``'s unit-norm decoder direction, so decoding is an ``embedding_bag`` over the k
selected rows and steering adds ``alpha * W_dec[i]``; row ``i`` of ``W_enc`` is its encoder direction, so the
guard's sparse encoder slices the rows of its safety features.

Fast training path: the dense ``[batch, n_latents]`` pre-activation matmul runs once, without autograd
(optionally in bfloat16, see ``matmul_dtype``); gradients for the encoder are computed sparsely from the k
selected latents only (`_GatherPreActs`), and the decoder is an ``embedding_bag``. `forward_reference` is the
naive dense implementation, kept as the correctness reference for tests and benchmarks.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from safesail_neuron_db.fileio import atomic_write_text as _atomic_write_text
from safesail_neuron_db.fileio import fsync_dir as _fsync_dir
from safesail_neuron_db.fileio import read_json_object
from safesail_neuron_db.fileio import sha256_file as _sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "CFG_FILE",
    "WEIGHTS_FILE",
    "SAEConfig",
    "SparseCode",
    "SAEOutput",
    "TopKSAE",
    "SAECheckpointError",
]

SCHEMA_VERSION = 1
"""Version of the on-disk checkpoint format written by `TopKSAE.save`."""
KNOWN_SCHEMA_VERSIONS = (1,)
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_HOOK_POINT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SAECheckpointError(ValueError):
    """A checkpoint directory is missing, corrupt, of an unknown schema or incompatible with the caller."""


class SAEConfig(BaseModel):
    """Architecture of a TopK SAE; stored as ``cfg.json`` next to the weights."""

    model_config = ConfigDict(extra="forbid")

    d_in: int = Field(gt=0, description="Width of the activations the SAE reads (the model's d_model).")
    expansion: int = Field(
        default=10,
        ge=1,
        description="Dictionary size as a multiple of d_in; used to derive n_latents when it is not given.",
    )
    n_latents: int = Field(
        default=0,
        ge=0,
        description="Number of latents (dictionary size). 0 or omitted = d_in * expansion.",
    )
    k: int = Field(gt=0, description="Number of latents kept per token by the TopK activation.")
    hook_point: str | None = Field(
        default=None,
        description="Where the activations come from, e.g. 'layers.14.mlp_out'; also used as a directory name.",
    )
    model_id: str | None = Field(default=None, description="Identity of the model whose activations were used.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Parameter dtype; training uses float32."
    )

    @model_validator(mode="after")
    def _derive_and_check(self) -> SAEConfig:
        derived = self.d_in * self.expansion
        if self.n_latents == 0:
            self.n_latents = derived
        elif "expansion" in self.model_fields_set and self.n_latents != derived:
            raise ValueError(
                f"n_latents={self.n_latents} contradicts d_in * expansion = {self.d_in} * {self.expansion} = "
                f"{derived}; give only one of n_latents and expansion, or consistent values"
            )
        if self.k > self.n_latents:
            raise ValueError(f"k={self.k} must be <= n_latents={self.n_latents}")
        if self.hook_point is not None and not _HOOK_POINT_RE.match(self.hook_point):
            raise ValueError(
                f"hook_point={self.hook_point!r} is not valid: use letters, digits, '_', '.', '-' "
                "(e.g. 'layers.14.mlp_out'), no path separators or spaces"
            )
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a `torch.dtype`."""
        return _DTYPES[self.dtype]


class SparseCode(NamedTuple):
    """The TopK code of a batch of tokens.

    ``values [..., k]`` are the (ReLU-ed, so >= 0) activations of the selected latents and
    ``indices [..., k]`` (int64) their latent ids; the order within the k slots is unspecified.
    """

    values: Tensor
    indices: Tensor


class SAEOutput(NamedTuple):
    """Result of `TopKSAE.forward`.

    x_hat: reconstruction ``[..., d_in]``.
    code: the sparse code (``values``/``indices`` ``[..., k]``).
    pre_acts: dense pre-activations ``[..., n_latents]``; detached in the fast path (used by the trainer to
        pick dead latents for AuxK, then `TopKSAE.pre_acts_at` gives them gradients), differentiable in
        `forward_reference`.
    """

    x_hat: Tensor
    code: SparseCode
    pre_acts: Tensor


class _GatherPreActs(torch.autograd.Function):
    """``values[b, j] = (x[b] - b_dec) · W_enc[idx[b, j]] + b_enc[idx[b, j]]`` with sparse gradients.

    The forward reads the values from precomputed dense pre-activations (``pre [N, n_latents]``, computed
    without autograd); the backward touches only the selected latents:

    - ``grad_W_enc = S^T (x - b_dec)`` with ``S [N, n_latents]`` the sparse matrix of ``grad_values`` at
      ``idx`` (a COO sparse-dense matmul: ``N * k * d_in`` MACs instead of ``N * n_latents * d_in``);
    - ``grad_b_enc[i] = sum of grad_values where idx == i`` (an ``index_add``);
    - ``grad_b_dec = -grad_b_enc @ W_enc`` (the batch sum of the input gradient);
    - ``grad_x[b] = sum_j grad_values[b, j] W_enc[idx[b, j]]`` (an ``embedding_bag``), only if x needs it.

    Shapes: ``x [N, d_in]``, ``b_dec [d_in]``, ``W_enc [n_latents, d_in]``, ``b_enc [n_latents]``,
    ``indices [N, m]`` (int64), ``pre [N, n_latents]`` -> ``values [N, m]``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, indices: Tensor, pre: Tensor):
        ctx.save_for_backward(x, b_dec, W_enc, indices)
        return pre.gather(-1, indices).to(W_enc.dtype)

    @staticmethod
    def backward(ctx: Any, grad_values: Tensor):  # type: ignore[override]
        x, b_dec, W_enc, indices = ctx.saved_tensors
        n_latents = W_enc.shape[0]
        n, m = indices.shape
        g = grad_values.to(W_enc.dtype).contiguous()
        flat_idx = indices.reshape(-1)
        flat_g = g.reshape(-1)
        need_x, need_bdec, need_w, need_benc = ctx.needs_input_grad[:4]
        grad_x = grad_b_dec = grad_w = grad_b_enc = None
        if need_benc or need_bdec:
            grad_b_enc = torch.zeros(n_latents, dtype=W_enc.dtype, device=W_enc.device)
            grad_b_enc.index_add_(0, flat_idx, flat_g)
        if need_bdec:
            grad_b_dec = -(grad_b_enc @ W_enc)  # type: ignore[operator]
        if need_w:
            rows = torch.arange(n, device=x.device).repeat_interleave(m)
            s_t = torch.sparse_coo_tensor(
                torch.stack([flat_idx, rows]), flat_g, (n_latents, n), check_invariants=False
            )
            x_c = x.to(W_enc.dtype) - b_dec
            grad_w = torch.sparse.mm(s_t, x_c)
        if need_x:
            grad_x = F.embedding_bag(indices, W_enc, per_sample_weights=g, mode="sum").to(x.dtype)
        return grad_x, grad_b_dec, grad_w, (grad_b_enc if need_benc else None), None, None


class TopKSAE(nn.Module):
    """TopK sparse autoencoder ``x̂ = W_dec^T ReLU(TopK_k(W_enc (x - b_dec) + b_enc)) + b_dec``.

    Parameters (row-per-latent layout): ``W_enc [n_latents, d_in]``, ``b_enc [n_latents]``,
    ``W_dec [n_latents, d_in]`` (unit-norm rows), ``b_dec [d_in]``. Every method accepts any number of
    leading batch dimensions (``x [..., d_in]``); inputs are cast to the parameter dtype.

    Initialisation: decoder rows random unit vectors, ``W_enc = W_dec`` (tied), ``b_enc = 0``, ``b_dec = 0``
    (set it from data with `init_b_dec_`).
    """

    def __init__(self, cfg: SAEConfig, *, device: str | torch.device | None = None, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        dtype = cfg.torch_dtype
        w = torch.randn(cfg.n_latents, cfg.d_in, generator=gen, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(w.clone().to(device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents, device=device, dtype=dtype))
        self.W_dec = nn.Parameter(w.to(device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"d_in={c.d_in}, n_latents={c.n_latents}, k={c.k}, hook_point={c.hook_point!r}, "
                f"model_id={c.model_id!r}, dtype={c.dtype}")

    # ------------------------------------------------------------------ properties
    @property
    def d_in(self) -> int:
        """Input width."""
        return self.cfg.d_in

    @property
    def n_latents(self) -> int:
        """Dictionary size."""
        return self.cfg.n_latents

    @property
    def k(self) -> int:
        """Latents kept per token."""
        return self.cfg.k

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""
        return self.W_dec.dtype

    # ------------------------------------------------------------------ encoding
    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected activations [..., d_in={self.d_in}], got shape {tuple(x.shape)}")
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, self.d_in).to(self.dtype), lead

    def pre_acts(self, x: Tensor, *, matmul_dtype: torch.dtype | None = None) -> Tensor:
        """Dense pre-activations ``W_enc (x - b_dec) + b_enc``: ``x [..., d_in]`` -> ``[..., n_latents]``.

        Differentiable through ordinary autograd. ``matmul_dtype`` (e.g. ``torch.bfloat16``) runs the matmul
        in a lower precision and returns the result in the parameter dtype.
        """
        flat, lead = self._flatten(x)
        out = self._pre_acts_flat(flat, matmul_dtype)
        return out.reshape(*lead, self.n_latents)

    def _pre_acts_flat(self, flat: Tensor, matmul_dtype: torch.dtype | None) -> Tensor:
        x_c = flat - self.b_dec
        if matmul_dtype is None or matmul_dtype == self.dtype:
            return F.linear(x_c, self.W_enc, self.b_enc)
        pre = x_c.to(matmul_dtype) @ self.W_enc.to(matmul_dtype).T
        return pre.to(self.dtype) + self.b_enc

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A reusable work buffer (allocating and first-touching ~100 MB per step is a large share of a CPU
        training step, so the trainer asks for the dense pre-activations to live in one buffer)."""
        cache: dict[str, Tensor] = self.__dict__.setdefault("_work_buffers", {})
        buf = cache.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != self.device:
            buf = torch.empty(shape, dtype=dtype, device=self.device)
            cache[name] = buf
        return buf

    def release_buffers(self) -> None:
        """Free the work buffers kept by ``forward(..., reuse_buffers=True)``."""
        self.__dict__.pop("_work_buffers", None)

    def _encode_flat(
        self, flat: Tensor, matmul_dtype: torch.dtype | None, reuse_buffers: bool = False
    ) -> tuple[SparseCode, Tensor]:
        """TopK code of ``flat [N, d_in]`` plus the detached dense pre-activations ``[N, n_latents]``.

        The pre-activations are in ``matmul_dtype`` (default: the parameter dtype)."""
        mdt = matmul_dtype or self.dtype
        with torch.no_grad():
            x_c = flat - self.b_dec
            out = self._buffer("pre_acts", (flat.shape[0], self.n_latents), mdt) if reuse_buffers else None
            if mdt == self.dtype:
                pre = torch.addmm(self.b_enc, x_c, self.W_enc.T, out=out)
            else:
                pre = torch.addmm(self.b_enc.to(mdt), x_c.to(mdt), self.W_enc.to(mdt).T, out=out)
            top_vals, top_idx = pre.topk(self.k, dim=-1, sorted=False)
        if torch.is_grad_enabled() and (self.W_enc.requires_grad or flat.requires_grad):
            vals = _GatherPreActs.apply(flat, self.b_dec, self.W_enc, self.b_enc, top_idx, pre)
        else:
            vals = top_vals.to(self.dtype)
        return SparseCode(F.relu(vals), top_idx), pre

    def encode(self, x: Tensor, *, matmul_dtype: torch.dtype | None = None) -> SparseCode:
        """TopK code of ``x [..., d_in]``: ``values``/``indices`` ``[..., k]``, values >= 0.

        Differentiable (sparse gradients for W_enc, b_enc, b_dec and x); see `forward` for ``matmul_dtype``.
        """
        flat, lead = self._flatten(x)
        code, _ = self._encode_flat(flat, matmul_dtype)
        return SparseCode(code.values.reshape(*lead, self.k), code.indices.reshape(*lead, self.k))

    def pre_acts_at(self, x: Tensor, indices: Tensor, *, pre_acts: Tensor | None = None) -> Tensor:
        """Pre-activations of chosen latents with sparse gradients: ``x [..., d_in]``, ``indices [..., m]``
        -> ``[..., m]``.

        ``pre_acts [..., n_latents]`` (e.g. ``SAEOutput.pre_acts``) avoids recomputing the dense matmul.
        Used for the AuxK loss, where ``indices`` are the top dead latents.
        """
        flat, lead = self._flatten(x)
        m = indices.shape[-1]
        idx = indices.reshape(-1, m)
        if pre_acts is None:
            with torch.no_grad():
                pre = self._pre_acts_flat(flat, None)
        else:
            pre = pre_acts.detach().reshape(-1, self.n_latents)
        vals = _GatherPreActs.apply(flat, self.b_dec, self.W_enc, self.b_enc, idx, pre)
        return vals.reshape(*lead, m)

    # ------------------------------------------------------------------ decoding
    def decode(self, code: SparseCode, *, bias: bool = True) -> Tensor:
        """Reconstruction from a sparse code: ``values/indices [..., m]`` -> ``x̂ [..., d_in]``.

        ``x̂ = sum_j values_j W_dec[indices_j] (+ b_dec if bias)``; an ``embedding_bag`` (sum mode), so the
        cost is ``m * d_in`` per token whatever the dictionary size. ``m`` may differ from k (AuxK decodes
        aux_k latents with ``bias=False``).
        """
        values, indices = code
        lead = tuple(indices.shape[:-1])
        m = indices.shape[-1]
        out = F.embedding_bag(
            indices.reshape(-1, m), self.W_dec, per_sample_weights=values.reshape(-1, m).to(self.dtype), mode="sum"
        )
        if bias:
            out = out + self.b_dec
        return out.reshape(*lead, self.d_in)

    def dense(self, code: SparseCode) -> Tensor:
        """Dense latent activations ``z [..., n_latents]`` (zeros outside the code's indices)."""
        values, indices = code
        z = torch.zeros(*indices.shape[:-1], self.n_latents, dtype=values.dtype, device=values.device)
        return z.scatter(-1, indices, values)

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: Tensor, *, matmul_dtype: torch.dtype | None = None, reuse_buffers: bool = False
    ) -> SAEOutput:
        """Encode and decode ``x [..., d_in]`` (fast path: sparse gradients, embedding_bag decoder).

        Returns `SAEOutput` with ``x_hat [..., d_in]``, the code ``[..., k]`` and detached dense
        ``pre_acts [..., n_latents]``. ``matmul_dtype=torch.bfloat16`` runs only the dense encoder matmul in
        bf16 (about 2-3x faster on CPUs with AVX512-BF16 and on GPUs); gradients are exact for the values used,
        and ``pre_acts`` is then bf16. ``reuse_buffers=True`` (used by the trainer) writes ``pre_acts`` into a
        buffer owned by the module, overwritten by the next such call.
        """
        flat, lead = self._flatten(x)
        code, pre = self._encode_flat(flat, matmul_dtype, reuse_buffers)
        x_hat = self.decode(code)
        return SAEOutput(
            x_hat.reshape(*lead, self.d_in),
            SparseCode(code.values.reshape(*lead, self.k), code.indices.reshape(*lead, self.k)),
            pre.reshape(*lead, self.n_latents),
        )

    def forward_reference(self, x: Tensor) -> SAEOutput:
        """Naive dense implementation of `forward` (plain autograd, dense ``z`` and dense decoder matmul).

        Slow (every backward matmul is ``[N, n_latents] x [n_latents, d_in]``); it exists as the correctness
        reference for the fast path in tests and benchmarks. ``pre_acts`` is differentiable here.
        """
        flat, lead = self._flatten(x)
        pre = F.linear(flat - self.b_dec, self.W_enc, self.b_enc)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        vals = F.relu(vals)
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        x_hat = z @ self.W_dec + self.b_dec
        return SAEOutput(
            x_hat.reshape(*lead, self.d_in),
            SparseCode(vals.reshape(*lead, self.k), idx.reshape(*lead, self.k)),
            pre.reshape(*lead, self.n_latents),
        )

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def normalize_decoder_(self, eps: float = 1e-8) -> None:
        """Rescale every decoder row ``W_dec[i]`` to unit L2 norm (in place)."""
        norms = self.W_dec.norm(dim=1, keepdim=True).clamp_min(eps)
        self.W_dec.div_(norms)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Project out of ``W_dec.grad`` the component parallel to each (unit-norm) decoder row.

        ``g_i <- g_i - (g_i · w_i) w_i``, so the optimizer step does not fight the unit-norm constraint
        (Gao et al. 2024, section 2.4). No-op when there is no gradient.
        """
        g = self.W_dec.grad
        if g is None:
            return
        parallel = (g * self.W_dec).sum(dim=1, keepdim=True)
        g.sub_(parallel * self.W_dec)

    @torch.no_grad()
    def init_b_dec_(self, sample: Tensor, method: Literal["geometric_median", "mean"] = "geometric_median") -> None:
        """Set ``b_dec`` from a data sample ``[n, d_in]`` (geometric median via Weiszfeld iterations, or mean)."""
        s = sample.reshape(-1, self.d_in).to(device=self.device, dtype=torch.float32)
        if s.shape[0] == 0:
            raise ValueError("init_b_dec_ needs a non-empty sample")
        if method == "mean":
            center = s.mean(0)
        elif method == "geometric_median":
            center = _geometric_median(s)
        else:
            raise ValueError(f"unknown b_dec init method {method!r}; valid: 'geometric_median', 'mean'")
        self.b_dec.copy_(center.to(self.dtype))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``cfg.json`` (with schema version and the weights' sha256) and ``sae.safetensors``.

        Each file is written to a temporary name, fsynced and renamed into place; the weights go first and
        ``cfg.json`` last, and `load` checks the weights against the sha256 in ``cfg.json``. A crash therefore
        leaves either the previous checkpoint, no ``cfg.json`` (incomplete), or a checksum mismatch - never a
        checkpoint that loads with mixed contents. Returns the directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().to("cpu").contiguous() for name, p in self.named_parameters()}
        weights_path = directory / WEIGHTS_FILE
        fd, tmp_name = tempfile.mkstemp(prefix=f".{WEIGHTS_FILE}.", suffix=".tmp", dir=directory)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt", "schema_version": str(SCHEMA_VERSION)})
            digest = _sha256_file(tmp, fsync=True)
            os.replace(tmp, weights_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        doc = {"schema_version": SCHEMA_VERSION, **self.cfg.model_dump(), "sha256": {WEIGHTS_FILE: digest}}
        _atomic_write_text(directory / CFG_FILE, json.dumps(doc, indent=2) + "\n")
        _fsync_dir(directory)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        expected_d_in: int | None = None,
        verify_checksum: bool = True,
    ) -> TopKSAE:
        """Load a checkpoint written by `save`, validating everything; errors are `SAECheckpointError`.

        Checks: directory and both files present; ``cfg.json`` parses, has a known ``schema_version`` and a
        valid config; the weights match the recorded sha256 (unless ``verify_checksum=False``), parse as
        safetensors and hold exactly ``W_enc, b_enc, W_dec, b_dec`` with the shapes the config implies; and
        ``d_in == expected_d_in`` when given.
        """
        directory = Path(directory)
        cfg_path = directory / CFG_FILE
        weights_path = directory / WEIGHTS_FILE
        if not directory.is_dir():
            raise SAECheckpointError(f"SAE checkpoint directory {directory} does not exist")
        if not cfg_path.is_file():
            raise SAECheckpointError(f"{cfg_path}: missing (incomplete or not an SAE checkpoint)")
        doc = read_json_object(cfg_path, SAECheckpointError)
        version = doc.pop("schema_version", None)
        if version not in KNOWN_SCHEMA_VERSIONS:
            raise SAECheckpointError(
                f"{cfg_path}: schema_version {version!r} is not supported (known: {list(KNOWN_SCHEMA_VERSIONS)})"
            )
        checksums = doc.pop("sha256", {}) or {}
        try:
            cfg = SAEConfig.model_validate(doc)
        except ValidationError as e:
            raise SAECheckpointError(f"{cfg_path}: invalid SAE config: {e}") from e
        if expected_d_in is not None and cfg.d_in != expected_d_in:
            raise SAECheckpointError(
                f"{cfg_path}: d_in={cfg.d_in} but the caller expects d_in={expected_d_in} "
                f"(hook point {cfg.hook_point!r}, model {cfg.model_id!r}): wrong SAE for this model/site"
            )
        if not weights_path.is_file():
            raise SAECheckpointError(f"{weights_path}: missing")
        expected_digest = checksums.get(WEIGHTS_FILE) if isinstance(checksums, dict) else None
        if verify_checksum and expected_digest is not None:
            actual = _sha256_file(weights_path)
            if actual != expected_digest:
                raise SAECheckpointError(
                    f"{weights_path}: sha256 {actual[:12]}... does not match {expected_digest[:12]}... recorded in "
                    f"{CFG_FILE} (corrupt, truncated or from an interrupted save)"
                )
        try:
            tensors = load_file(str(weights_path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise SAECheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from e
        expected = {
            "W_enc": (cfg.n_latents, cfg.d_in),
            "b_enc": (cfg.n_latents,),
            "W_dec": (cfg.n_latents, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        if set(tensors) != set(expected):
            raise SAECheckpointError(
                f"{weights_path}: tensors {sorted(tensors)} do not match the expected {sorted(expected)}"
            )
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise SAECheckpointError(
                    f"{weights_path}: tensor {name} has shape {tuple(tensors[name].shape)}, but {CFG_FILE} "
                    f"implies {shape}"
                )
        sae = cls(cfg, device="meta")
        sae.load_state_dict({n: t.to(cfg.torch_dtype) for n, t in tensors.items()}, assign=True)
        return sae.to(device)


# ---------------------------------------------------------------------- helpers
def _geometric_median(points: Tensor, n_iter: int = 50, eps: float = 1e-6) -> Tensor:
    """Geometric median of ``points [n, d]`` by Weiszfeld's algorithm (starting from the mean)."""
    median = points.mean(0)
    for _ in range(n_iter):
        dist = (points - median).norm(dim=1).clamp_min(eps)
        w = 1.0 / dist
        new = (w[:, None] * points).sum(0) / w.sum()
        if (new - median).norm() <= eps * (1.0 + median.norm()):
            median = new
            break
        median = new
    return median
