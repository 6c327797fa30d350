"""Stages ``head_bank`` and ``head_fit`` of `safesail build-db`: the detection head over SAE codes and error.

``head_bank``  every safety-set prompt plus one jailbreak-wrapped copy of each single-turn prompt (benign, edgy
               and unsafe alike, so the wrapper carries no label), run through the model; per content token the
               hook activation and the SAE's TopK code at each point -> ``head/bank.npz`` (cached by a key of
               the texts and the SAEs' checksums).
``head_fit``   ``lam1``/``lam2`` chosen by a 3-fold split over source groups, the head fitted on all of them,
               Platt-scaled on out-of-fold scores under the shipped aggregation (so the risk is a calibrated
               probability at a 50/50 prior), thresholds read from the same scores -> ``head/fit.npz`` and
               ``head/fit.json``. Its weighted latents join the database as features (`head_latents`), and
               `head_file` turns the fit into ``detection_head.safetensors``.

Labels: ``unsafe`` = 1; ``benign`` and ``edgy`` = 0. Fit details: `safesail_training.detection_head`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import Log, StageClock, write_json

FLAG_FPR = 0.05
"""Share of training negatives (out-of-fold) the shipped ``flag_at`` risk flags."""
BLOCK_FPR = 0.01
"""Share of training negatives (out-of-fold) the shipped ``block_at`` risk flags."""


def head_items(seed: int) -> list[Any]:
    """The head's training items: the safety set's prompts and one wrapped copy of each single-turn prompt."""
    from safesail_training.corpus.safety import load_safety_items, wrap_in_templates

    prompts = load_safety_items("prompt")
    return prompts + wrap_in_templates(prompts, n_per_item=1, seed=seed)


def bank_key(items: list[Any], sae_dirs: dict[str, Path], max_tokens: int) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(it.messages(), ensure_ascii=False).encode())
    for p in sorted(sae_dirs):
        h.update(p.encode())
        h.update(hashlib.sha256((sae_dirs[p] / "sae.safetensors").read_bytes()).digest())
    h.update(str(max_tokens).encode())
    return h.hexdigest()[:32]


def load_bank(d: Path, key: str) -> Any | None:
    """The token bank in folder ``d`` (``bank.npz``) when its ``bank.key`` is ``key``, else None."""
    from safesail_training.detection_head import TokenBank

    kf = d / "bank.key"
    if kf.is_file() and kf.read_text().strip() == key and (d / "bank.npz").is_file():
        return TokenBank.load(d / "bank.npz")
    return None


def head_bank(cfg: BuildDBConfig, loaded: Any, saes: dict[str, Any], sae_dirs: dict[str, Path], work: Path,
              clock: StageClock, log: Log, progress: bool) -> tuple[list[Any], Any, str]:
    """Stage ``head_bank``: ``(items, TokenBank, key)``; reuses ``head/bank.npz`` when its key matches."""
    from tqdm import tqdm

    from safesail_guard.hooks import HookPoint
    from safesail_training.detection_head import harvest_token_bank

    items = head_items(cfg.seed)
    key = bank_key(items, sae_dirs, cfg.head_max_tokens)
    d = work / "head"
    d.mkdir(parents=True, exist_ok=True)
    cached = load_bank(d, key)
    if cached is not None:
        log(f"head bank: reusing {len(items)} texts from {d / 'bank.npz'}")
        return items, cached, key
    t0 = time.perf_counter()
    points = [HookPoint.parse(p) for p in cfg.points]
    by_layer = {HookPoint.parse(p).layer: s for p, s in saes.items()}
    with tqdm(total=len(items), desc="head: activations", unit="text", disable=not progress) as bar:
        bank = harvest_token_bank(loaded, by_layer, points, [it.messages() for it in items],
                                  max_tokens=cfg.head_max_tokens, progress=bar.update)
    bank.save(d / "bank.npz")
    (d / "bank.key").write_text(key + "\n")
    clock.computed_now("head_bank", time.perf_counter() - t0)
    log(f"head bank: {len(items)} texts, {int(bank.offsets[-1])} tokens")
    return items, bank, key


@dataclass
class HeadFit:
    """The fitted head and what the database and its report need of it."""

    model: Any  # detection_head.HeadModel
    report: dict[str, Any]

    def latents(self) -> dict[int, list[int]]:
        """Per layer, the latent ids with a non-zero weight."""
        return {L: [int(i) for i in v] for L, v in self.model.nonzero_latents().items()}


def _labels(items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    from safesail_training.corpus.safety import binary_label, source_group

    return (np.array([binary_label(it) for it in items]), np.array([source_group(it) for it in items]))


def _oof_aggregated(X: np.ndarray, y: np.ndarray, groups: np.ndarray, layout: Any, lam1: float, lam2: float,
                    bank: Any, saes: dict[int, Any], kind: str, window: int) -> np.ndarray:
    """Out-of-fold logits of every row under the shipped aggregation (3-fold split over source groups)."""
    from safesail_training.detection_eval import group_folds
    from safesail_training.detection_head import aggregate_token_logits, fit_head, token_logits

    fold = group_folds(groups, 3)
    out = np.full(len(y), np.nan)
    for f in sorted(set(fold.tolist())):
        tr = fold != f
        model = fit_head(X[tr], y[tr], layout, lam1, lam2)
        per_tok = token_logits(model, bank, saes)
        for i in np.nonzero(~tr)[0]:
            out[i] = aggregate_token_logits(per_tok[i], kind, window)
    return out


def head_fit(cfg: BuildDBConfig, items: list[Any], bank: Any, key: str, saes: dict[str, Any], work: Path,
             clock: StageClock, log: Log) -> HeadFit:
    """Stage ``head_fit`` (cached in ``head/fit.npz`` + ``head/fit.json`` under the bank's key and the settings)."""
    from safesail_guard.hooks import HookPoint
    from safesail_training.detection_eval import auroc, threshold_at_fpr
    from safesail_training.detection_head import (
        LAM1_GRID,
        LAM2_GRID,
        fit_head,
        platt,
        pooled_features,
        select_lambdas,
        stack_features,
    )

    d = work / "head"
    settings = {"bank": key, "lam1_grid": list(LAM1_GRID), "lam2_grid": list(LAM2_GRID), "calibration": "platt-oof",
                "tie_break": "largest lam2, then largest lam1",
                "aggregation": cfg.head_aggregation, "window": cfg.head_window}
    by_layer = {HookPoint.parse(p).layer: s for p, s in saes.items()}
    if (d / "fit.json").is_file() and (d / "fit.npz").is_file():
        cached = load_fit(d)
        if cached.report.get("settings") == settings:
            log(f"head fit: reusing {d / 'fit.json'}")
            return cached
    t0 = time.perf_counter()
    X, layout = stack_features(pooled_features(bank, by_layer))
    y, groups = _labels(items)
    log(f"head fit: {len(y)} texts ({int(y.sum())} unsafe) from {len(set(groups.tolist()))} source groups, "
        f"{layout.width} columns; choosing lam1/lam2 by a 3-fold group split")
    sel = select_lambdas(X, y, groups, layout, lam1_grid=LAM1_GRID, lam2_grid=LAM2_GRID)
    model = fit_head(X, y, layout, sel.lam1, sel.lam2)
    raw_oof = _oof_aggregated(X, y, groups, layout, sel.lam1, sel.lam2, bank, by_layer, cfg.head_aggregation,
                              cfg.head_window)
    # Platt scaling on the out-of-fold aggregated logits, folded into the head (a > 0 commutes with the
    # aggregation): risk = sigmoid(logit) is then calibrated at a 50/50 prior under the shipped aggregation.
    a, b = platt(raw_oof, y)
    if a <= 0:  # only on data without signal (tiny random models): keep the raw scale and say so
        log(f"WARNING: the head's out-of-fold scores rank backwards (Platt slope {a:.3f}); risk is NOT calibrated")
        a, b = 1.0, 0.0
    model.w = model.w * a
    model.bias = a * model.bias + b
    oof = a * raw_oof + b
    neg = oof[y == 0]
    flag_logit = threshold_at_fpr(neg, FLAG_FPR)
    block_logit = threshold_at_fpr(neg, BLOCK_FPR)
    nz = model.nonzero_latents()
    share = model.named_share(X)
    report = {
        "settings": settings,
        "lam1": sel.lam1,
        "lam2": sel.lam2,
        "inner_auroc": sel.inner_auroc,
        "oof_auroc": round(auroc(oof, y), 4),
        "platt": {"a": round(a, 6), "b": round(b, 6)},
        "train_auroc": round(auroc(model.decision_function(X), y), 4),
        "texts": int(len(y)),
        "unsafe": int(y.sum()),
        "groups": sorted(set(groups.tolist())),
        "nonzero_latents": {str(L): int(len(v)) for L, v in nz.items()},
        "named_share_mean_unsafe": round(float(share[y == 1].mean()), 4),
        "iterations": model.iterations,
        "flag_logit": round(float(flag_logit), 6),
        "block_logit": round(float(block_logit), 6),
    }
    np.savez(d / "fit.npz", w=model.w, mu=model.mu, bias=np.array(model.bias), layers=np.array(layout.layers),
             n_latents=np.array(layout.n_latents), d=np.array(layout.d))
    write_json(d / "fit.json", report)
    clock.computed_now("head_fit", time.perf_counter() - t0)
    log(f"head fit: lam1={sel.lam1:g} lam2={sel.lam2:g}, out-of-fold AUROC {report['oof_auroc']}, "
        f"{sum(len(v) for v in nz.values())} latents weighted")
    return HeadFit(model, report)


def load_fit(d: Path) -> HeadFit:
    """The fit written by `head_fit` in folder ``d`` (``fit.npz`` + ``fit.json``)."""
    from safesail_training.detection_head import HeadModel, Layout

    report = json.loads((d / "fit.json").read_text())
    with np.load(d / "fit.npz") as z:
        layout = Layout(tuple(int(v) for v in z["layers"]), tuple(int(v) for v in z["n_latents"]),
                        tuple(int(v) for v in z["d"]))
        model = HeadModel(layout, z["w"], z["mu"], float(z["bias"]), report["lam1"], report["lam2"])
    return HeadFit(model, report)


def _sigmoid(v: float) -> float:
    return float(1.0 / (1.0 + np.exp(-v)))


def head_file(fit: HeadFit, saes: dict[int, Any], cfg: BuildDBConfig, model_fingerprint: str) -> bytes:
    """``detection_head.safetensors`` for the fit (see `safesail_neuron_db.detection_head` for the formula)."""
    import torch

    from safesail_neuron_db.detection_head import HeadLayer, head_bytes

    m = fit.model
    layers: dict[int, HeadLayer] = {}
    for L, zs, es in m.layout.blocks():
        sae = saes[L]
        w_z, w_e = m.w[zs], m.w[es]
        mu_z, mu_e = m.mu[zs], m.mu[es]
        W_dec = sae.W_dec.detach().double().numpy()
        b_dec = sae.b_dec.detach().double().numpy()
        nz = np.nonzero(w_z)[0]
        layers[L] = HeadLayer(
            layer=L,
            w_e=torch.from_numpy(w_e).float(),
            v=torch.from_numpy(W_dec @ w_e).float(),
            c=float(w_e @ b_dec + w_e @ mu_e),
            latents=torch.from_numpy(nz.astype(np.int64)),
            w_z=torch.from_numpy(w_z[nz]).float(),
            mu_z=torch.from_numpy(mu_z[nz]).float(),
        )
    r = fit.report
    spec = {
        "bias": round(m.bias, 8),
        "aggregation": {"kind": cfg.head_aggregation, "window": cfg.head_window},
        "calibration": {
            "prior": 0.5,
            "meaning": "risk = sigmoid(aggregated logit): the probability that the scope is unsafe if unsafe and "
                       "safe text were equally likely (class-balanced fit, Platt-scaled on out-of-fold scores)",
            "flag_at": round(_sigmoid(r["flag_logit"]), 6),
            "block_at": round(_sigmoid(r["block_logit"]), 6),
            "flag_fpr": FLAG_FPR,
            "block_fpr": BLOCK_FPR,
            "thresholds_from": "out-of-fold scores of a 3-fold split over the training source groups",
        },
        "fit": {k: r[k] for k in ("lam1", "lam2", "oof_auroc", "train_auroc", "texts", "unsafe", "groups",
                                  "nonzero_latents", "named_share_mean_unsafe")},
        "trained_on": "safesail_training.corpus.safety prompts + one jailbreak-wrapped copy of each (labels: unsafe=1)",
        "pool": "content tokens of every message",
    }
    return head_bytes(layers, spec, model_fingerprint)
