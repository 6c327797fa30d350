"""`safesail build-db`: trained SAEs -> an explained, scored neuron database of safety features.

Stages (each writes under ``<work_dir>/db/`` and is skipped or resumed on a rerun):

    saes         a TopK SAE per hook point (trained by `build_sae.run_build` when missing)
    pairs        per point, max activation of every latent on each concept / de-concept query
    filter       precision/recall filter per level-1 concept (paper eq. 6)   -> filter.json
    records      explanation-set activations -> examples per feature, thresholds -> records.jsonl, thresholds.pt
    explain      explanations (offline or an OpenAI-compatible LLM)          -> explanations.jsonl (append)
    simulate     token- and segment-level CorrScore                          -> simulations.jsonl (append)
    spscore      superposition score (LLM or offline proxy)                  -> spscores.jsonl (append)
    map          2-D map of explanation embeddings                           -> map.json
    style        the selected features on the style probe set (evaluation only) -> style_check.json
    write        the database directory (manifest.json, features.sqlite, encoders.safetensors)

Append-only JSONL files are keyed by feature (and method); a rerun skips keys that finished with a final
status and retries ones that failed, so nothing is duplicated or lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safesail_guard.hooks import HookPoint

Log = Callable[[str], None]
DEFAULT_POINTS = ["layers.6.mlp_out", "layers.14.mlp_out", "layers.24.mlp_out"]


class BuildDBConfig(BaseModel):
    """Settings of `safesail build-db`; the defaults build the shipped database for the embedded model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="embedded", description="Model spec: 'embedded', a HF directory, a .gguf file or a cached HF id.")
    work_dir: Path = Field(default=Path("runs/smollm2-135m-instruct"), description="Build directory shared with build-sae (not committed).")
    out: Path | None = Field(default=None, description="Database directory to write (default: <work_dir>/neuron_db).")
    points: list[str] = Field(default=DEFAULT_POINTS, description="Hook points (one site, several layers).")
    k: int = Field(default=128, ge=1, description="TopK of the SAEs to use (chosen by build-sae's selection).")
    train_tokens: int = Field(default=1_000_000, gt=0, description="Activations to harvest when an SAE has to be trained.")
    expansion: int = Field(default=10, ge=1)
    min_precision: float = Field(default=0.75, gt=0, le=1)
    min_recall: float = Field(default=0.2, gt=0, le=1, description="Lowest recall bar; raised per layer when target_fdr is set.")
    target_fdr: float | None = Field(default=0.1, gt=0, lt=1, description="Raise the recall bar until the side-swap null predicts at most this false-discovery rate (None: the fixed paper bars).")
    max_features_per_layer: int = Field(default=400, ge=1, description="Cap per layer (best precision x recall first) to keep the database small.")
    explain_tokens: int = Field(default=150_000, ge=1000, description="Token budget of the explanation set.")
    risky_share: float = Field(default=0.3, ge=0, le=1, description="Share of the explanation set drawn from safety-rich text.")
    scoring_features: int = Field(default=0, ge=0, le=1000, description="Also keep up to this many latents (over all layers) that a sparse non-negative head fitted on the pairs over the *whole* dictionary weights most, as scoring features without a concept (0 = off).")
    min_top_risky: float = Field(default=0.5, ge=0, le=1, description="Keep a feature only if at least this share of its top-activating explanation windows come from safety-rich text (0 turns the check off).")
    explainer: Literal["offline", "openai"] = "offline"
    simulator: Literal["embedding", "openai"] = "embedding"
    spscorer: Literal["offline", "openai"] = "offline"
    n_segments: int = Field(default=8, ge=1)
    sim_examples: int = Field(default=6, ge=2)
    map_method: Literal["auto", "umap", "pca"] = "auto"
    seed: int = 0
    pairs: list[Path] = Field(default_factory=list, description="Concept-pair JSONL files (default: the built-in pairs).")

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[str]) -> list[str]:
        parsed = [HookPoint.parse(p) for p in v]
        if not parsed:
            raise ValueError("points must name at least one hook point, e.g. layers.14.mlp_out")
        if len({p.site for p in parsed}) != 1:
            raise ValueError(f"one database holds one hook site; got {sorted({p.site for p in parsed})}")
        if len({p.layer for p in parsed}) != len(parsed):
            raise ValueError("points repeat a layer")
        return [p.name for p in sorted(parsed, key=lambda p: p.layer)]

    @property
    def db_dir(self) -> Path:
        return self.out if self.out is not None else self.work_dir / "neuron_db"


# -- small file helpers ---------------------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    from safesail_guard.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


class JsonlLog:
    """Append-only JSONL keyed by a tuple of fields; the last line per key wins; torn tail lines are ignored."""

    def __init__(self, path: Path, key_fields: tuple[str, ...]) -> None:
        self.path = path
        self.key_fields = key_fields
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if path.is_file():
            with path.open("rb") as fh:
                data = fh.read()
            good_end = 0
            for line in data.split(b"\n"):
                if not line.strip():
                    good_end += len(line) + 1
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn final line from an interrupted run
                self.rows[self.key(row)] = row
                good_end += len(line) + 1
            if good_end < len(data):
                with path.open("r+b") as fh:
                    fh.truncate(min(good_end, len(data)))

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[f] for f in self.key_fields)

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[self.key(row)] = row


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- stages ---------------------------------------------------------------------------------------------------


def _ensure_saes(cfg: BuildDBConfig, log: Log, progress: bool) -> dict[str, Path]:
    from safesail_training.build_sae import BuildSAEConfig, run_build

    dirs = {p: cfg.work_dir / "saes" / p / f"k{cfg.k}" for p in cfg.points}
    missing = [p for p, d in dirs.items() if not (d / "sae.safetensors").is_file()]
    if missing:
        log(f"training SAEs (k={cfg.k}) at {', '.join(missing)}")
        run_build(
            BuildSAEConfig(model=cfg.model, out_dir=cfg.work_dir, points=missing, ks=[cfg.k], train_tokens=cfg.train_tokens, expansion=cfg.expansion, seed=cfg.seed, pairs=list(cfg.pairs)),
            log=log,
            progress=progress,
            measure=False,  # FVU/dNTP/selection are build-sae's report; the pairs are measured below in one pass
        )
    return dirs


def _corpus(cfg: BuildDBConfig) -> tuple[list[Any], int]:
    """The SAE build's corpus records in their build order, and how many of them it held out for evaluation."""
    from safesail_training.build_sae import BuildSAEConfig, _records

    bcfg = BuildSAEConfig(model=cfg.model, out_dir=cfg.work_dir, seed=cfg.seed)
    return _records(bcfg), bcfg.eval_records


def explanation_pool(cfg: BuildDBConfig, tokenizer: Any, corpus: tuple[list[Any], int] | None = None) -> list[Any]:
    """Explanation texts kept apart from SAE training: the build's held-out records plus the corpus records
    after the last one any point's training harvest consumed, mixed to `risky_share` safety-rich text."""
    import random

    records, n_eval = corpus or _corpus(cfg)
    eval_recs, train_recs = records[:n_eval], records[n_eval:]
    cursor = -1
    for p in cfg.points:
        index = cfg.work_dir / "acts" / "train" / p / "index.json"
        if index.is_file():
            shards = json.loads(index.read_text()).get("shards", [])
            if shards:
                cursor = max(cursor, int(shards[-1].get("cursor", -1)))
    pool = list(eval_recs) + list(train_recs[cursor + 1 :])
    rng = random.Random(cfg.seed)
    rng.shuffle(pool)
    risky = [r for r in pool if getattr(r, "kind", "") == "risky"]
    other = [r for r in pool if getattr(r, "kind", "") != "risky"]

    def ntok(r: Any) -> int:
        return len(tokenizer(r.text, add_special_tokens=False)["input_ids"])

    chosen: list[Any] = []
    budget_risky = int(cfg.explain_tokens * cfg.risky_share)
    used = 0
    for r in risky:
        if used >= budget_risky:
            break
        chosen.append(r)
        used += ntok(r)
    for r in other:
        if used >= cfg.explain_tokens:
            break
        chosen.append(r)
        used += min(ntok(r), 256)
    if not chosen:
        raise ValueError(
            "the explanation set is empty: every corpus record was used for SAE training; "
            "lower --tokens of build-sae or add corpus text"
        )
    rng.shuffle(chosen)
    return chosen


def run_build_db(cfg: BuildDBConfig, *, log: Log = print, progress: bool = True, llm: Any = None) -> dict[str, Any]:
    """Run or resume every stage; returns a summary dict (also written to ``<work_dir>/db/summary.json``)."""
    import torch

    from safesail_guard.models import load_model
    from safesail_guard.sae import TopKSAE
    from safesail_training.act_records import RecordsConfig, collect_acts, feature_records, fit_thresholds
    from safesail_training.corpus.pairs import load_pairs
    from safesail_training.db_filter import FilterConfig, calibrate_recall, filter_features
    from safesail_training.db_types import ConceptHit, Explanation, SimulationScore, SuperpositionScore, to_dict
    from safesail_training.model_metrics import query_sites_acts
    from safesail_training.select import feature_max

    work = cfg.work_dir / "db"
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    computed_path = work / "stage_times.json"
    computed: dict[str, float] = json.loads(computed_path.read_text()) if computed_path.is_file() else {}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)

    def computed_now(name: str, seconds: float) -> None:
        """Remember how long a stage took when it really ran (a cached rerun does not overwrite it)."""
        computed[name] = round(seconds, 1)
        _write_json(computed_path, computed)

    t0 = time.perf_counter()
    sae_dirs = _ensure_saes(cfg, log, progress)
    stage("saes", t0)
    t0 = time.perf_counter()
    loaded = load_model(cfg.model)
    stage("load_model", t0)
    saes = {p: TopKSAE.load(d, expected_d_in=loaded.d_model) for p, d in sae_dirs.items()}
    for p, sae in saes.items():
        sae.eval()
        for param in sae.parameters():
            param.requires_grad_(False)
    layers = {p: HookPoint.parse(p).layer for p in cfg.points}
    corpus_cache: list[tuple[list[Any], int]] = []

    def corpus() -> tuple[list[Any], int]:
        """The corpus, read at most once per build (only the stages that need it ask)."""
        if not corpus_cache:
            corpus_cache.append(_corpus(cfg))
        return corpus_cache[0]

    site = HookPoint.parse(cfg.points[0]).site

    # -- pairs + filter
    pairs = load_pairs(list(cfg.pairs) or None)
    concepts = [(p.level0, p.level1) for p in pairs]
    pairs_key = _digest([(p.id, p.concept, p.deconcept, p.level0, p.level1) for p in pairs])
    t0 = time.perf_counter()
    pair_max: dict[str, dict[str, torch.Tensor]] = {}
    sae_sha = {p: json.loads((sae_dirs[p] / "cfg.json").read_text()).get("sha256", "") for p in cfg.points}
    for p in cfg.points:
        cache = work / "pairs" / f"{p}.pt"
        if cache.is_file():
            blob = torch.load(cache)
            if blob.get("pairs_key") == pairs_key and blob.get("sae_sha") == sae_sha[p]:
                pair_max[p] = blob
    todo_points = [p for p in cfg.points if p not in pair_max]
    if todo_points:
        log(f"activations on {len(pairs)} concept pairs at {', '.join(todo_points)}")
        blobs: dict[str, dict[str, Any]] = {p: {"pairs_key": pairs_key, "sae_sha": sae_sha[p]} for p in todo_points}
        for side in ("concept", "deconcept"):
            acts = query_sites_acts(loaded, todo_points, [getattr(x, side) for x in pairs], progress=progress, desc=f"pairs ({side})")
            for p in todo_points:
                blobs[p][side] = feature_max(saes[p], acts[p], saes[p].n_latents)
        for p in todo_points:
            cache = work / "pairs" / f"{p}.pt"
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save(blobs[p], tmp)
            os.replace(tmp, cache)
            pair_max[p] = blobs[p]
        computed_now("pairs", time.perf_counter() - t0)
    stage("pairs", t0)

    base = FilterConfig(min_precision=cfg.min_precision, min_recall=cfg.min_recall)
    selected: dict[str, dict[int, list[ConceptHit]]] = {}
    filter_stats: dict[str, Any] = {}
    for p in cfg.points:
        fcfg, calibration = base, None
        if cfg.target_fdr is not None:
            cal = calibrate_recall(pair_max[p]["concept"], pair_max[p]["deconcept"], concepts, base, target_fdr=cfg.target_fdr, seed=cfg.seed)
            fcfg, calibration = cal.config, {"estimated_fdr": round(cal.estimated_fdr, 3), "sweep": cal.sweep}
            log(f"[{p}] recall bar {fcfg.min_recall} (estimated false discoveries {cal.estimated_fdr:.0%}; at 0.2 it would be {cal.sweep[0]['fdr']:.0%})")
        hits = filter_features(pair_max[p]["concept"], pair_max[p]["deconcept"], concepts, fcfg)
        passed = len(hits)
        if len(hits) > cfg.max_features_per_layer:
            ranked = sorted(hits, key=lambda j: (-max(h.precision * h.recall for h in hits[j]), j))
            hits = {j: hits[j] for j in sorted(ranked[: cfg.max_features_per_layer])}
        selected[p] = hits
        filter_stats[p] = {"passed": passed, "kept": len(hits), "min_precision": fcfg.min_precision, "min_recall": fcfg.min_recall, "calibration": calibration}
        log(f"[{p}] filter: {passed} features pass precision>={fcfg.min_precision}, recall>={fcfg.min_recall}; keeping {len(hits)}")
    scoring_stats: dict[str, int] = {}
    if cfg.scoring_features:
        from safesail_training.risk_head import pick_scoring_latents

        picked = pick_scoring_latents({p: pair_max[p] for p in cfg.points}, cfg.scoring_features,
                                      {p: set(selected[p]) for p in cfg.points}, seed=cfg.seed)
        for p, lats in picked.items():
            for j in lats:
                selected[p].setdefault(j, [])
        scoring_stats = {p: len(v) for p, v in picked.items()}
        log(f"scoring features from the whole dictionary: {', '.join(f'{p} {len(v)}' for p, v in picked.items())}")
    _write_json(work / "filter.json", {p: {str(j): [to_dict(h) for h in hs] for j, hs in sel.items()} for p, sel in selected.items()})

    # -- explanation set: records + thresholds
    rcfg = RecordsConfig()
    sel_key = _digest({p: sorted(s) for p, s in selected.items()})
    records_path = work / "records.jsonl"
    thr_path = work / "thresholds.pt"
    records_meta = work / "records.meta.json"
    want_meta = {"selection": sel_key, "explain_tokens": cfg.explain_tokens, "risky_share": cfg.risky_share, "seed": cfg.seed, "records": str(rcfg)}
    t0 = time.perf_counter()
    if not (records_meta.is_file() and json.loads(records_meta.read_text()) == want_meta and records_path.is_file() and thr_path.is_file()):
        pool = explanation_pool(cfg, loaded.tokenizer, corpus())
        log(f"explanation set: {len(pool)} texts ({sum(1 for r in pool if getattr(r, 'kind', '') == 'risky')} safety-rich)")
        latents = {p: torch.tensor(sorted(selected[p]), dtype=torch.long) for p in cfg.points}
        ex = collect_acts(loaded, saes, latents, pool, rcfg, progress=progress)
        thresholds: dict[str, Any] = {}
        tmp = records_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for p in cfg.points:
                fit = fit_thresholds(ex.pre[p], ex.acts[p])
                thresholds[p] = {"latents": latents[p], "threshold": fit.threshold, "precision": fit.precision, "recall": fit.recall, "n_fired": fit.n_fired}
                for rec in feature_records(ex, p, layers[p], selected[p], rcfg, seed=cfg.seed):
                    fh.write(json.dumps(to_dict(rec), ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, records_path)
        torch.save({**thresholds, "n_tokens": ex.n_tokens, "n_texts": len(pool)}, thr_path)
        _write_json(records_meta, want_meta)
        del ex
        computed_now("records", time.perf_counter() - t0)
    stage("records", t0)
    feats = _load_records(records_path)
    thr_blob = torch.load(thr_path)
    log(f"activation records: {len(feats)} features over {thr_blob['n_tokens']:,} explanation tokens")
    specificity: dict[str, Any] = {"min_top_risky": cfg.min_top_risky}
    if cfg.min_top_risky > 0:
        kinds = _source_kinds(corpus()[0])
        before = len(feats)
        shares = {f.feature_id: top_risky_share(f, kinds) for f in feats}
        feats = [f for f in feats if shares[f.feature_id] >= cfg.min_top_risky]
        specificity.update({"before": before, "kept": len(feats), "per_layer": {p: sum(1 for f in feats if f.layer == layers[p]) for p in cfg.points}})
        log(f"specificity: {len(feats)} of {before} features have >= {cfg.min_top_risky:.0%} of their top windows in safety-rich text")
        if not feats:
            raise ValueError("no feature passed the specificity check; lower --min-top-risky or add safety-rich explanation text")
    final_ids = {(f.layer, f.latent) for f in feats}
    final_sel = {p: {lat: hits for lat, hits in selected[p].items() if (layers[p], lat) in final_ids} for p in cfg.points}
    languages = language_coverage(pairs, pair_max, final_sel)

    # -- explain
    t0 = time.perf_counter()
    explainer = _make_explainer(cfg, llm)
    exp_log = JsonlLog(work / "explanations.jsonl", ("feature_id",))
    # every stored result carries a digest of its inputs, so results made from older records are redone
    rkey = {f.feature_id: _digest(to_dict(f)) for f in feats}
    final = {"ok", "skipped", "unparseable"}

    def fresh(row: dict[str, Any] | None, key: str, statuses: set[str]) -> bool:
        return row is not None and row.get("status") in statuses and row.get("input_key") == key

    todo = [f for f in feats if not fresh(exp_log.rows.get((f.feature_id,)), rkey[f.feature_id] + explainer.name, final)]
    if todo:
        explainer.explain_many(todo, progress=progress, on_result=lambda e: exp_log.append({**to_dict(e), "input_key": rkey[e.feature_id] + explainer.name}))
        computed_now("explain", time.perf_counter() - t0)
    explanations = {k[0]: Explanation(**_strip(r)) for k, r in exp_log.rows.items() if k[0] in rkey}
    ekey = {fid: _digest([rkey[fid], e.status, e.text]) for fid, e in explanations.items()}
    stage("explain", t0)

    # -- simulate
    t0 = time.perf_counter()
    from safesail_training.simulate import simulate_many

    simulator = _make_simulator(cfg, llm, loaded.tokenizer)
    sim_log = JsonlLog(work / "simulations.jsonl", ("feature_id", "method", "simulator"))
    sim_final = {"ok", "constant", "skipped", "unparseable"}
    simulated = False
    for method in ("token", "segment"):
        items = [
            (f, explanations[f.feature_id])
            for f in feats
            if f.feature_id in explanations and not fresh(sim_log.rows.get((f.feature_id, method, simulator.name)), ekey[f.feature_id], sim_final)
        ]
        if items:
            simulate_many(simulator, items, methods=(method,), n_segments=cfg.n_segments, progress=progress, on_result=lambda s: sim_log.append({**to_dict(s), "input_key": ekey[s.feature_id]}))
            simulated = True
    if simulated:
        computed_now("simulate", time.perf_counter() - t0)
    sims = [SimulationScore(**_rounded(_strip(r))) for r in sim_log.rows.values() if r["simulator"] == simulator.name and r["feature_id"] in ekey]
    stage("simulate", t0)

    # -- superposition score
    t0 = time.perf_counter()
    from safesail_training.spscore import score_many

    scorer = _make_spscorer(cfg, llm)
    sp_log = JsonlLog(work / "spscores.jsonl", ("feature_id", "method"))
    sp_name = scorer.name if hasattr(scorer, "name") else getattr(scorer, "method", "")
    items = [(f, explanations[f.feature_id]) for f in feats if f.feature_id in explanations and not fresh(sp_log.rows.get((f.feature_id, sp_name)), ekey[f.feature_id], final)]
    if items:
        score_many(scorer, items, progress=progress, on_result=lambda s: sp_log.append({**to_dict(s), "input_key": ekey[s.feature_id]}))
        computed_now("spscore", time.perf_counter() - t0)
    sps = {r["feature_id"]: SuperpositionScore(**_rounded(_strip(r))) for r in sp_log.rows.values() if r["method"] == sp_name and r["feature_id"] in ekey}
    stage("spscore", t0)

    # -- map
    t0 = time.perf_counter()
    map_path = work / "map.json"
    map_texts = [_map_text(f, explanations.get(f.feature_id)) for f in feats]
    map_key = _digest(["fresh-cache-rounded-1e-4", cfg.map_method, cfg.seed, map_texts])
    coords: dict[str, tuple[float, float]] = {}
    map_method = "none"
    cached_map = json.loads(map_path.read_text()) if map_path.is_file() else {}
    if cached_map.get("key") == map_key:
        coords, map_method = {k: tuple(v) for k, v in cached_map["coords"].items()}, cached_map["method"]
    else:
        from safesail_training.feature_map import project_2d

        # a fresh cache and rounded vectors: embeddings must not depend on what was embedded before (batch
        # composition moves them by ~1e-7), or UMAP's neighbour graph - and the map - differs between runs
        embedder = _embedder()
        if hasattr(embedder, "clear_cache"):
            embedder.clear_cache()
        emb = torch.round(torch.as_tensor(embedder.embed(map_texts)) * 1e4) / 1e4
        res = project_2d(emb, method=cfg.map_method, seed=cfg.seed)
        coords = {f.feature_id: (round(float(x), 5), round(float(y), 5)) for f, (x, y) in zip(feats, res.coords.tolist(), strict=True)}
        map_method = res.method
        _write_json(map_path, {"key": map_key, "method": map_method, "coords": coords})
        computed_now("map", time.perf_counter() - t0)
    stage("map", t0)

    # -- style generalisation check (evaluation only: never feeds back into selection)
    t0 = time.perf_counter()
    style, style_computed = _style_check(cfg, loaded, saes, final_sel, layers, work, log)
    if style_computed:
        computed_now("style", time.perf_counter() - t0)
    stage("style", t0)

    # -- write the database
    t0 = time.perf_counter()
    from safesail_neuron_db.writer import DatabaseWriter

    sae_cfgs = {layers[p]: {**json.loads((sae_dirs[p] / "cfg.json").read_text()), "point": p} for p in cfg.points}
    build_params = cfg.model_dump(mode="json", exclude={"work_dir", "out", "model"})
    build_params.update({
        "explainer": explainer.name,
        "simulator": simulator.name,
        "spscorer": sp_name,
        "explanation_tokens": int(thr_blob["n_tokens"]),
        "explanation_texts": int(thr_blob["n_texts"]),
        "filter": filter_stats,
        "scoring_features_picked": scoring_stats,
        "pairs": len(pairs),
    })
    writer = DatabaseWriter(cfg.db_dir, model=loaded.identity.to_dict() | {"path": None}, site=site, sae_configs=sae_cfgs, build=build_params, seed=cfg.seed, map_method=map_method)
    kept = {(f.layer, f.latent) for f in feats}
    for p in cfg.points:
        sae = saes[p]
        tb = thr_blob[p]
        rows = torch.tensor([i for i, lat_i in enumerate(tb["latents"].tolist()) if (layers[p], lat_i) in kept], dtype=torch.long)
        if rows.numel() == 0:
            log(f"[{p}] no feature left after the checks; the database has no encoder for layer {layers[p]}")
            continue
        lat = tb["latents"][rows]
        writer.add_encoder(
            layers[p],
            latents=lat,
            W_enc=sae.W_enc.detach()[lat].float(),
            b_enc=sae.b_enc.detach()[lat].float(),
            threshold=tb["threshold"][rows].float(),
            W_dec=sae.W_dec.detach()[lat].float(),
            b_dec=sae.b_dec.detach().float(),
        )
    sims_by: dict[str, list[SimulationScore]] = {}
    for s in sims:
        sims_by.setdefault(s.feature_id, []).append(s)
    thr_of = {(layers[p], int(l)): float(t) for p in cfg.points for l, t in zip(thr_blob[p]["latents"].tolist(), thr_blob[p]["threshold"].tolist(), strict=True)}
    for f in feats:
        writer.add_feature(
            f,
            explanation=explanations.get(f.feature_id),
            scores=sorted(sims_by.get(f.feature_id, []), key=lambda s: (s.method, s.simulator)),
            sp=sps.get(f.feature_id),
            map_xy=coords.get(f.feature_id),
            threshold=thr_of[(f.layer, f.latent)],
        )
    db_path = writer.finish()
    stage("write", t0)
    t0 = time.perf_counter()
    head_meta = add_guard_files(db_path, loaded, {layers[p]: saes[p] for p in cfg.points}, pairs, log=log,
                                progress=progress)
    stage("guard_files", t0)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    summary = {
        "db": str(db_path),
        "features": len(feats),
        "filter": filter_stats,
        "specificity": specificity,
        "threshold_agreement": {p: _agreement(thr_blob[p], {f.latent for f in feats if f.layer == layers[p]}) for p in cfg.points},
        "style_check": style,
        "languages": languages,
        "risk_head": head_meta,
        "timings_s": timings,
        "stage_seconds_when_computed": computed,
    }
    _write_json(work / "summary.json", summary)
    log(f"database written to {db_path} ({len(feats)} features) in {timings['total']:.0f} s")
    return summary


def add_guard_files(db_path: Path, loaded: Any, saes: dict[int, Any], pairs: list[Any], *, log: Log = print,
                    progress: bool = True) -> dict[str, Any]:
    """Add what the runtime guard needs beyond the selected rows: the competition (all encoder rows, 12-bit) for
    exact TopK firing, and the risk head fitted on the pairs with a guard that already uses exactly those
    (de-quantised) weights. Both files go in with one rewrite of the database. Returns the head's metadata."""
    import torch
    from tqdm import tqdm

    from safesail_guard.runtime.competition import quantize_rows
    from safesail_guard.runtime.encoder import Competition
    from safesail_guard.runtime.guard import Guard
    from safesail_neuron_db import NeuronDB
    from safesail_neuron_db.manifest import COMPETITION_FILE, HEAD_FILE
    from safesail_neuron_db.writer import add_files, competition_bytes
    from safesail_training.risk_head import fit_risk_head

    with NeuronDB.open(db_path) as db:
        rows = {ly: (s.W_enc.detach(), s.b_enc.detach(), s.k) for ly, s in saes.items() if ly in db.layers}
        competition = {ly: Competition(quantize_rows(W).dequantize(torch.float16), b.float(), k)
                       for ly, (W, b, k) in rows.items()}
        guard = Guard(loaded.model, loaded.tokenizer, db, model_fingerprint=loaded.identity.fingerprint,
                      model_name=loaded.identity.name, competition=competition, risk_head=False)
        with tqdm(total=2 * len(pairs), desc="risk head: scanning pairs", unit="text", disable=not progress) as bar:
            head = fit_risk_head(guard, pairs, log=log, progress=bar.update)
    add_files(db_path, {COMPETITION_FILE: competition_bytes(rows, loaded.identity.fingerprint),
                        HEAD_FILE: head.to_json().encode()})
    return head.meta


def language_coverage(pairs: list[Any], pair_max: dict[str, dict[str, Any]], selected: dict[str, dict[int, list[Any]]]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per language and domain: AUROC of the domain detector (max activation over the features selected for the
    domain) on concept queries against their de-concept twins. 0.5 means the twin looks the same as the
    concept to the selected features - no working detector for that language and domain."""
    import torch

    from safesail_training.style_check import auroc

    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for lang in sorted({p.lang for p in pairs}):
        for dom in sorted({p.level0 for p in pairs}):
            idx = [i for i, p in enumerate(pairs) if p.lang == lang and p.level0 == dom]
            if not idx:
                continue
            c_score = torch.zeros(len(idx))
            d_score = torch.zeros(len(idx))
            n_feats = 0
            for point, sel in selected.items():
                cols = [j for j, hits in sel.items() if any(h.level0 == dom for h in hits)]
                n_feats += len(cols)
                if cols:
                    c_score = torch.maximum(c_score, pair_max[point]["concept"][idx][:, cols].max(1).values)
                    d_score = torch.maximum(d_score, pair_max[point]["deconcept"][idx][:, cols].max(1).values)
            value = auroc(c_score.tolist(), d_score.tolist()) if n_feats else None
            out.setdefault(lang, {})[dom] = {"pairs": len(idx), "features": n_feats, "auroc": None if value is None else round(value, 3)}
    return out


def _source_kinds(records: list[Any]) -> dict[str, str]:
    """Corpus record source -> kind ("risky", "chat", "doc", ...), to tell safety-rich explanation text apart."""
    kinds: dict[str, str] = {}
    for r in records:
        kinds.setdefault(str(getattr(r, "source", "")), str(getattr(r, "kind", "doc")))
    return kinds


def top_risky_share(feat: Any, kinds: dict[str, str]) -> float:
    """Share of a feature's top-activating windows that come from safety-rich ("risky") corpus text."""
    top = [e for e in feat.examples if e.kind == "top"]
    if not top:
        return 0.0
    return sum(1 for e in top if kinds.get(e.source) == "risky") / len(top)


def _agreement(blob: dict[str, Any], latents: set[int]) -> dict[str, float | int]:
    """Median threshold-vs-TopK agreement over the latents that made it into the database."""
    idx = [i for i, lat in enumerate(blob["latents"].tolist()) if lat in latents]
    if not idx:
        return {"features": 0, "median_precision": float("nan"), "median_recall": float("nan")}
    import torch

    rows = torch.tensor(idx, dtype=torch.long)
    return {
        "features": len(idx),
        "median_precision": round(float(blob["precision"][rows].median()), 4),
        "median_recall": round(float(blob["recall"][rows].median()), 4),
    }


def _rounded(row: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Scores rounded for storage: the last float digits of a CorrScore depend on embedding batch composition,
    and a database must come out byte-identical from two runs of the same build."""
    return {k: (round(v, digits) if isinstance(v, float) and k in ("corr", "value") else v) for k, v in row.items()}


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "input_key"}


def _load_records(path: Path) -> list[Any]:
    from safesail_training.db_types import ActivationExample, ConceptHit, FeatureRecords

    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            d["concepts"] = [ConceptHit(**c) for c in d["concepts"]]
            d["examples"] = [ActivationExample(**e) for e in d["examples"]]
            out.append(FeatureRecords(**d))
    return out


def _map_text(feat: Any, expl: Any) -> str:
    """What the map embeds: the explanation when there is one, else the concept tags and top tokens."""
    if expl is not None and expl.status == "ok" and expl.text:
        return expl.text
    tags = ", ".join(f"{c.level0} {c.level1}".replace("_", " ") for c in feat.concepts)
    return tags or feat.feature_id


_EMBEDDER: Any = None


def _embedder() -> Any:
    global _EMBEDDER
    if _EMBEDDER is None:
        from safesail_training.embedder import SentenceEmbedder

        _EMBEDDER = SentenceEmbedder()
    return _EMBEDDER


def _make_explainer(cfg: BuildDBConfig, llm: Any) -> Any:
    from safesail_training.explain import OfflineExplainer, OpenAIExplainer

    if cfg.explainer == "openai":
        return OpenAIExplainer(_llm(llm))
    return OfflineExplainer()


def _make_simulator(cfg: BuildDBConfig, llm: Any, tokenizer: Any) -> Any:
    from safesail_training.simulate import EmbeddingSimulator, LLMSimulator

    if cfg.simulator == "openai":
        return LLMSimulator(_llm(llm))
    return EmbeddingSimulator(_embedder(), lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))


def _make_spscorer(cfg: BuildDBConfig, llm: Any) -> Any:
    from safesail_training.spscore import LLMSpScorer, OfflineSpScorer

    if cfg.spscorer == "openai":
        return LLMSpScorer(_llm(llm))
    return OfflineSpScorer(_embedder())


def _llm(llm: Any) -> Any:
    if llm is not None:
        return llm
    from safesail_training.llm_client import LLMClient, LLMClientConfig

    return LLMClient(LLMClientConfig())


def _style_check(cfg: BuildDBConfig, loaded: Any, saes: dict[str, Any], selected: dict[str, dict[int, Any]], layers: dict[str, int], work: Path, log: Log) -> tuple[dict[str, Any], bool]:
    """Max activation of every selected feature on the style probe texts -> AUROC per domain and style.
    Returns the report and whether it was computed now (False: read from the cache)."""
    import torch

    from safesail_training.model_metrics import query_sites_acts
    from safesail_training.select import feature_max
    from safesail_training.style_check import load_style_probe, style_check

    texts = load_style_probe()
    key = _digest([[t.id, t.text] for t in texts] + [{p: sorted(s) for p, s in selected.items()}])
    path = work / "style_check.json"
    if path.is_file():
        blob = json.loads(path.read_text())
        if blob.get("key") == key:
            return blob["report"], False
    columns, domains = [], []
    all_acts = query_sites_acts(loaded, cfg.points, [t.text for t in texts])  # as user turns, like the pairs: only the style differs
    for p in cfg.points:
        fmax = feature_max(saes[p], all_acts[p], saes[p].n_latents)
        for latent, hits in sorted(selected[p].items()):
            columns.append(fmax[:, latent])
            domains.append(sorted({h.level0 for h in hits}))
    matrix = torch.stack(columns, 1) if columns else torch.zeros((len(texts), 0))
    report = style_check(texts, matrix, domains)
    out = report.to_dict()
    _write_json(path, {"key": key, "report": out, "markdown": report.markdown()})
    log("style check (AUROC per style, mean over domains): " + ", ".join(f"{s} {v:.2f}" for s, v in report.per_style_mean.items() if v is not None))
    return out, True
