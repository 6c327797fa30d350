"""Export a neuron database as JSON Lines (one full object per feature) or CSV (one flat row per feature)."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

from safesail_neuron_db.database import FeatureView, NeuronDB

__all__ = ["EXPORT_FORMATS", "CSV_COLUMNS", "export", "feature_json", "feature_csv_row"]

EXPORT_FORMATS = ("jsonl", "csv")

CSV_COLUMNS = (
    "id", "layer", "latent", "domain", "concepts", "explanation", "explanation_status", "explainer",
    "token_corr", "segment_corr", "simulator", "sp_score", "sp_status", "sp_method", "threshold", "max_act",
    "fire_rate", "map_x", "map_y",
)  # fmt: skip

_SCALARS = (
    "id", "layer", "latent", "domain", "explanation", "explanation_status", "explainer", "explanation_detail",
    "explanation_prompt_tokens", "explanation_completion_tokens", "threshold", "max_act", "fire_rate", "map_x",
    "map_y", "sp_score", "sp_status", "sp_method", "token_corr", "segment_corr", "simulator",
)  # fmt: skip


def feature_json(view: FeatureView) -> dict[str, Any]:
    """The JSONL object of one feature: all columns, concepts, scores, and top examples as text + max_act."""
    full = view.to_dict()
    out = {k: full[k] for k in _SCALARS}
    out["concepts"] = full["concepts"]
    out["simulation_scores"] = full["simulation_scores"]
    out["superposition"] = full["superposition"]
    out["top_examples"] = [{"text": e.text, "max_act": e.max_act} for e in view.top]
    return out


def feature_csv_row(view: FeatureView) -> dict[str, Any]:
    """The CSV row of one feature (concepts as ``level0/level1`` joined with ';'; missing values empty)."""
    row: dict[str, Any] = {k: getattr(view, k) for k in CSV_COLUMNS if k != "concepts"}
    row["concepts"] = ";".join(f"{c.level0}/{c.level1}" for c in view.concepts)
    return {k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS}


def export(db: NeuronDB, fmt: str, out: TextIO) -> int:
    """Write every feature of ``db`` to ``out`` as ``"jsonl"`` or ``"csv"``; returns the number of features."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    n = 0
    if fmt == "jsonl":
        for view in db.iter_features():
            out.write(json.dumps(feature_json(view), ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
        return n
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for view in db.iter_features():
        writer.writerow(feature_csv_row(view))
        n += 1
    return n
