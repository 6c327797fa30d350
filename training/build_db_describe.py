"""The stages of `safesail build-db` that describe each kept feature, and the backends they use.

In build order: ``explain`` (:func:`explain_features`: an explanation per feature from the offline explainer or
an OpenAI-compatible LLM), ``simulate`` (:func:`simulate_features`: token- and segment-level CorrScore),
``spscore`` (:func:`spscore_features`: the superposition score) and ``map`` (:func:`map_features`: 2-D map of
the explanation embeddings). Each appends its results to a :class:`~safesail_training.build_db_resume.JsonlLog`
with a digest of its inputs, so a rerun redoes only what failed or what older records made. The backends are
chosen from the config (``make_explainer``, ``make_simulator``, ``make_spscorer``), with one sentence embedder
shared by the offline backends and the map (:func:`shared_embedder`). :mod:`safesail_training.build_db` calls
these after the selection stages (:mod:`safesail_training.build_db_select`); the results go into the database
(:mod:`safesail_training.build_db_write`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import JsonlLog, StageClock, digest, fresh, rounded, strip_input_key, write_json

FINAL_STATUSES = {"ok", "skipped", "unparseable"}
"""Statuses of an explanation or SpScore that a rerun keeps (others, such as ``failed``, are asked again)."""
SIMULATION_FINAL_STATUSES = {"ok", "constant", "skipped", "unparseable"}
"""Statuses of a simulation score that a rerun keeps."""

_EMBEDDER: Any = None


def shared_embedder() -> Any:
    """The sentence embedder of this process (made on first use; the offline backends and the map share it)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        from safesail_training.embedder import SentenceEmbedder

        _EMBEDDER = SentenceEmbedder()
    return _EMBEDDER


def make_explainer(cfg: BuildDBConfig, llm: Any) -> Any:
    """The explainer named by ``cfg.explainer``."""
    from safesail_training.explain import OfflineExplainer, OpenAIExplainer

    if cfg.explainer == "openai":
        return OpenAIExplainer(llm_client(llm))
    return OfflineExplainer()


def make_simulator(cfg: BuildDBConfig, llm: Any, tokenizer: Any) -> Any:
    """The simulator named by ``cfg.simulator`` (the embedding one counts tokens with ``tokenizer``)."""
    from safesail_training.simulate_embedding import EmbeddingSimulator
    from safesail_training.simulate_llm import LLMSimulator

    if cfg.simulator == "openai":
        return LLMSimulator(llm_client(llm))
    return EmbeddingSimulator(shared_embedder(), lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))


def make_spscorer(cfg: BuildDBConfig, llm: Any) -> Any:
    """The superposition scorer named by ``cfg.spscorer``."""
    from safesail_training.spscore import LLMSpScorer, OfflineSpScorer

    if cfg.spscorer == "openai":
        return LLMSpScorer(llm_client(llm))
    return OfflineSpScorer(shared_embedder())


def llm_client(llm: Any) -> Any:
    """``llm`` when given, else an LLM client configured from the environment."""
    if llm is not None:
        return llm
    from safesail_guard.llm_client import LLMClient
    from safesail_guard.llm_config import LLMClientConfig

    return LLMClient(LLMClientConfig())


def explain_features(cfg: BuildDBConfig, feats: list[Any], llm: Any, work: Path, clock: StageClock,
                     progress: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Stage ``explain`` (``explanations.jsonl``). Returns the explainer's name, the explanation per feature id
    and, per feature id, a digest of the explanation and the records it was made from (the input key of the
    later stages)."""
    from safesail_neuron_db.records import Explanation, to_dict

    t0 = time.perf_counter()
    explainer = make_explainer(cfg, llm)
    exp_log = JsonlLog(work / "explanations.jsonl", ("feature_id",))
    # every stored result carries a digest of its inputs, so results made from older records are redone
    rkey = {f.feature_id: digest(to_dict(f)) for f in feats}
    todo = [f for f in feats if not fresh(exp_log.rows.get((f.feature_id,)), rkey[f.feature_id] + explainer.name, FINAL_STATUSES)]
    if todo:
        explainer.explain_many(todo, progress=progress, on_result=lambda e: exp_log.append({**to_dict(e), "input_key": rkey[e.feature_id] + explainer.name}))
        clock.computed_now("explain", time.perf_counter() - t0)
    explanations = {k[0]: Explanation(**strip_input_key(r)) for k, r in exp_log.rows.items() if k[0] in rkey}
    ekey = {fid: digest([rkey[fid], e.status, e.text]) for fid, e in explanations.items()}
    return explainer.name, explanations, ekey


def simulate_features(cfg: BuildDBConfig, feats: list[Any], explanations: dict[str, Any], ekey: dict[str, str],
                      llm: Any, tokenizer: Any, work: Path, clock: StageClock,
                      progress: bool) -> tuple[str, list[Any]]:
    """Stage ``simulate`` (``simulations.jsonl``): token- then segment-level scores of every explained feature.
    Returns the simulator's name and its scores (rounded for storage)."""
    from safesail_neuron_db.records import SimulationScore, to_dict
    from safesail_training.simulate import simulate_many

    t0 = time.perf_counter()
    simulator = make_simulator(cfg, llm, tokenizer)
    sim_log = JsonlLog(work / "simulations.jsonl", ("feature_id", "method", "simulator"))
    simulated = False
    for method in ("token", "segment"):
        items = [
            (f, explanations[f.feature_id])
            for f in feats
            if f.feature_id in explanations and not fresh(sim_log.rows.get((f.feature_id, method, simulator.name)), ekey[f.feature_id], SIMULATION_FINAL_STATUSES)
        ]
        if items:
            simulate_many(simulator, items, methods=(method,), n_segments=cfg.n_segments, progress=progress, on_result=lambda s: sim_log.append({**to_dict(s), "input_key": ekey[s.feature_id]}))
            simulated = True
    if simulated:
        clock.computed_now("simulate", time.perf_counter() - t0)
    sims = [SimulationScore(**rounded(strip_input_key(r))) for r in sim_log.rows.values() if r["simulator"] == simulator.name and r["feature_id"] in ekey]
    return simulator.name, sims


def spscore_features(cfg: BuildDBConfig, feats: list[Any], explanations: dict[str, Any], ekey: dict[str, str],
                     llm: Any, work: Path, clock: StageClock, progress: bool) -> tuple[str, dict[str, Any]]:
    """Stage ``spscore`` (``spscores.jsonl``). Returns the scorer's name and the score per feature id."""
    from safesail_neuron_db.records import SuperpositionScore, to_dict
    from safesail_training.spscore import score_many

    t0 = time.perf_counter()
    scorer = make_spscorer(cfg, llm)
    sp_log = JsonlLog(work / "spscores.jsonl", ("feature_id", "method"))
    sp_name = scorer.name if hasattr(scorer, "name") else getattr(scorer, "method", "")
    items = [(f, explanations[f.feature_id]) for f in feats if f.feature_id in explanations and not fresh(sp_log.rows.get((f.feature_id, sp_name)), ekey[f.feature_id], FINAL_STATUSES)]
    if items:
        score_many(scorer, items, progress=progress, on_result=lambda s: sp_log.append({**to_dict(s), "input_key": ekey[s.feature_id]}))
        clock.computed_now("spscore", time.perf_counter() - t0)
    sps = {r["feature_id"]: SuperpositionScore(**rounded(strip_input_key(r))) for r in sp_log.rows.values() if r["method"] == sp_name and r["feature_id"] in ekey}
    return sp_name, sps


def map_text(feat: Any, expl: Any) -> str:
    """What the map embeds: the explanation when there is one, else the concept tags and top tokens."""
    if expl is not None and expl.status == "ok" and expl.text:
        return expl.text
    tags = ", ".join(f"{c.level0} {c.level1}".replace("_", " ") for c in feat.concepts)
    return tags or feat.feature_id


def map_features(cfg: BuildDBConfig, feats: list[Any], explanations: dict[str, Any], work: Path,
                 clock: StageClock) -> tuple[dict[str, tuple[float, float]], str]:
    """Stage ``map`` (``map.json``): 2-D coordinates of every feature's :func:`map_text` embedding. Returns the
    coordinates per feature id and the projection method used."""
    import torch

    t0 = time.perf_counter()
    map_path = work / "map.json"
    map_texts = [map_text(f, explanations.get(f.feature_id)) for f in feats]
    map_key = digest(["fresh-cache-rounded-1e-4", cfg.map_method, cfg.seed, map_texts])
    coords: dict[str, tuple[float, float]] = {}
    map_method = "none"
    cached_map = json.loads(map_path.read_text()) if map_path.is_file() else {}
    if cached_map.get("key") == map_key:
        coords, map_method = {k: tuple(v) for k, v in cached_map["coords"].items()}, cached_map["method"]
    else:
        from safesail_training.feature_map import project_2d

        # a fresh cache and rounded vectors: embeddings must not depend on what was embedded before (batch
        # composition moves them by ~1e-7), or UMAP's neighbour graph - and the map - differs between runs
        embedder = shared_embedder()
        if hasattr(embedder, "clear_cache"):
            embedder.clear_cache()
        emb = torch.round(torch.as_tensor(embedder.embed(map_texts)) * 1e4) / 1e4
        res = project_2d(emb, method=cfg.map_method, seed=cfg.seed)
        coords = {f.feature_id: (round(float(x), 5), round(float(y), 5)) for f, (x, y) in zip(feats, res.coords.tolist(), strict=True)}
        map_method = res.method
        write_json(map_path, {"key": map_key, "method": map_method, "coords": coords})
        clock.computed_now("map", time.perf_counter() - t0)
    return coords, map_method
