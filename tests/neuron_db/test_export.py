"""export(): JSON Lines and CSV parse back to the database content."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from safesail_neuron_db import NeuronDB, export
from tests.neuron_db.factory import make_db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    with NeuronDB.open(make_db(tmp_path_factory.mktemp("exp"))) as handle:
        yield handle


def test_jsonl_has_every_feature_with_scores_and_top_examples(db: NeuronDB) -> None:
    buf = io.StringIO()
    assert export(db, "jsonl", buf) == 12
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["id"] for r in rows] == db.feature_ids()
    for r in rows:
        v = db.get(r["id"])
        assert r["explanation"] == v.explanation and r["explanation_status"] == v.explanation_status
        assert r["token_corr"] == v.token_corr and r["sp_score"] == v.sp_score and r["map_x"] == v.map_x
        assert [c["level1"] for c in r["concepts"]] == [c.level1 for c in v.concepts]
        assert [s["simulator"] for s in r["simulation_scores"]] == [s.simulator for s in v.simulation_scores]
        assert (r["superposition"] or {}).get("value") == (v.superposition.value if v.superposition else None)
        assert r["top_examples"] == [{"text": e.text, "max_act": e.max_act} for e in v.top] and len(r["top_examples"]) == 2


def test_csv_flat_rows(db: NeuronDB) -> None:
    buf = io.StringIO()
    assert export(db, "csv", buf) == 12
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["id"] for r in rows] == db.feature_ids()
    for r in rows:
        v = db.get(r["id"])
        assert int(r["layer"]) == v.layer and int(r["latent"]) == v.latent and r["domain"] == v.domain
        assert r["concepts"] == ";".join(f"{c.level0}/{c.level1}" for c in v.concepts)
        assert r["explanation"] == (v.explanation or "") and r["explanation_status"] == v.explanation_status
        assert r["token_corr"] == ("" if v.token_corr is None else str(v.token_corr))
        assert float(r["segment_corr"]) == v.segment_corr
        assert r["map_y"] == ("" if v.map_y is None else str(v.map_y))
    assert any(";" in r["concepts"] for r in rows) and any(r["sp_score"] == "" for r in rows)


def test_bad_format(db: NeuronDB) -> None:
    with pytest.raises(ValueError, match="jsonl, csv"):
        export(db, "xml", io.StringIO())


def test_export_keeps_awkward_text(tmp_path: Path) -> None:
    from safesail_neuron_db.records import Explanation
    from tests.neuron_db.factory import make_inputs, write_db

    inputs = make_inputs(n_layers=1, n_features=1)
    f = inputs.features[0]
    f.explanation = Explanation(f.rec.feature_id, 'Says "hi",\nthen [b]bold[/b]; é', "ok", "offline")
    with NeuronDB.open(write_db(tmp_path / "db", inputs)) as db:
        buf = io.StringIO()
        export(db, "csv", buf)
        assert next(csv.DictReader(io.StringIO(buf.getvalue())))["explanation"] == f.explanation.text
        buf = io.StringIO()
        export(db, "jsonl", buf)
        assert json.loads(buf.getvalue())["explanation"] == f.explanation.text
