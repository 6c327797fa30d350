"""The results page: every section present, counts read from the database, plots written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safesail_neuron_db import NeuronDB
from safesail_training.db_report import _pearson, write_report
from tests.neuron_db.factory import make_db


def test_report_from_a_database_and_summary(tmp_path: Path) -> None:
    db_path = make_db(tmp_path, n_layers=2, n_features=24)
    work = tmp_path / "work"
    (work / "db").mkdir(parents=True)
    summary = {
        "timings_s": {"pairs": 12.0, "records": 30.5, "total": 50.0},
        "filter": {"layers.0.mlp_out": {"passed": 30, "kept": 12}},
        "threshold_agreement": {"layers.0.mlp_out": {"median_precision": 0.91, "median_recall": 0.87}},
        "languages": {"en": {"violence": {"pairs": 10, "features": 3, "auroc": 0.9}},
                      "hi": {"violence": {"pairs": 3, "features": 3, "auroc": 0.5}}},
        "stage_seconds_when_computed": {"pairs": 100.0, "records": 200.0},
    }
    (work / "db" / "summary.json").write_text(json.dumps(summary))
    (work / "db" / "style_check.json").write_text(json.dumps({"markdown": "| domain | x |\n|---|---|\n| violence | 0.70 |"}))
    out = write_report(db_path, work, tmp_path / "res" / "db.md")
    text = out.read_text()
    with NeuronDB.open(db_path) as db:
        n = len(db.feature_ids())
    assert f"{n} features" in text
    for heading in ("## Features per domain and layer", "## Languages", "## Guard thresholds vs TopK", "## Simulation scores", "## Style generalisation", "## Example features"):
        assert heading in text, heading
    assert "hi/violence" in text and "en/violence" not in text  # a chance-level cell is called out, not hidden
    assert "| **sum** | **5.0 min** |" in text
    assert "| layers.0.mlp_out | 0.910 | 0.870 |" in text
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (out.parent / png).stat().st_size > 1000, png


def test_pearson() -> None:
    assert _pearson([1, 2, 3], [2, 4, 6]) == 1.0
    assert _pearson([1, 2, 3], [3, 2, 1]) == -1.0
    assert _pearson([1, 1, 1], [1, 2, 3]) is None and _pearson([1, 2], [1, 2]) is None
