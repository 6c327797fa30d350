"""`safesail db ...` through typer's CliRunner: output, JSON modes, and bad input as one line + exit 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.cli import app
from safesail_neuron_db.records import Explanation
from tests.neuron_db.factory import make_inputs, write_db

runner = CliRunner()


@pytest.fixture(scope="module")
def dbpath(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = make_inputs(n_layers=2, n_features=12)
    f = inputs.features[1]  # 7_42: text that rich would read as markup
    f.explanation = Explanation(f.rec.feature_id, "Weapons [bold]and[/] [/red] explosives", "ok", "offline")
    return write_db(tmp_path_factory.mktemp("cli") / "db", inputs)


def _ok(args: list[str]):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _bad(args: list[str], message: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return res.output


def test_db_listed_in_help() -> None:
    res = _ok(["db", "--help"])
    for cmd in ("info", "search", "show", "export"):
        assert cmd in res.output


def test_info(dbpath: Path) -> None:
    out = _ok(["db", "info", "--db", str(dbpath)]).output
    assert "tiny-test-model" in out and "mlp_out" in out and "3, 7" in out and "self_harm" in out
    doc = json.loads(_ok(["db", "info", "--db", str(dbpath), "--json"]).output)
    assert doc["counts"]["features"] == 12 and doc["layers"] == [3, 7]


def test_search(dbpath: Path) -> None:
    out = _ok(["db", "search", "adult websites", "--db", str(dbpath)]).output
    assert "3_5" in out and "Links to adult websites" in out
    hits = json.loads(_ok(["db", "search", "adult websites", "--db", str(dbpath), "--json", "--limit", "2"]).output)
    assert [h["id"] for h in hits][0] == "3_5" and len(hits) == 2
    hits = json.loads(_ok(["db", "search", "adult", "--db", str(dbpath), "--json", "--layer", "7", "--domain", "drugs"]).output)
    assert hits and all(h["layer"] == 7 and h["domain"] == "drugs" for h in hits)
    assert "no features match" in _ok(["db", "search", '"(*', "--db", str(dbpath)]).output
    assert "explosives" in _ok(["db", "search", "[/red] weapons", "--db", str(dbpath)]).output


def test_show(dbpath: Path) -> None:
    out = _ok(["db", "show", "3_5", "--db", str(dbpath), "--examples", "1"]).output
    assert "Links to adult websites and explicit sexual content" in out
    assert "adult_websites" in out and "0.950" in out  # concept with precision
    assert "embedding:all-MiniLM-L6-v2" in out and "openai:gpt-test" in out and "offline-proxy:entropy" in out
    assert "examples (1 of 4" in out and out.count("synthetic/top") == 1
    assert "Weapons [bold]and[/] [/red] explosives" in _ok(["db", "show", "7_42", "--db", str(dbpath)]).output
    doc = json.loads(_ok(["db", "show", "3_5", "--db", str(dbpath), "--json", "--examples", "2"]).output)
    assert doc["id"] == "3_5" and len(doc["examples"]) == 2 and doc["concepts"][0]["level1"] == "adult_websites"


def test_show_failed_explanation(dbpath: Path) -> None:
    out = _ok(["db", "show", "7_190", "--db", str(dbpath)]).output
    assert "no explanation (failed) timeout after 3 tries" in out


def test_export_stdout_and_file(dbpath: Path, tmp_path: Path) -> None:
    out = _ok(["db", "export", "--format", "csv", "--db", str(dbpath)]).output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 12 and rows[0]["id"] == "3_5"
    target = tmp_path / "all.jsonl"
    target.write_text("old")
    res = _ok(["db", "export", "--format", "jsonl", "--db", str(dbpath), "--out", str(target)])
    assert "wrote 12 features" in res.output
    lines = target.read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["id"] == "3_5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.jsonl"]  # no temp file left


def test_bad_input_exits_2(dbpath: Path, tmp_path: Path) -> None:
    out = _bad(["db", "show", "3_6", "--db", str(dbpath)], "no feature '3_6'")
    assert "near ids: 3_5" in out
    _bad(["db", "show", "not-an-id", "--db", str(dbpath)], "<layer>_<latent>")
    _bad(["db", "info", "--db", str(tmp_path / "missing")], "safesail build-db")
    _bad(["db", "search", "  ", "--db", str(dbpath)], "query is empty")
    _bad(["db", "search", "x", "--limit", "0", "--db", str(dbpath)], "limit must be a positive integer")
    _bad(["db", "export", "--format", "xml", "--db", str(dbpath)], "jsonl, csv")
    _bad(["db", "export", "--db", str(dbpath), "--out", str(tmp_path / "no" / "dir.jsonl")], "error:")
    assert not (tmp_path / "no").exists()


def test_corrupt_database_exits_2(dbpath: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in dbpath.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    data = bytearray((broken / "features.sqlite").read_bytes())
    data[100] ^= 0xFF
    (broken / "features.sqlite").write_bytes(bytes(data))
    _bad(["db", "info", "--db", str(broken)], "features.sqlite")


def test_default_database(dbpath: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safesail_neuron_db

    monkeypatch.setattr(safesail_neuron_db, "default_database_path", lambda: tmp_path / "not-installed")
    _bad(["db", "info"], "run `safesail build-db`")
    monkeypatch.setattr(safesail_neuron_db, "default_database_path", lambda: dbpath)
    assert "tiny-test-model" in _ok(["db", "info"]).output


def test_show_colours_tokens_by_level(dbpath: Path) -> None:
    from rich.console import Console

    from safesail_guard.cli.db import _LEVEL_STYLES, _render_feature
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open(dbpath) as db:
        view = db.get("3_5")
    con = Console(record=True, force_terminal=True, color_system="truecolor", width=120)
    _render_feature(con, view, 1)
    out = con.export_text(styles=True)
    peak = view.examples[0].levels.index(10)
    top_bg = "48;2;255;48;15"  # level 10 background of _LEVEL_STYLES[9]
    assert _LEVEL_STYLES[9].endswith("rgb(255,48,15)")
    assert f"{top_bg}m{view.examples[0].tokens[peak]}" in out
    quiet = [t for t, lv in zip(view.examples[0].tokens, view.examples[0].levels) if lv == 0][0]
    assert f"48;2;255;48;15m{quiet}" not in out
