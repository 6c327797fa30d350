"""Evaluation-only reports of `safesail build-db` on the features it kept; nothing here feeds back into selection.

:func:`language_coverage`: per language and domain, whether the selected features tell a concept query from its
de-concept twin (AUROC); :func:`check_styles` (stage ``style``, ``style_check.json``): the selected features on
the style probe set, AUROC per domain and style; :func:`threshold_agreement`: how well the fitted firing
thresholds agree with TopK firing. :mod:`safesail_training.build_db` puts all three into the build summary; the
measures come from :mod:`safesail_training.style_check`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import Log, digest, write_json


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


def check_styles(cfg: BuildDBConfig, loaded: Any, saes: dict[str, Any], selected: dict[str, dict[int, Any]],
                 work: Path, log: Log) -> tuple[dict[str, Any], bool]:
    """Max activation of every selected feature on the style probe texts -> AUROC per domain and style.
    Returns the report and whether it was computed now (False: read from the cache)."""
    import torch

    from safesail_training.model_metrics import query_sites_acts
    from safesail_training.select import feature_max
    from safesail_training.style_check import load_style_probe, style_check

    texts = load_style_probe()
    key = digest([[t.id, t.text] for t in texts] + [{p: sorted(s) for p, s in selected.items()}])
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
    write_json(path, {"key": key, "report": out, "markdown": report.markdown()})
    log("style check (AUROC per style, mean over domains): " + ", ".join(f"{s} {v:.2f}" for s, v in report.per_style_mean.items() if v is not None))
    return out, True


def threshold_agreement(blob: dict[str, Any], latents: set[int]) -> dict[str, float | int]:
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
