"""`safesail build-db`: trained SAEs -> an explained, scored neuron database of safety features.

Stages (each writes under ``<work_dir>/db/`` and is skipped or resumed on a rerun), and the module holding each:

    saes         a TopK SAE per hook point (trained by `build_sae.run_build` when missing)        build_db_select
    pairs        per point, max activation of every latent on each concept / de-concept query    build_db_select
    filter       precision/recall filter per level-1 concept (paper eq. 6)   -> filter.json      build_db_select
    records      explanation-set activations -> examples per feature, thresholds
                 -> records.jsonl, thresholds.pt; then the specificity check                      build_db_select
    explain      explanations (offline or an OpenAI-compatible LLM)          -> explanations.jsonl (append)
    simulate     token- and segment-level CorrScore                          -> simulations.jsonl (append)
    spscore      superposition score (LLM or offline proxy)                  -> spscores.jsonl (append)
    map          2-D map of explanation embeddings                           -> map.json
                 (these four: build_db_describe)
    head_bank    safety-set prompts (+ wrapped copies): per-token activations and SAE codes -> head/bank.npz  build_db_head
    head_fit     the detection head over [z ; e], thresholds from out-of-fold scores -> head/fit.{npz,json}   build_db_head
                 (before filter: the head's weighted latents join the database as features)
    style        the selected features on the style probe set (evaluation only) -> style_check.json  build_db_checks
    write        the database directory (manifest.json, features.sqlite, encoders.safetensors)   build_db_write
    guard_files  the competition file, the risk head and the detection head, added to the database   build_db_write

Append-only JSONL files are keyed by feature (and method); a rerun skips keys that finished with a final
status and retries ones that failed, so nothing is duplicated or lost (`build_db_resume`). This module runs the
stages in order and writes the summary; the settings are :class:`~safesail_training.build_db_config.BuildDBConfig`
and the CLI entry point is ``safesail build-db`` (:mod:`safesail_guard.cli.pipeline`).
"""

from __future__ import annotations

import time
from typing import Any

from safesail_guard.hooks import HookPoint
from safesail_training.build_db_checks import check_styles, language_coverage, threshold_agreement
from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_describe import explain_features, map_features, simulate_features, spscore_features
from safesail_training.build_db_resume import Log, StageClock, write_json
from safesail_training.build_db_select import (
    Corpus,
    build_corpus,
    ensure_saes,
    explanation_records,
    keep_specific,
    load_saes,
    pair_activations,
    select_features,
)
from safesail_training.build_db_write import add_guard_files, write_database


def run_build_db(cfg: BuildDBConfig, *, log: Log = print, progress: bool = True, llm: Any = None) -> dict[str, Any]:
    """Run or resume every stage; returns a summary dict (also written to ``<work_dir>/db/summary.json``)."""
    from safesail_guard.models import load_model
    from safesail_training.corpus.pairs import load_pairs

    work = cfg.work_dir / "db"
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    clock = StageClock.load(work / "stage_times.json")

    t0 = time.perf_counter()
    sae_dirs = ensure_saes(cfg, log, progress)
    clock.stage("saes", t0)
    t0 = time.perf_counter()
    loaded = load_model(cfg.model)
    clock.stage("load_model", t0)
    saes = load_saes(sae_dirs, loaded.d_model)
    layers = {p: HookPoint.parse(p).layer for p in cfg.points}
    corpus_cache: list[Corpus] = []

    def corpus() -> Corpus:
        """The corpus, read at most once per build (only the stages that need it ask)."""
        if not corpus_cache:
            corpus_cache.append(build_corpus(cfg))
        return corpus_cache[0]

    site = HookPoint.parse(cfg.points[0]).site

    # -- pairs + filter
    pairs = load_pairs(list(cfg.pairs) or None)
    t0 = time.perf_counter()
    pair_max = pair_activations(cfg, loaded, saes, sae_dirs, pairs, work, clock, log, progress)
    clock.stage("pairs", t0)
    head = None
    if cfg.head:
        from safesail_training.build_db_head import head_bank, head_fit

        t0 = time.perf_counter()
        items, bank, bank_key = head_bank(cfg, loaded, saes, sae_dirs, work, clock, log, progress)
        clock.stage("head_bank", t0)
        t0 = time.perf_counter()
        head = head_fit(cfg, items, bank, bank_key, saes, work, clock, log)
        clock.stage("head_fit", t0)
        del bank
    head_latents = {p: head.latents().get(layers[p], []) for p in cfg.points} if head is not None else {}
    selected, filter_stats, scoring_stats = select_features(cfg, pairs, pair_max, work, log, head_latents=head_latents)

    # -- explanation set: records + thresholds, then the specificity check
    t0 = time.perf_counter()
    feats, thr_blob = explanation_records(cfg, loaded, saes, selected, layers, corpus, work, clock, log, progress)
    clock.stage("records", t0)
    feats, specificity = keep_specific(cfg, feats, corpus, layers, log,
                                       keep={(layers[p], j) for p, js in head_latents.items() for j in js})
    final_ids = {(f.layer, f.latent) for f in feats}
    final_sel = {p: {lat: hits for lat, hits in selected[p].items() if (layers[p], lat) in final_ids} for p in cfg.points}
    languages = language_coverage(pairs, pair_max, final_sel)

    # -- explain, simulate, superposition score, map
    t0 = time.perf_counter()
    explainer_name, explanations, ekey = explain_features(cfg, feats, llm, work, clock, progress)
    clock.stage("explain", t0)
    t0 = time.perf_counter()
    simulator_name, sims = simulate_features(cfg, feats, explanations, ekey, llm, loaded.tokenizer, work, clock, progress)
    clock.stage("simulate", t0)
    t0 = time.perf_counter()
    sp_name, sps = spscore_features(cfg, feats, explanations, ekey, llm, work, clock, progress)
    clock.stage("spscore", t0)
    t0 = time.perf_counter()
    coords, map_method = map_features(cfg, feats, explanations, work, clock)
    clock.stage("map", t0)

    # -- style generalisation check (evaluation only: never feeds back into selection)
    t0 = time.perf_counter()
    style, style_computed = check_styles(cfg, loaded, saes, final_sel, work, log)
    if style_computed:
        clock.computed_now("style", time.perf_counter() - t0)
    clock.stage("style", t0)

    # -- write the database
    t0 = time.perf_counter()
    build_params = cfg.model_dump(mode="json", exclude={"work_dir", "out", "model"})
    build_params.update({
        "explainer": explainer_name,
        "simulator": simulator_name,
        "spscorer": sp_name,
        "explanation_tokens": int(thr_blob["n_tokens"]),
        "explanation_texts": int(thr_blob["n_texts"]),
        "filter": filter_stats,
        "scoring_features_picked": scoring_stats,
        "pairs": len(pairs),
    })
    db_path = write_database(cfg, loaded=loaded, site=site, saes=saes, sae_dirs=sae_dirs, layers=layers, feats=feats,
                             thr_blob=thr_blob, explanations=explanations, sims=sims, sps=sps, coords=coords,
                             map_method=map_method, build_params=build_params, log=log)
    clock.stage("write", t0)
    t0 = time.perf_counter()
    head_meta = add_guard_files(db_path, loaded, {layers[p]: saes[p] for p in cfg.points}, pairs, log=log,
                                progress=progress, detection_head=head, cfg=cfg)
    clock.stage("guard_files", t0)
    clock.timings["total"] = round(time.perf_counter() - t_all, 1)
    summary = {
        "db": str(db_path),
        "features": len(feats),
        "filter": filter_stats,
        "specificity": specificity,
        "threshold_agreement": {p: threshold_agreement(thr_blob[p], {f.latent for f in feats if f.layer == layers[p]}) for p in cfg.points},
        "style_check": style,
        "languages": languages,
        "risk_head": head_meta,
        "detection_head": head.report if head is not None else None,
        "timings_s": clock.timings,
        "stage_seconds_when_computed": clock.computed,
    }
    write_json(work / "summary.json", summary)
    log(f"database written to {db_path} ({len(feats)} features) in {clock.timings['total']:.0f} s")
    return summary
