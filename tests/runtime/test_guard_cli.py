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


# -- text no tokenizer can encode (a lone surrogate): refused by the CLI, naming what was wrong --------------------
def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # no traceback: the command exited on purpose
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    return lines[0]


def test_score_lone_surrogate_becomes_an_error_record_naming_line_and_field(setup):
    src = setup["root"] / "surrogates.jsonl"
    src.write_text("\n".join([  # json.dumps writes the surrogate as the escape "\ud800": valid JSON, invalid text
        json.dumps({"id": "ok", "text": "Explain how vaccines work."}),
        "",
        json.dumps({"id": "t", "text": "bake \ud800 bread"}),
        json.dumps({"id": "m", "messages": [{"role": "user", "content": "fine"},
                                            {"role": "user", "content": "x\udfff"}]}),
    ]) + "\n")
    out = setup["root"] / "surrogates.out.jsonl"
    res = CliRunner().invoke(app, ["score", str(src), "-o", str(out), "--quiet", *_args(setup)])
    assert res.exit_code == 0, res.output
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "score" in recs["ok"] and "error" not in recs["ok"]
    assert recs["t"]["error"].startswith("line 3: 'text' contains a lone surrogate (U+D800) at character 5")
    assert recs["m"]["error"].startswith("line 4: messages[1].")
    assert "lone surrogate" in recs["m"]["error"] and "U+DFFF" in recs["m"]["error"]
    assert "TextEncodeInput" not in out.read_text() and "2 error records" in res.stderr


@pytest.mark.parametrize("extra, what", [([], "TEXT"), (["--response", "fine \udcff"], "--response")])
def test_inspect_lone_surrogate_is_one_line_error(setup, extra, what):
    text = "bake \ud800 bread" if what == "TEXT" else "bake bread"  # \udcff: a non-UTF-8 byte in argv
    line = _one_error_line(CliRunner().invoke(app, ["inspect", text, *extra, *_args(setup)]))
    assert line.startswith(f"error: {what} contains a lone surrogate (U+{'D800' if what == 'TEXT' else 'DCFF'})")


def test_chat_refuses_unscannable_input_and_goes_on(setup, monkeypatch):
    from rich.console import Console

    line = _one_error_line(CliRunner().invoke(app, ["chat", "--system", "be \ud800 nice", *_args(setup)]))
    assert line.startswith("error: --system contains a lone surrogate (U+D800) at character 3")
    # a line with a lone surrogate (a terminal in a C locale decodes stray bytes that way), then a line that
    # is not UTF-8 at all: each is one error line, the chat goes on and ends at EOF; nothing is generated
    turns = iter(["hi \ud800 there", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])

    def fake_input(self, *_a, **_kw):
        turn = next(turns, None)
        if turn is None:
            raise EOFError
        if isinstance(turn, Exception):
            raise turn
        return turn

    monkeypatch.setattr(Console, "input", fake_input)
    res = CliRunner().invoke(app, ["chat", *_args(setup)])
    assert res.exit_code == 0 and res.exception is None, res.output
    assert "error: the message contains a lone surrogate (U+D800) at character 3" in res.stdout
    assert "error: the input is not UTF-8 text; the line was ignored" in res.stdout
    assert "bot>" not in res.stdout


def test_policy_test_lone_surrogate_in_a_case_is_named_by_line(setup):
    cases = setup["root"] / "cases.yaml"
    cases.write_text('cases:\n  - name: fine\n    prompt: bake bread\n    expect: allow\n'
                     '  - name: broken\n    prompt: "bake \\ud800 bread"\n    expect: allow\n')
    res = CliRunner().invoke(app, ["policy", "test", str(setup["policy"]), str(cases), "--db", str(setup["db"]),
                                   "--model", setup["model"]])
    line = _one_error_line(res)
    assert line.startswith(f"error: {cases}:6: cases[1].prompt: case 'broken' contains a lone surrogate (U+D800)")
