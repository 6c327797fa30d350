"""Synthetic neuron databases for tests (reusable by other test packages).

`make_inputs` builds every record a `DatabaseWriter` takes, deterministically from a seed; `write_db` writes
them; `make_db(tmp_path)` does both. The content is varied on purpose: failed and missing explanations,
non-ok scores, a second simulator, missing SpScores and map positions, multi-domain features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safesail_neuron_db import DatabaseWriter
from safesail_neuron_db.records import (
    ActivationExample,
    ConceptHit,
    Explanation,
    FeatureRecords,
    SimulationScore,
    SuperpositionScore,
    feature_id,
    quantize,
)

FINGERPRINT = "f" * 8 + "0123456789abcdef" * 3 + "e" * 8
MODEL = {"name": "tiny-test-model", "source": "directory", "fingerprint": FINGERPRINT, "path": "/abs/ignored"}
SIMULATOR = "embedding:all-MiniLM-L6-v2"
LLM_SIMULATOR = "openai:gpt-test"

# (level0, level1, explanation text) - distinct words per topic so search tests can target them
TOPICS = [
    ("sexual", "adult_websites", "Links to adult websites and explicit sexual content"),
    ("violence", "weapons", "Instructions for building weapons and explosives"),
    ("self_harm", "suicide", "Mentions of suicide and self-harm methods"),
    ("hate", "slurs", "Hateful slurs against ethnic groups"),
    ("fraud", "phishing", "Phishing emails asking for bank passwords"),
    ("drugs", "synthesis", "Synthesis of illegal drugs such as methamphetamine"),
]
WORDS = [" the", " adult", " site", " gun", " bank", " pass", "word", " hate", " drug", ".", "\n", " é"]


@dataclass
class FeatureInput:
    """The arguments of one `DatabaseWriter.add_feature` call."""

    rec: FeatureRecords
    explanation: Explanation | None
    scores: list[SimulationScore]
    sp: SuperpositionScore | None
    map_xy: tuple[float, float] | None
    threshold: float


@dataclass
class DBInputs:
    """Everything a `DatabaseWriter` is given for one database."""

    model: dict[str, str]
    site: str
    sae_configs: dict[int, dict[str, Any]]
    build: dict[str, Any]
    seed: int
    map_method: str
    encoders: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    features: list[FeatureInput] = field(default_factory=list)

    def by_id(self) -> dict[str, FeatureInput]:
        return {f.rec.feature_id: f for f in self.features}


def _example(gen: torch.Generator, kind: str, peak: float, feature_max: float, n_tokens: int = 6) -> ActivationExample:
    idx = torch.randint(len(WORDS), (n_tokens,), generator=gen).tolist()
    tokens = [WORDS[i] for i in idx]
    if kind == "quiet":
        acts = [0.0] * n_tokens
    else:
        raw = torch.rand(n_tokens, generator=gen).tolist()
        acts = [round(peak * r, 4) if r > 0.4 else 0.0 for r in raw]
        acts[n_tokens // 2] = round(peak, 4)
    max_act = max(acts)
    levels = quantize(acts, feature_max)
    return ActivationExample(tokens, acts, levels, max_act, kind, max(levels), source=f"synthetic/{kind}")


def _feature(i: int, layer: int, latent: int, gen: torch.Generator) -> FeatureInput:
    fid = feature_id(layer, latent)
    l0, l1, text = TOPICS[i % len(TOPICS)]
    concepts = [ConceptHit(l0, l1, round(0.95 - 0.01 * i, 4), round(0.6 + 0.01 * i, 4), 20 + i, 18, 2)]
    if i % 3 == 2:  # a second, weaker domain
        m0, m1, _ = TOPICS[(i + 1) % len(TOPICS)]
        concepts.append(ConceptHit(m0, m1, 0.5, 0.4, 10, 6, 3))
    max_act = round(2.0 + 0.25 * i, 4)
    examples = [_example(gen, "top", max_act, max_act), _example(gen, "top", max_act * 0.8, max_act),
                _example(gen, "level", max_act * 0.3, max_act), _example(gen, "quiet", 0.0, max_act)]
    rec = FeatureRecords(fid, layer, latent, concepts, max_act, round(0.001 * (i + 1), 6), examples)
    if i % 7 == 5:
        explanation: Explanation | None = Explanation(fid, None, "failed", "openai:gpt-test", "timeout after 3 tries", 120, 0)
    elif i % 7 == 6:
        explanation = None
    else:
        explanation = Explanation(fid, text, "ok", "offline", "", 300 + i, 12 + i)
    scores = [
        SimulationScore(fid, "token", SIMULATOR, None if i % 5 == 4 else round(0.3 + 0.05 * i, 4),
                        "constant" if i % 5 == 4 else "ok", 4, 24, 0, 0, "all-zero simulation" if i % 5 == 4 else ""),
        SimulationScore(fid, "segment", SIMULATOR, round(0.2 + 0.04 * i, 4), "ok", 4, 8, 0, 0, ""),
    ]
    if i % 4 == 0:
        scores.append(SimulationScore(fid, "token", LLM_SIMULATOR, round(0.7 - 0.01 * i, 4), "ok", 4, 24, 900, 80, ""))
    sp = None if i % 6 == 3 else SuperpositionScore(fid, float(i % 10) + 0.5, "ok", "offline-proxy:entropy", "", 0, 0)
    map_xy = None if i % 8 == 7 else (float(i), -0.5 * i)
    return FeatureInput(rec, explanation, scores, sp, map_xy, round(0.1 + 0.01 * i, 4))


def make_inputs(n_layers: int = 2, n_features: int = 12, d_in: int = 16, *, seed: int = 0,
                fingerprint: str = FINGERPRINT) -> DBInputs:
    """Records for ``n_features`` features spread round-robin over ``n_layers`` layers (3, 7, 11, ...)."""
    gen = torch.Generator().manual_seed(seed)
    layers = [3 + 4 * j for j in range(n_layers)]
    inputs = DBInputs(model={**MODEL, "fingerprint": fingerprint}, site="mlp_out",
                      sae_configs={ly: {"d_in": d_in, "n_latents": 10 * d_in, "k": 32, "hook": f"layers.{ly}.mlp_out"}
                                   for ly in layers},
                      build={"explainer": "offline", "simulator": SIMULATOR, "n_examples": 4}, seed=seed,
                      map_method="umap-test")
    per_layer: dict[int, list[FeatureInput]] = {ly: [] for ly in layers}
    for i in range(n_features):
        layer = layers[i % n_layers]
        f = _feature(i, layer, 5 + 37 * i, gen)
        inputs.features.append(f)
        per_layer[layer].append(f)
    for layer, feats in per_layer.items():
        if not feats:
            continue
        n = len(feats)
        inputs.encoders[layer] = {
            "latents": torch.tensor([f.rec.latent for f in feats], dtype=torch.int64),
            "W_enc": torch.randn(n, d_in, generator=gen),
            "b_enc": torch.randn(n, generator=gen),
            "threshold": torch.tensor([f.threshold for f in feats], dtype=torch.float32),
            "W_dec": torch.randn(n, d_in, generator=gen),
            "b_dec": torch.randn(d_in, generator=gen),
        }
    return inputs


def writer_for(directory: Path, inputs: DBInputs) -> DatabaseWriter:
    """A writer with every encoder and feature of ``inputs`` added (not finished)."""
    w = DatabaseWriter(directory, model=inputs.model, site=inputs.site, sae_configs=inputs.sae_configs,
                       build=inputs.build, seed=inputs.seed, map_method=inputs.map_method)
    for layer, enc in inputs.encoders.items():
        w.add_encoder(layer, **enc)
    for f in inputs.features:
        w.add_feature(f.rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=f.map_xy,
                      threshold=f.threshold)
    return w


def write_db(directory: Path, inputs: DBInputs) -> Path:
    """Write ``inputs`` as a database at ``directory``."""
    return writer_for(directory, inputs).finish()


def make_db(tmp_path: Path, n_layers: int = 2, n_features: int = 12, d_in: int = 16, *, name: str = "db",
            seed: int = 0, fingerprint: str = FINGERPRINT) -> Path:
    """Build a synthetic database at ``tmp_path / name`` and return its path."""
    return write_db(tmp_path / name, make_inputs(n_layers, n_features, d_in, seed=seed, fingerprint=fingerprint))
