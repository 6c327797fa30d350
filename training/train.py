"""SAE training: fit a `TopKSAE` to the activation shards of one hook point.

How it connects: reads shards written by the harvester through `safesail_training.shards`, trains the
`safesail_guard.sae.TopKSAE` (the same class the runtime loads), scores the held-out split with
`safesail_training.metrics`, and leaves in ``out_dir`` the SAE checkpoint (``cfg.json`` + ``sae.safetensors``)
and ``train_log.jsonl``. The build / sweep step (`safesail_training.build_sae`, `select`) calls `train_sae` once
per (hook point, k, expansion).

Recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
- loss = FVU + aux_coef * min(n_dead / aux_k, 1) * AuxFVU, where
  FVU = ||x - x̂||² / ||x - mean(x)||² over the batch, and AuxFVU = ||e - ê||² / ||e - mean(e)||² is the
  normalised error of reconstructing the main residual ``e = x - x̂`` (detached) from the top-``aux_k``
  *dead* latents' pre-activations, ``ê = W_dec^T ReLU(TopK_aux(pre[dead]))`` (no b_dec);
- a latent is dead when it has not fired (been in the top-k with a positive value) for
  ``dead_tokens_threshold`` tokens;
- Adam (betas 0.9/0.999, eps 6.25e-10); lr default ``1.6e-3 / sqrt(n_latents / 2**14)`` (Gao et al.'s scaling
  times 8, because our runs are ~250 steps, not hundreds of thousands), optional linear warm-up, and a linear
  decay to 0 over the last ``lr_decay_frac`` (20%) of the steps;
- ``b_dec`` initialised to the geometric median of a data sample; decoder rows renormalised to unit norm after
  every step and the gradient component parallel to them removed before it.
Inputs are not rescaled: FVU and Adam are invariant to the activation scale, and the decoder rows are unit norm.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from safesail_guard.sae import SAECheckpointError, SAEConfig, SparseCode, TopKSAE

from .metrics import ReconMetrics, reconstruction_metrics
from .shards import ShardError, ShardReader

__all__ = ["TrainConfig", "TrainResult", "StepMetrics", "SAETrainer", "train_sae", "resolve_device",
           "resolve_matmul_dtype"]

CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
ADAM_BETAS = (0.9, 0.999)
# Gao et al. fit lr = 2e-4 / sqrt(n_latents / 2**14) for long runs; with ~250 steps of 4096 tokens that is far
# too slow (SmolLM2 layer 14 mlp_out, k=32, 684k tokens: val FVU 0.371 at their lr, 0.246 at 8x, 0.274 and
# 52% dead latents at 30x), so the default is their scaling times 8.
DEFAULT_LR_AT_2_14 = 1.6e-3
ADAM_EPS = 6.25e-10
# Fields that only change how a run is executed or reported, not its result; they may differ on resume.
_OPERATIONAL_FIELDS = {"device", "threads", "checkpoint_every", "log_every"}


class TrainConfig(BaseModel):
    """Hyper-parameters of one SAE training run (validated; bad values raise ValueError naming the field)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(gt=0, description="Active latents per token (TopK).")
    expansion: int = Field(default=10, ge=1, description="n_latents = d_model * expansion.")
    batch_size: int = Field(default=4096, gt=0, description="Tokens per optimisation step.")
    lr: float | None = Field(
        default=None,
        gt=0,
        description="Adam learning rate; None = 1.6e-3 / sqrt(n_latents / 2**14), i.e. Gao et al.'s scaling "
        "times 8 for short (~1M-token) runs (2.7e-3 at 5760 latents; see docs/decisions.md).",
    )
    n_tokens: int | None = Field(
        default=None, gt=0, description="Training tokens per epoch, from the start of the training split; None = all."
    )
    epochs: int = Field(default=1, ge=1, description="Passes over the training tokens (each reshuffled).")
    lr_warmup_steps: int = Field(default=0, ge=0, description="Steps of linear lr warm-up from 0.")
    lr_decay_frac: float = Field(
        default=0.2, ge=0, le=1, description="Final share of the steps over which lr decays linearly to 0."
    )
    aux_k: int | None = Field(
        default=None,
        gt=0,
        description="Dead latents used by the AuxK loss; None = d_model // 2 (as in EleutherAI sparsify; "
        "Gao et al. used 512 at larger widths). Capped at n_latents.",
    )
    aux_coef: float = Field(default=1 / 32, ge=0, description="Weight of the AuxK loss (0 disables it).")
    dead_tokens_threshold: int = Field(
        default=200_000,
        gt=0,
        description="A latent that has not fired for this many training tokens is dead (Gao: 10M at scale; "
        "200k suits ~1M-token runs).",
    )
    seed: int = Field(default=0, description="Seed for initialisation and data order.")
    device: str = Field(default="auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads during training; None = torch default.")
    checkpoint_every: int | None = Field(
        default=500_000, gt=0, description="Tokens between resumable checkpoints; None = no periodic checkpoints."
    )
    log_every: int = Field(default=10, ge=1, description="Steps between train_log.jsonl lines and progress updates.")
    val_fraction: float = Field(
        default=0.05, ge=0, lt=1, description="Share of tokens (the last ones) held out for validation metrics."
    )
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Dtype of the dense encoder matmul; 'auto' = bfloat16 where the hardware runs it fast "
        "(CUDA with bf16, CPUs with AVX512-BF16/AMX), else float32. Parameters, gradients and Adam stay float32.",
    )
    b_dec_init: Literal["geometric_median", "mean", "zero"] = Field(
        default="geometric_median", description="How b_dec is initialised from the first data sample."
    )
    b_dec_init_tokens: int = Field(default=16384, gt=0, description="Sample size for the b_dec initialisation.")
    shuffle_window_shards: int = Field(
        default=4, ge=1, description="Shards shuffled together (memory: this many shards in storage dtype)."
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        if self.dead_tokens_threshold < self.batch_size:
            raise ValueError(
                f"dead_tokens_threshold={self.dead_tokens_threshold} must be >= batch_size={self.batch_size} "
                "(otherwise every latent absent from one batch counts as dead)"
            )
        if self.aux_k is not None and self.aux_k < self.k:
            raise ValueError(f"aux_k={self.aux_k} should be >= k={self.k} (or None for d_model // 2)")
        return self

    def resolved_lr(self, n_latents: int) -> float:
        """The learning rate for a dictionary of ``n_latents``."""
        return self.lr if self.lr is not None else DEFAULT_LR_AT_2_14 / math.sqrt(n_latents / 2**14)

    def resolved_aux_k(self, d_in: int, n_latents: int) -> int:
        """The AuxK width for the given SAE size."""
        return min(self.aux_k if self.aux_k is not None else max(d_in // 2, 1), n_latents)


class StepMetrics(NamedTuple):
    """Metrics of one step, as 0-d tensors (convert with float() only when logging, to avoid syncs)."""

    loss: Tensor
    fvu: Tensor
    aux_loss: Tensor
    dead_frac: Tensor
    l0: Tensor


@dataclass
class TrainResult:
    """Outcome of `train_sae`."""

    sae: TopKSAE
    out_dir: Path
    tokens_seen: int
    steps: int
    seconds: float
    tokens_per_s: float
    final: dict[str, float]
    """Training metrics averaged over the last log window: loss, fvu, aux_loss, dead_frac, l0."""
    val: ReconMetrics | None
    peak_rss_mb: float
    resumed_from_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_matmul_dtype(choice: str, device: torch.device) -> torch.dtype:
    """Resolve `TrainConfig.matmul_dtype` for a device ('auto' picks bfloat16 only where it is fast)."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        try:
            fast = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            fast = False
        return torch.bfloat16 if fast else torch.float32
    return torch.float32


class SAETrainer:
    """Optimisation state of one SAE: Adam, the per-latent "tokens since last fired" counters and progress.

    `step` runs one batch. ``reference=True`` uses the naive dense `TopKSAE.forward_reference` and a dense
    AuxK (for tests and the benchmark); the default uses the sparse fast path.
    """

    def __init__(
        self,
        sae: TopKSAE,
        cfg: TrainConfig,
        *,
        matmul_dtype: torch.dtype | None = None,
        reference: bool = False,
        total_steps: int | None = None,
    ) -> None:
        self.sae = sae
        self.total_steps = total_steps
        self.cfg = cfg
        self.reference = reference
        self.matmul_dtype = None if matmul_dtype in (None, sae.dtype) else matmul_dtype
        self.lr = cfg.resolved_lr(sae.n_latents)
        self.aux_k = cfg.resolved_aux_k(sae.d_in, sae.n_latents)
        fused = sae.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=self.lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)
        self.tokens_since_fired = torch.zeros(sae.n_latents, dtype=torch.int64, device=sae.device)
        self.steps = 0
        self.tokens_seen = 0

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): linear warm-up, constant, linear decay to 0 at the end."""
        lr = self.lr
        warm = self.cfg.lr_warmup_steps
        if warm > 0 and step < warm:
            lr *= (step + 1) / warm
        if self.total_steps and self.cfg.lr_decay_frac > 0:
            decay_steps = max(1, round(self.cfg.lr_decay_frac * self.total_steps))
            remaining = self.total_steps - step
            if remaining < decay_steps:
                lr *= max(remaining, 0) / decay_steps
        return lr

    def step(self, x: Tensor) -> StepMetrics:
        """One Adam step on a batch ``x [batch, d_in]``."""
        sae = self.sae
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.steps)
        x = x.to(device=sae.device, dtype=sae.dtype)
        n = x.shape[0]
        dead = self.tokens_since_fired >= self.cfg.dead_tokens_threshold
        if self.reference:
            out = sae.forward_reference(x)
        else:
            out = sae(x, matmul_dtype=self.matmul_dtype, reuse_buffers=True)
        err = x - out.x_hat
        total_var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = err.pow(2).sum() / total_var
        loss = fvu
        aux = torch.zeros((), device=sae.device)
        n_dead = int(dead.sum())
        if self.cfg.aux_coef > 0 and n_dead > 0:
            aux = self._auxk_loss(x, out.pre_acts, err.detach(), dead, n_dead)
            loss = loss + self.cfg.aux_coef * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad_()
        self.optimizer.step()
        sae.normalize_decoder_()
        with torch.no_grad():
            active = out.code.values > 0
            self.tokens_since_fired += n
            self.tokens_since_fired[out.code.indices[active]] = 0
            l0 = active.sum(-1).float().mean()
        self.steps += 1
        self.tokens_seen += n
        return StepMetrics(loss.detach(), fvu.detach(), aux.detach(), dead.float().mean(), l0)

    def _auxk_loss(self, x: Tensor, pre_acts: Tensor, target: Tensor, dead: Tensor, n_dead: int) -> Tensor:
        """``min(n_dead / aux_k, 1) * ||target - ê||² / ||target - mean(target)||²`` with ê decoded (no b_dec)
        from the top-aux_k dead latents."""
        sae = self.sae
        aux_k = min(self.aux_k, n_dead)
        if self.reference:
            masked = pre_acts.masked_fill(~dead, float("-inf"))
            vals, idx = masked.topk(aux_k, dim=-1, sorted=False)
            z = torch.zeros_like(pre_acts).scatter(-1, idx, torch.relu(vals))
            e_hat = z @ sae.W_dec
        else:
            with torch.no_grad():
                if n_dead < sae.n_latents:
                    dead_idx = dead.nonzero().squeeze(1)
                    _, local = pre_acts.index_select(1, dead_idx).topk(aux_k, dim=-1, sorted=False)
                    idx = dead_idx[local]
                else:
                    _, idx = pre_acts.topk(aux_k, dim=-1, sorted=False)
            vals = torch.relu(sae.pre_acts_at(x, idx, pre_acts=pre_acts))
            e_hat = sae.decode(SparseCode(vals, idx), bias=False)
        aux_var = (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
        scale = min(n_dead / self.aux_k, 1.0)
        return scale * (e_hat - target).pow(2).sum() / aux_var

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the SAE weights needed to continue bit-identically."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "tokens_since_fired": self.tokens_since_fired.cpu(),
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output (the SAE weights are restored separately)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.tokens_since_fired = state["tokens_since_fired"].to(self.sae.device)
        self.steps = int(state["steps"])
        self.tokens_seen = int(state["tokens_seen"])


# ------------------------------------------------------------------------------------------ checkpoints
def _result_relevant(cfg: TrainConfig) -> dict[str, Any]:
    return cfg.model_dump(exclude=_OPERATIONAL_FIELDS)


def _save_checkpoint(out_dir: Path, trainer: SAETrainer, cfg: TrainConfig, fingerprint: dict[str, Any],
                     log_bytes: int, log_window: list[StepMetrics]) -> None:
    """Write ``out_dir/checkpoint`` atomically: build it in a temp dir, then swap directories."""
    final = out_dir / CHECKPOINT_DIR
    tmp = out_dir / f".{CHECKPOINT_DIR}.tmp"
    old = out_dir / f".{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainer.sae.save(tmp)
    state = trainer.state_dict()
    state.update(
        schema_version=1,
        train_cfg=_result_relevant(cfg),
        data=fingerprint,
        log_bytes=log_bytes,
        log_window=[torch.stack(list(m)).cpu() for m in log_window],
    )
    with open(tmp / TRAINER_STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(out_dir: Path) -> Path | None:
    final = out_dir / CHECKPOINT_DIR
    if final.is_dir():
        return final
    old = out_dir / f".{CHECKPOINT_DIR}.old"  # a crash between the two renames of _save_checkpoint
    return old if old.is_dir() else None


def _load_checkpoint(ckpt: Path, cfg: TrainConfig, fingerprint: dict[str, Any], device: torch.device,
                     expected_d_in: int) -> tuple[TopKSAE, dict[str, Any]]:
    hint = "delete it or call train_sae(..., resume=False)"
    try:
        sae = TopKSAE.load(ckpt, device=device, expected_d_in=expected_d_in)
    except SAECheckpointError as e:
        raise SAECheckpointError(f"cannot resume from {ckpt}: {e}; {hint}") from e
    path = ckpt / TRAINER_STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise SAECheckpointError(f"cannot resume: {path} is missing or corrupt ({e}); {hint}") from e
    if state.get("schema_version") != 1:
        raise SAECheckpointError(f"cannot resume: {path} has unknown schema_version {state.get('schema_version')!r}")
    saved_cfg = state.get("train_cfg", {})
    current = _result_relevant(cfg)
    diff = sorted(k for k in set(saved_cfg) | set(current) if saved_cfg.get(k) != current.get(k))
    if diff:
        raise ValueError(f"cannot resume from {ckpt}: TrainConfig differs in {diff}; {hint}")
    if state.get("data") != fingerprint:
        raise ValueError(f"cannot resume from {ckpt}: it was trained on different shards; {hint}")
    return sae, state


def _hook_point_of(shards: ShardReader, meta: dict[str, Any]) -> str | None:
    """The hook point the shards came from: `meta["hook_point"]`, else the shard folder's name if it is one."""
    from safesail_guard.hooks import HookError, HookPoint

    if isinstance(meta.get("hook_point"), str):
        return meta["hook_point"]
    try:
        return HookPoint.parse(Path(shards.directory).name).name
    except HookError:
        return None


def _model_id_of(meta: dict[str, Any]) -> str | None:
    """`name@sha256:fingerprint` of the model the harvester recorded (`meta["model"]`), or `meta["model_id"]`."""
    if isinstance(meta.get("model_id"), str):
        return meta["model_id"]
    model = meta.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("fingerprint"), str):
        return f"{model['name']}@sha256:{model['fingerprint']}"
    return None


# ------------------------------------------------------------------------------------------ main entry
def train_sae(
    shards: ShardReader,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    resume: bool = True,
) -> TrainResult:
    """Train a TopK SAE on ``shards`` and save it to ``out_dir`` (see the module docstring for the recipe).

    Holds out the last ``val_fraction`` of tokens, trains ``epochs`` passes over (the first ``n_tokens`` of)
    the rest, writes ``train_log.jsonl`` and periodic checkpoints to ``out_dir/checkpoint/``; with
    ``resume=True`` an existing checkpoint is continued and the final weights equal those of an
    uninterrupted run. The checkpoint is removed after the final SAE is saved.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if not shards.complete:
        raise ShardError(
            f"{shards.directory}: the shard set is not marked complete (harvest still running or interrupted); "
            "finish the harvest (ShardWriter.close(complete=True)) before training"
        )
    train_set, val_set = shards.train_val_split(cfg.val_fraction)
    if cfg.n_tokens is not None:
        if cfg.n_tokens > train_set.n_tokens:
            raise ValueError(
                f"n_tokens={cfg.n_tokens} but only {train_set.n_tokens} training tokens are available in "
                f"{shards.directory} after holding out val_fraction={cfg.val_fraction}"
            )
        train_set = train_set.take(cfg.n_tokens)
    per_epoch = train_set.n_tokens
    total = per_epoch * cfg.epochs
    total_steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
    device = resolve_device(cfg.device)
    matmul_dtype = resolve_matmul_dtype(cfg.matmul_dtype, device)
    meta = shards.meta
    sae_cfg = SAEConfig(
        d_in=shards.d_model,
        expansion=cfg.expansion,
        k=cfg.k,
        hook_point=_hook_point_of(shards, meta),
        model_id=_model_id_of(meta),
    )
    fingerprint = train_set.fingerprint()
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / f".{CHECKPOINT_DIR}.tmp", ignore_errors=True)
    log_path = out_dir / LOG_FILE

    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        window: list[StepMetrics] = []  # steps since the last log line (averaged into it)
        ckpt = _find_checkpoint(out_dir) if resume else None
        if ckpt is not None:
            sae, state = _load_checkpoint(ckpt, cfg, fingerprint, device, shards.d_model)
            trainer = SAETrainer(sae, cfg, matmul_dtype=matmul_dtype, total_steps=total_steps)
            trainer.load_state_dict(state)
            with open(log_path, "a+b") as f:
                f.truncate(int(state["log_bytes"]))
            window = [StepMetrics(*t.to(device).unbind()) for t in state.get("log_window", [])]
        else:
            sae = TopKSAE(sae_cfg, device=device, seed=cfg.seed)
            if cfg.b_dec_init != "zero":
                sample = next(train_set.iter_batches(min(cfg.b_dec_init_tokens, per_epoch), seed=cfg.seed,
                                                     window_shards=cfg.shuffle_window_shards))
                sae.init_b_dec_(sample, method=cfg.b_dec_init)
            trainer = SAETrainer(sae, cfg, matmul_dtype=matmul_dtype, total_steps=total_steps)
            log_path.write_bytes(b"")
        resumed_from = trainer.tokens_seen

        last: dict[str, float] = {}
        t0 = time.perf_counter()
        desc = f"SAE {sae_cfg.hook_point + ' ' if sae_cfg.hook_point else ''}k={cfg.k} x{cfg.expansion}"
        bar = tqdm(total=total, initial=trainer.tokens_seen, unit="tok", unit_scale=True, disable=not progress,
                   desc=desc, dynamic_ncols=True)
        with bar, open(log_path, "ab") as log:
            while trainer.tokens_seen < total:
                epoch = trainer.tokens_seen // per_epoch
                start = trainer.tokens_seen - epoch * per_epoch
                batches = train_set.iter_batches(
                    cfg.batch_size, seed=cfg.seed + epoch, start_token=start,
                    window_shards=cfg.shuffle_window_shards, device=device,
                )
                for x in batches:
                    before = trainer.tokens_seen
                    window.append(trainer.step(x))
                    bar.update(x.shape[0])
                    done = trainer.tokens_seen >= total
                    if trainer.steps % cfg.log_every == 0 or done:
                        last = _summarise(window)
                        window.clear()
                        line = {"step": trainer.steps, "tokens": trainer.tokens_seen, **last,
                                "elapsed_s": round(time.perf_counter() - t0, 3)}
                        log.write((json.dumps(line) + "\n").encode())
                        log.flush()
                        bar.set_postfix(loss=f"{last['loss']:.4f}", fvu=f"{last['fvu']:.4f}",
                                        dead=f"{last['dead_frac']:.3f}", refresh=False)
                    if cfg.checkpoint_every and not done and (
                        trainer.tokens_seen // cfg.checkpoint_every > before // cfg.checkpoint_every
                    ):
                        log.flush()
                        _save_checkpoint(out_dir, trainer, cfg, fingerprint, log.tell(), window)
        seconds = time.perf_counter() - t0
        sae.release_buffers()
        sae.save(out_dir)
        val = reconstruction_metrics(sae, val_set, batch_size=cfg.batch_size) if val_set is not None else None
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / f".{CHECKPOINT_DIR}.old", ignore_errors=True)
        trained = trainer.tokens_seen - resumed_from
        return TrainResult(
            sae=sae,
            out_dir=out_dir,
            tokens_seen=trainer.tokens_seen,
            steps=trainer.steps,
            seconds=seconds,
            tokens_per_s=trained / seconds if seconds > 0 else float("nan"),
            final=last,
            val=val,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resumed_from_tokens=resumed_from,
            extra={"lr": trainer.lr, "aux_k": trainer.aux_k, "matmul_dtype": str(matmul_dtype).replace("torch.", ""),
                   "device": str(device), "threads": torch.get_num_threads()},
        )
    finally:
        if cfg.threads is not None:
            torch.set_num_threads(old_threads)


def _summarise(window: list[StepMetrics]) -> dict[str, float]:
    if not window:
        return {}
    stacked = {name: torch.stack([getattr(m, name) for m in window]).float().mean().item()
               for name in StepMetrics._fields}
    return {k: round(v, 6) for k, v in stacked.items()}
