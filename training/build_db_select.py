"""The stages of `safesail build-db` that decide which features the database holds and what text shows them.

In build order: ``saes`` (:func:`ensure_saes`, :func:`load_saes`: a TopK SAE per hook point, trained by
``build_sae`` when missing), ``pairs`` (:func:`pair_activations`: max activation of every latent on each concept
and de-concept query, cached per point), ``filter`` (:func:`select_features`: the precision/recall filter per
level-1 concept, paper eq. 6, optionally with scoring latents of the risk head), ``records``
(:func:`explanation_records`: activations on the explanation set, :func:`explanation_pool`, -> examples per
feature and firing thresholds) and the specificity check (:func:`keep_specific`, :func:`top_risky_share`).
:mod:`safesail_training.build_db` calls them in that order; the describe stages
(:mod:`safesail_training.build_db_describe`) take the records from here. Resume helpers come from
:mod:`safesail_training.build_db_resume`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import Log, StageClock, digest, write_json

Corpus = tuple[list[Any], int]
"""The SAE build's corpus records in build order, and how many of them it held out for evaluation."""


def ensure_saes(cfg: BuildDBConfig, log: Log, progress: bool) -> dict[str, Path]:
    """Stage ``saes``: the SAE directory per point, training the missing ones with ``build_sae.run_build``."""
    from safesail_training.build_sae import BuildSAEConfig, run_build

    dirs = {p: cfg.work_dir / "saes" / p / f"k{cfg.k}" for p in cfg.points}
    missing = [p for p, d in dirs.items() if not (d / "sae.safetensors").is_file()]
    if missing:
        log(f"training SAEs (k={cfg.k}) at {', '.join(missing)}")
        run_build(
            BuildSAEConfig(model=cfg.model, out_dir=cfg.work_dir, points=missing, ks=[cfg.k], train_tokens=cfg.train_tokens, expansion=cfg.expansion, seed=cfg.seed, pairs=list(cfg.pairs), safety_mix=cfg.safety_mix),
            log=log,
            progress=progress,
            measure=False,  # FVU/dNTP/selection are build-sae's report; the pairs are measured below in one pass
        )
    return dirs


def load_saes(sae_dirs: dict[str, Path], d_model: int) -> dict[str, Any]:
    """The SAE of each point, loaded for inference (eval mode, no gradients)."""
    from safesail_guard.sae import TopKSAE

    saes = {p: TopKSAE.load(d, expected_d_in=d_model) for p, d in sae_dirs.items()}
    for sae in saes.values():
        sae.eval()
        for param in sae.parameters():
            param.requires_grad_(False)
    return saes


def build_corpus(cfg: BuildDBConfig) -> Corpus:
    """The SAE build's corpus records in their build order, and how many of them it held out for evaluation."""
    from safesail_training.build_sae import BuildSAEConfig, corpus_records

    bcfg = BuildSAEConfig(model=cfg.model, out_dir=cfg.work_dir, seed=cfg.seed, safety_mix=cfg.safety_mix)
    return corpus_records(bcfg), bcfg.eval_records


def explanation_pool(cfg: BuildDBConfig, tokenizer: Any, corpus: Corpus | None = None) -> list[Any]:
    """Explanation texts kept apart from SAE training: the build's held-out records plus the corpus records
    after the last one any point's training harvest consumed, mixed to `risky_share` safety-rich text."""
    import random

    records, n_eval = corpus or build_corpus(cfg)
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


def pair_activations(cfg: BuildDBConfig, loaded: Any, saes: dict[str, Any], sae_dirs: dict[str, Path],
                     pairs: list[Any], work: Path, clock: StageClock, log: Log,
                     progress: bool) -> dict[str, dict[str, Any]]:
    """Stage ``pairs``: per point, the max activation of every latent on each concept and de-concept query
    (``[n_pairs, n_latents]`` under ``"concept"`` / ``"deconcept"``), cached in ``pairs/<point>.pt`` and reused
    while the pairs and the SAE are unchanged."""
    import torch

    from safesail_training.model_metrics import query_sites_acts
    from safesail_training.select import feature_max

    pairs_key = digest([(p.id, p.concept, p.deconcept, p.level0, p.level1) for p in pairs])
    t0 = time.perf_counter()
    pair_max: dict[str, dict[str, Any]] = {}
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
        clock.computed_now("pairs", time.perf_counter() - t0)
    return pair_max


def select_features(cfg: BuildDBConfig, pairs: list[Any], pair_max: dict[str, dict[str, Any]], work: Path,
                    log: Log, *, head_latents: dict[str, list[int]] | None = None,
                    ) -> tuple[dict[str, dict[int, list[Any]]], dict[str, Any], dict[str, int]]:
    """Stage ``filter``: per point, the latents that pass the precision/recall bars for some level-1 concept
    (the recall bar raised until the side-swap null predicts at most ``target_fdr`` false discoveries), capped at
    ``max_features_per_layer``, plus the scoring latents of the risk head when asked, plus every latent the
    detection head weights (``head_latents``, point -> latent ids; kept with their concept hits if they passed,
    else without a concept). Writes ``filter.json``.

    Returns (point -> latent -> concept hits, filter statistics per point, scoring latents picked per point)."""
    from safesail_neuron_db.records import ConceptHit, to_dict
    from safesail_training.db_filter import FilterConfig, calibrate_recall, filter_features

    concepts = [(p.level0, p.level1) for p in pairs]
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
    if head_latents:
        added = {p: [j for j in js if j not in selected[p]] for p, js in head_latents.items()}
        for p, js in head_latents.items():
            for j in js:
                selected[p].setdefault(j, [])
        scoring_stats.update({f"head:{p}": len(v) for p, v in added.items()})
        log(f"detection head latents added: {', '.join(f'{p} {len(v)}' for p, v in added.items())}")
    write_json(work / "filter.json", {p: {str(j): [to_dict(h) for h in hs] for j, hs in sel.items()} for p, sel in selected.items()})
    return selected, filter_stats, scoring_stats


def explanation_records(cfg: BuildDBConfig, loaded: Any, saes: dict[str, Any], selected: dict[str, dict[int, Any]],
                        layers: dict[str, int], corpus: Callable[[], Corpus], work: Path, clock: StageClock,
                        log: Log, progress: bool) -> tuple[list[Any], dict[str, Any]]:
    """Stage ``records``: the selected latents' activations on the explanation set -> examples per feature
    (``records.jsonl``) and firing thresholds fitted against TopK firing (``thresholds.pt``), redone only when
    the selection or the explanation-set settings change.

    Returns the feature records and the thresholds blob (per point: latents, threshold, precision, recall,
    n_fired; plus ``n_tokens`` and ``n_texts``)."""
    import torch

    from safesail_neuron_db.records import to_dict
    from safesail_training.act_records import RecordsConfig, collect_acts, feature_records, fit_thresholds

    rcfg = RecordsConfig()
    sel_key = digest({p: sorted(s) for p, s in selected.items()})
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
        write_json(records_meta, want_meta)
        del ex
        clock.computed_now("records", time.perf_counter() - t0)
    feats = load_records(records_path)
    thr_blob = torch.load(thr_path)
    log(f"activation records: {len(feats)} features over {thr_blob['n_tokens']:,} explanation tokens")
    return feats, thr_blob


def load_records(path: Path) -> list[Any]:
    """The :class:`~safesail_neuron_db.records.FeatureRecords` of a ``records.jsonl`` file, in file order."""
    from safesail_neuron_db.records import ActivationExample, ConceptHit, FeatureRecords

    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            d["concepts"] = [ConceptHit(**c) for c in d["concepts"]]
            d["examples"] = [ActivationExample(**e) for e in d["examples"]]
            out.append(FeatureRecords(**d))
    return out


def source_kinds(records: list[Any]) -> dict[str, str]:
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


def keep_specific(cfg: BuildDBConfig, feats: list[Any], corpus: Callable[[], Corpus], layers: dict[str, int],
                  log: Log, *, keep: set[tuple[int, int]] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """The specificity check: keep a feature only if at least ``min_top_risky`` of its top windows come from
    safety-rich text (:func:`top_risky_share`), or if it is in ``keep`` (``(layer, latent)`` pairs the detection
    head weights: every weighted latent must be a database feature). Returns the kept features and the check's
    statistics."""
    keep = keep or set()
    specificity: dict[str, Any] = {"min_top_risky": cfg.min_top_risky}
    if cfg.min_top_risky > 0:
        kinds = source_kinds(corpus()[0])
        before = len(feats)
        shares = {f.feature_id: top_risky_share(f, kinds) for f in feats}
        feats = [f for f in feats if shares[f.feature_id] >= cfg.min_top_risky or (f.layer, f.latent) in keep]
        specificity.update({"before": before, "kept": len(feats), "per_layer": {p: sum(1 for f in feats if f.layer == layers[p]) for p in cfg.points}})
        log(f"specificity: {len(feats)} of {before} features have >= {cfg.min_top_risky:.0%} of their top windows in safety-rich text")
        if not feats:
            raise ValueError("no feature passed the specificity check; lower --min-top-risky or add safety-rich explanation text")
    return feats, specificity
