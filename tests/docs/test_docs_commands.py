"""Every `safesail` command and ``make`` target the docs show exists, and the commands parse: README.md,
policies/README.md and docs/ are read by `tests/docs/markdown.py`.

- Shell blocks hold full command lines: each parses against the typer app as click would before running it
  (unknown commands or options, missing arguments, bad values and ranges fail). Synopses (the README's command
  table, inline ``safesail ...`` spans) are checked for command and option names only.
- The cheap ones (`RUN`: ``db info/search/show``, ``policy validate/schema``, ``model check``,
  ``audit list/stats/purge`` on a temporary log, and every ``--help``) run and must exit 0; ``policy test`` on
  the example cases runs too (slow) and must pass as many cases as the README says.
- Every command's ``--help`` prints, names only real features, and ``safesail --help`` ends with the exit
  statuses the README documents.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from safesail_guard.cli import app
from tests.docs.markdown import (
    PLACEHOLDER,
    ROOT,
    SHELL_LANGS,
    Snippet,
    doc_files,
    is_safesail,
    shell_commands,
    snippets,
    synopsis_commands,
)
from tests.docs.shipped import shipped_feature_ids

DOCS = doc_files()
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]
runner = CliRunner()


# -- commands ---------------------------------------------------------------------------------------------------
@functools.cache
def root_command() -> Any:
    """The click command typer builds from the app (typer ships its own click: typed as Any here)."""
    return typer.main.get_command(app)


def is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def resolve(argv: tuple[str, ...]) -> tuple[Any, list[str], list[str]]:
    """``("safesail", "db", "show", "X")`` -> (the `show` command, ["db", "show"], ["X"]); an unknown
    sub-command raises AssertionError naming the valid ones."""
    cmd = root_command()
    path: list[str] = []
    rest = list(argv[1:])
    while is_group(cmd) and rest and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        assert sub is not None, (f"`safesail {' '.join(path)}` has no command {rest[0]!r}; valid: "
                                 f"{', '.join(sorted(cmd.commands))}")
        path.append(rest.pop(0))
        cmd = sub
    return cmd, path, rest


def check_names(argv: tuple[str, ...]) -> None:
    """The command exists and every ``--option`` in ``argv`` is one of its options."""
    cmd, path, rest = resolve(argv)
    known = {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
    for tok in rest:
        name = tok.split("=", 1)[0]
        if name.startswith("-") and not re.fullmatch(r"-\d[\d.]*", name):
            assert name in known, f"`safesail {' '.join(path)}` has no option {name}; valid: {sorted(known)}"


def parse(argv: tuple[str, ...]) -> None:
    """Parse ``argv`` as click would before running the command: options, arguments, types and ranges."""
    cmd, path, rest = resolve(argv)
    if "--help" in rest:  # click would print the help and exit: the names are all there is to check
        check_names(argv)
        return
    try:
        cmd.make_context(f"safesail {' '.join(path)}", list(rest))
    except typer.TyperException as exc:  # click's usage errors
        raise AssertionError(f"`{' '.join(argv)}` does not parse: {exc.format_message()}") from None


def normalize(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """A shell command as `safesail` argv (``.venv/bin/safesail``, ``python -m safesail_guard.cli``, synopsis
    brackets and ``...`` undone), or None when it runs something else."""
    argv = tuple(argv)
    while argv and argv[0] in ("nice", "/usr/bin/time", "time", "timeout"):
        argv = argv[1:]
        while argv and (argv[0].startswith("-") or argv[0].isdigit()):
            argv = argv[1:]
    if len(argv) > 2 and Path(argv[0]).name.startswith("python") and argv[1:3] == ("-m", "safesail_guard.cli"):
        argv = ("safesail", *argv[3:])
    if not is_safesail(argv):
        return None
    out = []
    for tok in argv:
        tok = tok.lstrip("[").rstrip("]")
        if tok and not tok.endswith("..."):
            out.append(tok)
    return tuple(out)


def _shell_text(snippet: Snippet) -> Snippet:
    """``<free>``-style placeholders in a shell block read as redirections: make them plain words."""
    return Snippet(snippet.path, snippet.line, snippet.lang,
                   re.sub(r"<([\w.-]+)>", r"PLACEHOLDER_\1", snippet.text))


def documented_commands(path: Path) -> list[tuple[str, tuple[str, ...], bool]]:
    """(where, argv, exact) for every `safesail` command in ``path``: ``exact`` for shell blocks (a full
    command line), not for synopses and inline spans (names only)."""
    out: list[tuple[str, tuple[str, ...], bool]] = []
    for snip in snippets(path):
        if snip.lang in SHELL_LANGS:
            for command in shell_commands(_shell_text(snip)):
                argv = normalize(command.argv)
                if argv is not None:
                    out.append((snip.where, argv, True))
        elif snip.lang in ("inline", "text", ""):
            group: tuple[str, ...] = ()
            for argv in synopsis_commands(snip):
                if argv[0] == "__sibling__":
                    argv = ("safesail", *group, *argv[1:])
                else:
                    try:
                        group = tuple(resolve(argv)[1][:-1])
                    except AssertionError:  # reported by test_documented_commands_exist_and_parse
                        group = ()
                out.append((snip.where, argv, False))
    return out


def has_placeholder(argv: tuple[str, ...]) -> bool:
    return any(PLACEHOLDER.match(tok) or tok.startswith("PLACEHOLDER_") for tok in argv[1:])


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_documented_commands_exist_and_parse(path: Path) -> None:
    commands = documented_commands(path)
    for where, argv, exact in commands:
        try:
            check_names(argv)
            if exact and not has_placeholder(argv):
                parse(argv)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None


RUN = {("db", "info"), ("db", "search"), ("db", "show"), ("policy", "validate"), ("policy", "schema"),
       ("model", "check"), ("audit", "list"), ("audit", "stats"), ("audit", "purge")}
"""Commands cheap enough to run wherever the docs show them (no model load, no build, no server)."""


def runnable_commands() -> list[tuple[str, ...]]:
    """Documented commands in `RUN` (or with ``--help``) that are complete: no placeholder, and they parse."""
    out: dict[tuple[str, ...], None] = {}
    for path in DOCS:
        for _, argv, _ in documented_commands(path):
            try:
                _, cmd_path, _ = resolve(argv)
            except AssertionError:
                continue
            if (tuple(cmd_path) in RUN or "--help" in argv) and not has_placeholder(argv):
                try:
                    parse(argv)
                except AssertionError:
                    continue  # a synopsis such as `safesail policy validate` (FILE missing): names checked above
                out[argv] = None
    return list(out)


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small audit log (a block on weapons and a flag, both recent) for the documented `audit` commands."""
    from safesail_guard.audit import AuditLog, AuditRecord

    path = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    now = time.time()
    with AuditLog.open(path, store_text="hash", retention_days=None) as log:
        log.append_many([
            AuditRecord("req-a", "final", "block", policy="default", rules=["block_terror_weapons"],
                        concepts={"weapons": 0.9}, score=0.95, time=now - 600),
            AuditRecord("req-b", "prompt", "flag", policy="default", rules=["non_english_prompt"], time=now - 60),
        ])
    return path


@pytest.mark.parametrize("argv", runnable_commands(), ids=lambda a: " ".join(a))
def test_cheap_documented_commands_run(argv: tuple[str, ...], audit_log: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # documented paths are relative to the checkout
    res = runner.invoke(app, list(argv[1:]), env={"SAFESAIL_AUDIT_DB": str(audit_log), "COLUMNS": "120"})
    assert res.exit_code == 0, f"`{' '.join(argv)}` exited {res.exit_code}:\n{res.output}"
    assert "Traceback" not in res.output


def test_runnable_set_is_not_empty() -> None:
    """The docs keep showing commands a reader can paste (a parser bug must not make the test above vacuous)."""
    ran = {tuple(resolve(argv)[1]) for argv in runnable_commands()}
    assert {("db", "show"), ("db", "search"), ("policy", "validate"), ("audit", "list")} <= ran, ran


def _all_commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if is_group(cmd):
            out += _all_commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", _all_commands(root_command()), ids=lambda p: " ".join(p) or "safesail")
def test_every_help_runs(path: tuple[str, ...]) -> None:
    """Every command's help prints, and a feature id it gives as an example exists."""
    from tests.docs.markdown import FEATURE_ID

    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    ids = {m.group(0) for m in FEATURE_ID.finditer(res.output)}
    assert ids <= shipped_feature_ids(), f"`safesail {' '.join(path)} --help` names unknown features {ids}"


def test_help_documents_the_exit_statuses() -> None:
    from safesail_guard.cli.common import EXIT_USAGE

    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert f"{EXIT_USAGE} bad input" in text and "never with a traceback" in text, res.output
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"exit status {EXIT_USAGE}" in readme


@pytest.mark.slow
def test_policy_test_example_passes_what_the_docs_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """README and docs/results/guard.md: "5 of its 8 cases pass" with the shipped database (embedded model)."""
    monkeypatch.chdir(ROOT)
    res = runner.invoke(app, ["policy", "test", "default", "policies/examples/cases.yaml", "--json"])
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(res.stdout)
    claim = "5 of its 8 cases pass"
    assert claim in " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (doc["passed"], doc["passed"] + doc["failed"]) == (5, 8), doc


# -- make targets ---------------------------------------------------------------------------------------------
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:", text, flags=re.M))


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_make_targets_exist(path: Path) -> None:
    targets = make_targets()
    for snip in snippets(path):
        if snip.lang in SHELL_LANGS:
            argvs = [c.argv for c in shell_commands(_shell_text(snip))]
        elif snip.lang == "inline" and snip.text.startswith("make "):
            argvs = [tuple(snip.text.split())]
        else:
            continue
        for argv in argvs:
            if argv and argv[0] == "make":
                goals = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
                for goal in goals:
                    assert goal in targets, f"{snip.where}: `make {goal}`: no such target in the Makefile"
