"""The database shipped for the embedded model: present, intact, the right model, within budget, and useful."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from safesail_guard.models import EMBEDDED_SHA256
from safesail_neuron_db import NeuronDB, default_database_path

BUDGET_BYTES = 27_000_000  # 25 MB until issue 14; the detection head's 240 features add 2.4 MB (docs/decisions.md)


def test_shipped_database_verifies_against_the_embedded_model() -> None:
    path = default_database_path()
    with NeuronDB.open(path, expected_fingerprint=EMBEDDED_SHA256) as db:
        info = db.info()
        assert info["model"]["name"] == "smollm2-135m-instruct"
        assert len(db.layers) >= 3 and db.layers == sorted(db.layers)
        n_layers = json.loads((path / "manifest.json").read_text())["sae"]
        assert {int(k) for k in n_layers} == set(db.layers)
        # features in every level-0 domain of the taxonomy, or the gap is on the results page
        from safesail_training.corpus.pairs import load_taxonomy

        missing = set(load_taxonomy().level0s) - set(info["counts"]["per_domain"])
        if missing:
            page = (default_database_path().parents[3] / "docs" / "results" / "neuron_db.md")
            assert page.is_file() and all(d in page.read_text() for d in missing)
        for layer in db.layers:
            enc = db.encoder(layer)
            assert enc["W_enc"].shape[1] == 576 and enc["W_enc"].shape[0] == len(db.feature_ids(layer=layer))
            assert torch.isfinite(enc["W_enc"]).all() and (enc["threshold"] >= 0).all()


def test_shipped_database_fits_the_budget() -> None:
    total = sum(p.stat().st_size for p in default_database_path().iterdir() if p.is_file())
    assert total <= BUDGET_BYTES, f"{total / 1e6:.1f} MB > {BUDGET_BYTES / 1e6:.0f} MB"


def test_shipped_database_is_searchable() -> None:
    with NeuronDB.open(verify=False) as db:
        for query in ("violence", "drugs", "weapons"):
            hits = db.search(query, limit=5)
            assert hits, query
            assert any(query in " ".join(c.level0 for c in db.get(h.id).concepts) for h in hits), query
        f = next(db.get(fid) for fid in db.feature_ids() if db.get(fid).concepts)
        assert f.examples and f.concepts and f.explanation_status in {"ok", "skipped", "failed", "unparseable"}
        head = db.detection_head_spec()
        assert head is not None and sum(head["latents"].values()) > 0
        plain = [db.get(fid) for fid in db.feature_ids() if not db.get(fid).concepts]
        assert plain and all(f.examples and f.explanation for f in plain)  # head features are explained too


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_reads_the_shipped_database(fmt: str) -> None:
    from safesail_guard.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["db", "info"])
    assert res.exit_code == 0 and "smollm2-135m-instruct" in res.output
    res = runner.invoke(app, ["db", "export", "--format", fmt])
    assert res.exit_code == 0
    with NeuronDB.open(verify=False) as db:
        n = len(db.feature_ids())
    if fmt == "csv":
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(res.output)))
        assert len(rows) == n and all(r["id"] for r in rows)
    else:
        rows = [json.loads(line) for line in res.output.splitlines() if line.strip()]
        assert len(rows) == n


def test_demo_shows_the_shipped_database() -> None:
    from safesail_guard.cli import app

    res = CliRunner().invoke(app, ["demo", "--query", "violence"])
    assert res.exit_code == 0, res.output
    assert "smollm2-135m-instruct" in res.output and "safesail db show" in res.output
