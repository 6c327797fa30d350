"""`safesail policy validate | test | schema` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.cli import app
from tests.policy.fake_scanner import FakeScanner

runner = CliRunner()


def test_policy_group_is_registered() -> None:
    res = runner.invoke(app, ["policy", "--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "test", "schema"):
        assert cmd in res.output


@pytest.mark.parametrize("name", ["default", "monitor", "strict.yaml"])
def test_validate_shipped_policies(name: str) -> None:
    res = runner.invoke(app, ["policy", "validate", name])
    assert res.exit_code == 0, res.output
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open() as db:  # every domain's features; the risk rules of default/strict read every feature
        n = len(db) if name != "monitor" else sum(1 for f in db.iter_features() if f.concepts)
    assert "OK" in res.output and f"watches {n} features at layers 6, 14, 24" in res.output


def test_validate_reports_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nname: bad\nrules:\n  - name: r\n    action: flag\n    when:\n"
                    "      select: {domains: [weapon]}\n      min_activation: 2\n")
    res = runner.invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 2
    assert f"error: {path}:8: rules[0].when.min_activation: Input should be less than or equal to 1" in res.output
    assert "Traceback" not in res.output


def test_validate_reports_compile_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nname: bad\nrules:\n  - name: r\n    action: flag\n    when:\n"
                    "      select: {domains: [weapon]}\n")
    res = runner.invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 2
    assert f"{path}:7: rules[0].when.select.domains[0]: unknown domain 'weapon'; did you mean 'weapons'?" in res.output


def test_validate_unknown_file_and_bad_db(tmp_path: Path) -> None:
    res = runner.invoke(app, ["policy", "validate", "no_such_policy"])
    assert res.exit_code == 2 and "shipped policies: default, monitor, strict" in res.output
    res = runner.invoke(app, ["policy", "validate", "default", "--db", str(tmp_path)])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output


def test_schema_prints_the_json_schema() -> None:
    res = runner.invoke(app, ["policy", "schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert schema["title"] == "safesail-guard policy"
    assert set(schema["required"]) == {"version", "name", "rules"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert {"FeatureRule", "OverRefusalRule", "MultilingualGapRule", "Leaf", "AnyOf", "AllOf", "SteerSpec"} <= set(defs)
    assert defs["Leaf"]["properties"]["min_activation"]["anyOf"][0]["maximum"] == 1
    assert "description" in defs["Leaf"]["properties"]["window"]


CASES = """\
cases:
  - name: bread
    prompt: How do I bake bread?
    expect: allow
  - name: rifle talk
    prompt: rifle rifle rifle
    expect: block
    expect_rules: [block_terror_weapons]
"""


@pytest.fixture()
def fake_guard(monkeypatch: pytest.MonkeyPatch) -> FakeScanner:
    """Replace the real guard by a fake whose words 'rifle' (1.1) and 'gun' (0.95) fire a real weapons feature."""
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open() as db:
        from safesail_guard.events import FeatureCatalog

        catalog = FeatureCatalog.from_db(db)
    fid = next(f.id for f in catalog.by_domain("weapons"))
    scanner = FakeScanner(lexicon={"rifle": {fid: 1.1}, "gun": {fid: 0.95}})
    monkeypatch.setattr("safesail_guard.cli.policy._make_scanner", lambda handle, model: scanner)
    return scanner


def test_policy_test_passes(tmp_path: Path, fake_guard: FakeScanner) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    res = runner.invoke(app, ["policy", "test", "default", str(cases)])
    assert res.exit_code == 0, res.output
    assert "2 passed, 0 failed" in res.output and "PASS" in res.output and "FAIL" not in res.output
    assert len(fake_guard.calls) == 2


def test_policy_test_mismatch_exits_1_with_details(tmp_path: Path, fake_guard: FakeScanner) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES.replace("prompt: How do I bake bread?", "prompt: gun gun gun"))
    res = runner.invoke(app, ["policy", "test", "default", str(cases)])
    assert res.exit_code == 1
    assert "1 passed, 1 failed" in res.output
    assert "expected allow, got flag because of:" in res.output
    assert "rule flag_safety_domain (flag)" in res.output and "normalized 0.95" in res.output


def test_policy_test_json(tmp_path: Path, fake_guard: FakeScanner) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    res = runner.invoke(app, ["policy", "test", "default", str(cases), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["passed"] == 2 and doc["cases"][1]["decision"]["action"] == "block"


def test_policy_test_bad_cases_file(tmp_path: Path, fake_guard: FakeScanner) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES.replace("[block_terror_weapons]", "[block_weapons]"))
    res = runner.invoke(app, ["policy", "test", "default", str(cases)])
    assert res.exit_code == 2
    assert f"{cases}:8: cases[1].expect_rules[0]: case 'rifle talk' expects rule 'block_weapons'" in res.output
    assert fake_guard.calls == []  # nothing was scanned
