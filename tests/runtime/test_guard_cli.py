"""`safesail score` and `safesail inspect` end to end on a tiny model and its database."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from safesail_guard.cli import app

POLICY = """\
version: 1
name: tiny
description: flag anything that fires
rules:
  - name: flag_any
    action: flag
    when:
      select:
        domains: [violence, drugs, hate, sexual, self_harm, fraud]
      min_activation: 0.05
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dirs, llama_guard):
    root = tmp_path_factory.mktemp("cli")
    db = llama_guard.db.path
    pol = root / "tiny.yaml"
    pol.write_text(POLICY)
    return {"db": db, "model": str(tiny_model_dirs["llama"]), "policy": pol, "root": root}


def _args(setup):
    return ["--db", str(setup["db"]), "--model", setup["model"], "--policy", str(setup["policy"])]


def test_score_writes_one_record_per_line_and_isolates_errors(setup):
    src = setup["root"] / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"id": "a", "text": "Explain how vaccines work."}),
        "{broken",
        json.dumps({"id": "b", "messages": [{"role": "user", "content": "bake bread with yeast"}]}),
        json.dumps({"id": "c", "text": "   "}),
    ]) + "\n")
    out = setup["root"] / "out.jsonl"
    res = CliRunner().invoke(app, ["score", str(src), "-o", str(out), "--quiet", *_args(setup)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", "line 2", "b", "c"]
    assert "error" in recs[1] and "invalid JSON" in recs[1]["error"] and "empty" in recs[3]["error"]
    for r in (recs[0], recs[2]):
        assert 0 <= r["score"] <= 1 and r["decision"] in ("allow", "flag")
        assert set(r["concepts"]) and all(0 <= v <= 1 for v in r["concepts"].values())
        for f in r["top_features"]:
            assert {"id", "layer", "index", "activation", "explanation"} <= set(f)
    assert "2 error records" in res.output


def test_score_missing_file_and_bad_policy_are_one_line_errors(setup, tmp_path):
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "nope.jsonl"), "-o", str(out), *_args(setup)])
    assert res.exit_code == 2 and "no such file" in res.output
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("domains: [violence", "domains: [volence"))
    res = CliRunner().invoke(app, ["score", str(src), "-o", str(out), "--db", str(setup["db"]), "--model",
                                   setup["model"], "--policy", str(bad)])
    assert res.exit_code == 2 and "volence" in res.output and not out.exists()


def test_inspect_prints_a_table_and_json(setup):
    res = CliRunner().invoke(app, ["inspect", "Explain how vaccines work and bake bread.", "--all", *_args(setup)])
    assert res.exit_code == 0, res.output
    assert "safety features per token" in res.output and "risk score" in res.output
    res = CliRunner().invoke(app, ["inspect", "bread", "--json", *_args(setup)])
    body = json.loads(res.stdout)
    assert body["tokens"] and body["decision"]["action"] in ("allow", "flag") and 0 <= body["risk"]["score"] <= 1
    res = CliRunner().invoke(app, ["inspect", "  ", *_args(setup)])
    assert res.exit_code == 2 and "empty" in res.output


def test_model_database_mismatch_is_refused(setup, tiny_model_dirs):
    res = CliRunner().invoke(app, ["inspect", "hi", "--db", str(setup["db"]), "--model", str(tiny_model_dirs["qwen2"])])
    assert res.exit_code == 2 and "fingerprint" in res.output


def test_firing_option(setup):
    res = CliRunner().invoke(app, ["inspect", "bread", "--json", "--firing", "threshold", *_args(setup)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["inspect", "bread", "--firing", "fastest", *_args(setup)])
    assert res.exit_code == 2 and "--firing must be topk or threshold" in res.output
