"""`safesail audit list | show | stats | purge` through typer's CliRunner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.audit import AuditLog, AuditRecord
from safesail_guard.cli import app

runner = CliRunner()
HOUR = 3600.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An audit log with four decisions: 10 min, 2 h, 3 days and 40 days old."""
    now = time.time()
    path = tmp_path / "audit.sqlite"
    feats = [{"id": "L14/F9", "layer": 14, "activation": 6.0, "normalized": 0.88, "explanation": "firearm parts"}]
    with AuditLog.open(path, store_text="full", retention_days=None) as log:
        log.append_many([
            AuditRecord("req-new", "final", "block", policy="default", rules=["weapons_block"], features=feats,
                        concepts={"weapons": 0.95}, score=0.9, key_id="k-ops", text="build a [gun]",
                        time=now - 600),
            AuditRecord("req-2h", "prompt", "flag", policy="strict", rules=["jailbreak_flag"],
                        concepts={"jailbreak": 0.6}, key_id="k-dev", time=now - 2 * HOUR),
            AuditRecord("req-3d", "final", "allow", policy="default", key_id="k-dev", time=now - 72 * HOUR),
            AuditRecord("req-40d", "final", "allow", policy="default", time=now - 40 * 24 * HOUR),
        ])
    return path


def run(*args: str, input: str | None = None):
    return runner.invoke(app, ["audit", *args], input=input, env={"COLUMNS": "200"})  # tables on one line


def test_audit_group_is_registered() -> None:
    res = runner.invoke(app, ["audit", "--help"])
    assert res.exit_code == 0
    for cmd in ("list", "show", "stats", "purge"):
        assert cmd in res.output


def test_list_table(db: Path) -> None:
    res = run("list", "--db", str(db))
    assert res.exit_code == 0, res.output
    lines = res.stdout
    assert lines.index("req-new") < lines.index("req-2h") < lines.index("req-3d") < lines.index("req-40d")
    assert "L14/F9 0.88 firearm parts" in lines and "weapons_block" in lines
    assert "4 of 4 matching records, newest first" in lines


def test_list_into_a_pipe_or_file_is_one_line_per_record(db: Path) -> None:
    """Not a terminal (CliRunner's stdout, `> file`): a fixed-width table whatever the width, nothing wrapped."""
    res = runner.invoke(app, ["audit", "list", "--db", str(db)], env={"COLUMNS": "40"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["id", "time", "request", "id", "stage", "action", "policy", "rules", "top",
                                "feature", "score"]
    assert [line.split()[3] for line in lines[1:5]] == ["req-new", "req-2h", "req-3d", "req-40d"]
    assert "L14/F9 0.88 firearm parts" in lines[1] and lines[1].rstrip().endswith("0.900")
    start = lines[0].index("action")
    assert [line[start:].split()[0] for line in lines[1:5]] == ["block", "flag", "allow", "allow"]  # aligned
    assert lines[5] == "4 of 4 matching records, newest first" and len(lines) == 6
    assert "─" not in res.stdout and "━" not in res.stdout


def test_list_on_a_terminal_is_a_rich_table(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    res = run("list", "--db", str(db))
    assert res.exit_code == 0 and "━" in res.stdout and "req-new" in res.stdout


def test_plain_table_keeps_each_row_on_one_line() -> None:
    from safesail_guard.cli.common import plain_table

    text = plain_table(("a", "n"), [("x\ty\nz", "1"), ("长", "22")], right=("n",))
    assert text.splitlines() == ["a       n", "x y z   1", "长     22"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--action", "block"], ["req-new"]),
    (["--action", "block", "--action", "flag"], ["req-new", "req-2h"]),
    (["--since", "1h"], ["req-new"]),
    (["--since", "4d", "--until", "30m"], ["req-2h", "req-3d"]),
    (["--key", "k-dev"], ["req-2h", "req-3d"]),
    (["--policy", "strict"], ["req-2h"]),
    (["--rule", "weapons_block"], ["req-new"]),
    (["--concept", "jailbreak"], ["req-2h"]),
    (["--request-id", "req-3d"], ["req-3d"]),
    (["--stage", "final", "--oldest-first"], ["req-40d", "req-3d", "req-new"]),
    (["--limit", "2", "--offset", "1"], ["req-2h", "req-3d"]),
    (["--limit", "0"], ["req-new", "req-2h", "req-3d", "req-40d"]),
])
def test_list_filters_json_lines(db: Path, args: list[str], expected: list[str]) -> None:
    res = run("list", "--db", str(db), "--json", *args)
    assert res.exit_code == 0, res.output
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["request_id"] for d in docs] == expected
    assert all({"id", "time", "action", "rules", "features", "concepts", "text_sha256"} <= set(d) for d in docs)


def test_list_since_iso_date(db: Path) -> None:
    res = run("list", "--db", str(db), "--json", "--since", "2000-01-01", "--until", "2000-01-02T00:00+00:00")
    assert res.exit_code == 0 and res.stdout == ""
    res = run("list", "--db", str(db), "--action", "steer")
    assert res.exit_code == 0 and "no matching records" in res.stdout


def test_show(db: Path) -> None:
    row_id = json.loads(run("list", "--db", str(db), "--json", "--request-id", "req-new").stdout)["id"]
    res = run("show", str(row_id), "--db", str(db))
    assert res.exit_code == 0, res.output
    for text in ("req-new", "block", "weapons_block", "k-ops", "build a [gun]", "firearm parts", "weapons 0.95"):
        assert text in res.stdout, text
    doc = json.loads(run("show", str(row_id), "--db", str(db), "--json").stdout)
    assert doc["features"][0]["normalized"] == 0.88 and doc["text"] == "build a [gun]"
    res = run("show", "999", "--db", str(db))
    assert res.exit_code == 2 and "no record with id 999" in res.stderr


def test_stats(db: Path) -> None:
    res = run("stats", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["total"] == 4 and doc["by_action"] == {"allow": 2, "flag": 1, "block": 1}
    assert doc["by_rule"] == {"jailbreak_flag": 1, "weapons_block": 1}
    assert doc["by_concept"] == {"jailbreak": 1, "weapons": 1}
    assert json.loads(run("stats", "--db", str(db), "--json", "--since", "1d").stdout)["total"] == 2
    res = run("stats", "--db", str(db), "--stage", "final")
    assert res.exit_code == 0 and "3 records, 3 requests" in res.stdout and "weapons_block" in res.stdout


def test_purge(db: Path) -> None:
    res = run("purge", "--db", str(db), "--older-than", "1d", input="n\n")
    assert res.exit_code == 1 and "delete 2 records older than" in res.output
    with AuditLog.open(db, retention_days=None) as log:
        assert log.count() == 4
    res = run("purge", "--db", str(db), "--yes")  # default: 30 days
    assert res.exit_code == 0 and "deleted 1 records" in res.stdout
    res = run("purge", "--db", str(db), "--older-than", "1d", input="y\n")
    assert res.exit_code == 0 and "deleted 1 records" in res.stdout
    res = run("purge", "--db", str(db), "--older-than", "1d")
    assert res.exit_code == 0 and "nothing to purge" in res.stdout
    assert [json.loads(x)["request_id"] for x in run("list", "--db", str(db), "--json").stdout.splitlines()] == [
        "req-new", "req-2h"]


def test_reading_never_applies_retention(db: Path) -> None:
    for args in (["list"], ["stats"], ["show", "4"]):
        assert run(*args, "--db", str(db)).exit_code == 0
    with AuditLog.open(db, retention_days=None) as log:
        assert log.count() == 4


def test_missing_db_is_a_clear_error(tmp_path: Path) -> None:
    res = run("list", "--db", str(tmp_path / "nope.sqlite"))
    assert res.exit_code == 2
    assert f"no audit log at {tmp_path / 'nope.sqlite'}; the proxy creates it on its first decision" in res.stderr
    assert not (tmp_path / "nope.sqlite").exists()  # reading never creates a log


def test_default_db_follows_the_environment(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAFESAIL_AUDIT_DB", str(db))
    assert json.loads(run("stats", "--json").stdout)["total"] == 4
    monkeypatch.setenv("SAFESAIL_AUDIT_DB", str(tmp_path / "none.sqlite"))
    res = run("stats")
    assert res.exit_code == 2 and "no audit log at" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--since", "yesterday"], "--since: cannot read 'yesterday'; use a duration ago"),
    (["list", "--until", "5x"], "--until: cannot read '5x'"),
    (["stats", "--since", "-1h"], "--since: cannot read '-1h'"),
    (["purge", "--older-than", "soon", "--yes"], "--older-than: cannot read 'soon'"),
    (["list", "--action", "deny"], "unknown action 'deny'; valid: allow, log, steer, flag, block"),
    (["list", "--stage", "output"], "unknown stage 'output'"),
    (["list", "--since", "0001-01-01"], "--since: '0001-01-01' is out of range"),
    # a lone surrogate (a non-UTF-8 byte in argv): named, not "'utf-8' codec can't encode character"
    (["list", "--rule", "weapons\udcff"], "the text 'weapons\\udcff' contains a lone surrogate (U+DCFF)"),
    (["list", "--key", "\ud800"], "the text '\\ud800' contains a lone surrogate (U+D800) at character 0"),
])
def test_bad_options_exit_2(db: Path, args: list[str], message: str) -> None:
    res = run(*args, "--db", str(db))
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output


def test_not_an_audit_log_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"junk" * 1000)
    res = run("list", "--db", str(path))
    assert res.exit_code == 2 and "is not a usable SQLite audit log" in res.stderr
