"""`safesail policy ...`: check a policy file, test it on example conversations, print its JSON schema.

``validate`` loads and compiles a policy against a neuron database (the shipped one unless ``--db``);
``test`` scans every case of a cases file with the guard and compares decisions; ``schema`` prints the JSON
schema of the policy grammar. Bad input prints one red line per problem on stderr (``file:line: field:
message``) and exits 2; ``test`` exits 1 when a case does not get the decision it expects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safesail_guard.cli.common import DbOption
from safesail_guard.cli.common import console as _console
from safesail_guard.cli.common import fail as _fail
from safesail_guard.cli.common import open_db as _open
from safesail_guard.cli.common import user_errors as _user_errors

if TYPE_CHECKING:
    from safesail_guard.policy import CompiledPolicy
    from safesail_guard.policy.cases import CaseResult, Scanner
    from safesail_neuron_db import NeuronDB

app = typer.Typer(help="Validate, test and describe guard policies (YAML).", no_args_is_help=True)

EXIT_MISMATCH = 1
"""Exit status of `policy test` when some case did not get the expected decision."""

PolicyArg = Annotated[
    str, typer.Argument(metavar="FILE", help="Policy YAML file, or the name of a shipped policy (default, monitor, "
                                             "strict).")
]


def _policy_file(file: str) -> Path:
    """A shipped policy name (``default``) or an existing path -> the policy file."""
    from safesail_policies import policy_path

    return policy_path(file)


def _compile(file: str, handle: NeuronDB) -> CompiledPolicy:
    from safesail_guard.events import FeatureCatalog
    from safesail_guard.policy import compile_policy, load_policy

    with _user_errors():
        from safesail_guard.runtime.detection_head import scorer_from_db

        catalog = FeatureCatalog.from_db(handle)
        return compile_policy(load_policy(_policy_file(file)), catalog, scorer_from_db(handle, catalog))


@app.command("validate")
def validate(file: PolicyArg, db: DbOption = None) -> None:
    """Load a policy and compile it against the database: unknown features, contradictions, bad fields."""
    from rich.table import Table
    from rich.text import Text

    with _open(db) as handle:
        compiled = _compile(file, handle)
    con = _console()
    watched = compiled.watched_features
    con.print(Text(f"OK {file}: policy {compiled.name!r}, {len(compiled.rule_names)} rules, watches "
                   f"{len(watched)} features at layers {', '.join(map(str, compiled.layers))}", style="bold green"))
    table = Table(show_edge=False)
    for col in ("rule", "kind", "action", "features", "summary"):
        table.add_column(col)
    for row in _rule_rows(compiled):
        table.add_row(*row)
    con.print(table)
    for warning in compiled.warnings:
        con.print(Text(f"warning: {warning}", style="yellow"))


def _rule_rows(compiled: CompiledPolicy) -> list[tuple[str, str, str, str, str]]:
    """One table row per rule, in file order."""
    rows: dict[str, tuple[str, str, str, str, str]] = {}
    for r in compiled.rules:
        n = len(r.features | {op.feature_id for op in r.steer})
        summary = r.describe()
        if r.steer:
            summary += f"; steers {len(r.steer)} features"
        rows[r.name] = (r.name, r.kind, r.action, str(n), summary)
    for d in compiled.dampers:
        rows[d.name] = (d.name, "over_refusal", "damp", str(len(d.features)),
                        f"x{d.factor:g} on {d.selection} when the prompt has {len(d.keywords)} context terms")
    for lr in compiled.language_rules:
        rows[lr.name] = (lr.name, "multilingual_gap", lr.action, "-",
                         f"prompt not in {', '.join(sorted(lr.strong_languages))} (confidence >= "
                         f"{lr.min_confidence:g})" + ("; pivot" if lr.pivot else ""))
    for rr in compiled.risk_rules:
        rows[rr.name] = (rr.name, "risk", rr.action, str(len(rr.weights)),
                         f"{rr.domain + ' ' if rr.domain else ''}risk score >= {rr.min_score:g} on "
                         f"{' + '.join(sorted(rr.scopes))}")
    return [rows[name] for name in compiled.rule_names]


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of policy files (for editors and CI linters)."""
    from safesail_guard.policy import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command("test")
def test_cmd(
    file: PolicyArg,
    cases_file: Annotated[Path, typer.Argument(metavar="CASES.yaml", help="Cases: conversations and the decision "
                                                                          "each should get (see policies/README.md).")],
    db: DbOption = None,
    model: Annotated[str, typer.Option("--model", help="Model to scan with: 'embedded', a HF directory, a .gguf or "
                                                       "a cached HF id. Must match the database.")] = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Scan every case with the guard under the policy; exit 1 if any case gets an unexpected decision."""
    from safesail_guard.policy.cases import check_expected_rules, load_cases, run_cases

    with _open(db) as handle:
        compiled = _compile(file, handle)
        with _user_errors():
            cases = load_cases(cases_file)
            check_expected_rules(cases, compiled)
            _check_case_texts(cases)
        scanner = _make_scanner(handle, model)
        with _user_errors():  # what the guard refuses in a case (e.g. a bad message) is bad input too
            results = run_cases(cases, compiled, scanner)
    failed = report(results, compiled, as_json=as_json)
    if failed:
        raise typer.Exit(EXIT_MISMATCH)


def _check_case_texts(cases: Any) -> None:
    """`PolicyError` (``file:line: field: message``) for case text the guard cannot scan (a lone surrogate from a
    ``"\\ud800"`` escape): found here, before the model loads, and named by its line."""
    from safesail_guard.cli.common import text_problem
    from safesail_guard.policy.loader import PolicyError, SourceMap

    source = cases._source if isinstance(cases._source, SourceMap) else SourceMap("<cases>", None)
    issues = []
    for i, case in enumerate(cases.cases):
        texts: list[tuple[tuple[Any, ...], Any]] = [(("prompt",), case.prompt), (("response",), case.response)]
        texts += [(("messages", j, "content"), m.get("content")) for j, m in enumerate(case.messages or ())]
        for loc, text in texts:
            problem = text_problem(text, f"case {case.name!r}") if isinstance(text, str) else None
            if problem is not None:
                issues.append(source.issue(("cases", i, *loc), problem))
    if issues:
        raise PolicyError(issues)


def _make_scanner(handle: NeuronDB, model: str) -> Scanner:
    """The real guard on ``model`` (heavy imports happen here, only for `policy test`)."""
    from safesail_guard.models import ModelLoadError, load_model
    from safesail_guard.runtime.guard import Guard

    try:
        loaded = load_model(model)
    except (ModelLoadError, OSError, ValueError) as exc:
        _fail(str(exc))
    with _user_errors():
        return Guard.from_db(handle, model=loaded)


def report(results: list[CaseResult], compiled: CompiledPolicy, *, as_json: bool = False) -> int:
    """Print the results table (or JSON) and the details of every mismatch; returns the number failed."""
    from rich.table import Table
    from rich.text import Text

    from safesail_guard.policy.cases import mismatch_details

    failed = [r for r in results if not r.passed]
    if as_json:
        doc: dict[str, Any] = {"policy": compiled.name, "passed": len(results) - len(failed), "failed": len(failed),
                               "cases": [r.to_dict() for r in results]}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return len(failed)
    con = _console()
    table = Table(show_edge=False, title=f"policy {compiled.name!r}")
    for col in ("case", "expect", "got", "result", "rules"):
        table.add_column(col)
    for r in results:
        mark = Text("PASS", style="green") if r.passed else Text("FAIL", style="bold red")
        table.add_row(r.case.name, r.case.expect, r.got, mark, ", ".join(r.decision.rules()) or "-")
    con.print(table)
    for r in failed:
        con.print(Text(f"\n{r.case.name}", style="bold red"))
        for line in mismatch_details(r, compiled):
            con.print(line)
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    con.print(Text(summary, style="bold red" if failed else "bold green"))
    return len(failed)
