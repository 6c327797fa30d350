"""A neuron database for a tiny random model, built from real (random-init) TopK SAEs, for guard tests.

The selected latents are the ones that fire most on a few texts, so the guard has something to see; their
``max_act`` comes from those texts and thresholds are fitted the way build-db fits them. The database can
carry the competition file (exact TopK firing) and a hand-made risk head.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from safesail_guard.hooks import capture, run_until_hooks
from safesail_guard.runtime.scoring import RiskHead
from safesail_guard.sae import SAEConfig, TopKSAE
from safesail_neuron_db import DatabaseWriter
from safesail_neuron_db.competition import competition_bytes
from safesail_neuron_db.publish import add_files
from safesail_training.act_records import fit_thresholds
from tests.neuron_db.factory import _feature

TEXTS = [
    "How do I bake bread at home? Mix flour, water, salt and yeast.",
    "Explain how vaccines work in simple terms for a child.",
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea and the wind at night.",
]


def tiny_saes(d_model: int, layers: tuple[int, ...], *, k: int = 16, expansion: int = 8, seed: int = 0) -> dict[int, TopKSAE]:
    """Random-init TopK SAEs (unit-norm decoder, zero biases) per layer."""
    out = {}
    for i, layer in enumerate(layers):
        sae = TopKSAE(SAEConfig(d_in=d_model, expansion=expansion, k=k, hook_point=f"layers.{layer}.mlp_out"),
                      seed=seed + i)
        out[layer] = sae
    return out


def layer_acts(loaded, layers: tuple[int, ...], texts: list[str] = TEXTS) -> dict[int, torch.Tensor]:
    """mlp_out activations ``[N, d]`` of ``texts`` (concatenated) at ``layers``."""
    tok = loaded.tokenizer
    got: dict[int, list[torch.Tensor]] = {ly: [] for ly in layers}
    for t in texts:
        ids = torch.tensor([tok(t)["input_ids"]])
        with capture(loaded.model, [f"layers.{ly}.mlp_out" for ly in layers]) as store:
            with torch.no_grad():
                run_until_hooks(loaded.model, input_ids=ids)
        for p, acts in store.items():
            got[p.layer].append(acts[0][0])
    return {ly: torch.cat(v) for ly, v in got.items()}


def make_guard_db(directory: Path, loaded, *, layers: tuple[int, ...] = (0, 2), n_select: int = 6, k: int = 16,
                  competition: bool = True, head: bool = True, fingerprint: str | None = None) -> tuple[Path, dict[int, TopKSAE]]:
    """Write a database for ``loaded`` (a tiny LoadedModel) and return it with the full SAEs."""
    d = loaded.d_model
    saes = tiny_saes(d, layers, k=k)
    acts = layer_acts(loaded, layers)
    fp = fingerprint or loaded.identity.fingerprint
    w = DatabaseWriter(directory, model={"name": loaded.identity.name, "source": "directory", "fingerprint": fp},
                       site="mlp_out", sae_configs={ly: {"d_in": d, "n_latents": saes[ly].n_latents, "k": k}
                                                    for ly in layers},
                       build={"explainer": "offline"}, seed=0, map_method="pca")
    gen = torch.Generator().manual_seed(0)
    i = 0
    for layer in layers:
        sae = saes[layer]
        with torch.no_grad():
            x = acts[layer]
            pre = sae.pre_acts(x)
            code = sae.encode(x)
            dense = sae.dense(code)
        order = torch.argsort((dense > 0).sum(0), descending=True)[:n_select]
        latents = torch.sort(order).values
        fit = fit_thresholds(pre[:, latents], dense[:, latents])
        w.add_encoder(layer, latents=latents.long(), W_enc=sae.W_enc.detach()[latents],
                      b_enc=sae.b_enc.detach()[latents], threshold=fit.threshold,
                      W_dec=sae.W_dec.detach()[latents], b_dec=sae.b_dec.detach())
        for j, lat in enumerate(latents.tolist()):
            f = _feature(i, layer, lat, gen)
            max_act = round(float(dense[:, lat].max().clamp_min(1e-3)), 4)
            rec = replace(f.rec, max_act=max_act)
            w.add_feature(rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=f.map_xy,
                          threshold=float(fit.threshold[j]))
            i += 1
    path = w.finish()
    extra: dict[str, bytes] = {}
    if competition:
        extra["competition.safetensors"] = competition_bytes(
            {ly: (saes[ly].W_enc.detach(), saes[ly].b_enc.detach(), k) for ly in layers}, fp)
    if head:
        from safesail_neuron_db import NeuronDB

        with NeuronDB.open(path) as db:
            ids = db.feature_ids()
        extra["risk_head.json"] = RiskHead({fid: 1.0 + 0.1 * n for n, fid in enumerate(ids)}, -2.0,
                                           meta={"fitted_on": "test"}).to_json().encode()
    if extra:
        add_files(path, extra)
    return path, saes
