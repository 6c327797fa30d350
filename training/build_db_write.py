"""The last stages of `safesail build-db`: write the neuron database, then add the guard's files to it.

:func:`write_database` (stage ``write``) turns the kept features, their thresholds, explanations and scores and
the selected SAE rows into a database directory with :class:`safesail_neuron_db.writer.DatabaseWriter`
(``manifest.json``, ``features.sqlite``, ``encoders.safetensors``). :func:`add_guard_files` (stage
``guard_files``) adds what the runtime guard needs beyond those rows: the competition file for exact TopK firing
and the risk head fitted on the concept pairs. :mod:`safesail_training.build_db` calls both with the results of
the selection (:mod:`safesail_training.build_db_select`) and describe (:mod:`safesail_training.build_db_describe`)
stages; the file formats belong to :mod:`safesail_neuron_db`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import Log


def write_database(cfg: BuildDBConfig, *, loaded: Any, site: str, saes: dict[str, Any], sae_dirs: dict[str, Path],
                   layers: dict[str, int], feats: list[Any], thr_blob: dict[str, Any], explanations: dict[str, Any],
                   sims: list[Any], sps: dict[str, Any], coords: dict[str, tuple[float, float]], map_method: str,
                   build_params: dict[str, Any], log: Log) -> Path:
    """Stage ``write``: the database directory ``cfg.db_dir`` with every kept feature and, per layer, the encoder
    rows of its kept latents (a layer left without features gets no encoder). Returns the database path."""
    import torch

    from safesail_neuron_db.records import SimulationScore
    from safesail_neuron_db.writer import DatabaseWriter

    sae_cfgs = {layers[p]: {**json.loads((sae_dirs[p] / "cfg.json").read_text()), "point": p} for p in cfg.points}
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
    return writer.finish()


def add_guard_files(db_path: Path, loaded: Any, saes: dict[int, Any], pairs: list[Any], *, log: Log = print,
                    progress: bool = True, detection_head: Any = None, cfg: Any = None) -> dict[str, Any]:
    """Add what the runtime guard needs beyond the selected rows: the competition (all encoder rows, 12-bit) for
    exact TopK firing, and the detection head (a `build_db_head.HeadFit`, with the build's ``cfg``) or, without
    one, the old risk head fitted on the pairs with a guard that already uses exactly those (de-quantised)
    weights. All files go in with one rewrite of the database. Returns the risk head's metadata."""
    import torch
    from tqdm import tqdm

    from safesail_guard.runtime.encoder import Competition
    from safesail_guard.runtime.guard import Guard
    from safesail_neuron_db import NeuronDB
    from safesail_neuron_db.competition import competition_bytes, quantize_rows
    from safesail_neuron_db.manifest import COMPETITION_FILE, DETECTION_HEAD_FILE, HEAD_FILE
    from safesail_neuron_db.publish import add_files
    from safesail_training.risk_head import fit_risk_head

    with NeuronDB.open(db_path) as db:
        rows = {ly: (s.W_enc.detach(), s.b_enc.detach(), s.k) for ly, s in saes.items() if ly in db.layers}
    files = {COMPETITION_FILE: competition_bytes(rows, loaded.identity.fingerprint)}
    if detection_head is not None:
        # the detection head supersedes the pair-fitted risk head: the guard would never read it, so it is not
        # fitted (scanning the pairs takes minutes) and not shipped
        from safesail_training.build_db_head import head_file

        files[DETECTION_HEAD_FILE] = head_file(detection_head, saes, cfg, loaded.identity.fingerprint)
        add_files(db_path, files)
        return {"skipped": "the database ships a detection head"}
    with NeuronDB.open(db_path) as db:
        competition = {ly: Competition(quantize_rows(W).dequantize(torch.float16), b.float(), k)
                       for ly, (W, b, k) in rows.items()}
        guard = Guard(loaded.model, loaded.tokenizer, db, model_fingerprint=loaded.identity.fingerprint,
                      model_name=loaded.identity.name, competition=competition, risk_head=False)
        with tqdm(total=2 * len(pairs), desc="risk head: scanning pairs", unit="text", disable=not progress) as bar:
            head = fit_risk_head(guard, pairs, log=log, progress=bar.update)
    files[HEAD_FILE] = head.to_json().encode()
    add_files(db_path, files)
    return head.meta
