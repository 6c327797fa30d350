"""`safesail audit ...`: read the guard proxy's audit log - list and filter decisions, show one, stats, purge.

Every command reads the default audit log (``$SAFESAIL_AUDIT_DB``, else ``$XDG_STATE_HOME/safesail/audit.sqlite``)
unless ``--db`` names another. Reading never applies retention; ``purge`` does, after a confirmation. Times
are given as a duration ago (``30m``, ``1h``, ``2d``, ``1w``) or an ISO date/time (local time unless it has an
offset). Bad input (missing log, bad duration, unknown action) prints one red line on stderr and exits 2.
``list`` prints a rich table on a terminal and a fixed-width plain table (one line per record) when its
output is a pipe or a file.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safesail_guard.cli.common import console as _console
from safesail_guard.cli.common import fail as _fail
from safesail_guard.cli.common import plain_table
from safesail_guard.cli.common import user_errors as _user_errors

if TYPE_CHECKING:
    from rich.text import Text

    from safesail_guard.audit import AuditLog, AuditRow

app = typer.Typer(no_args_is_help=True)

AuditDbOption = Annotated[
    Path | None, typer.Option("--db", help="Audit log file (default: $SAFESAIL_AUDIT_DB, else "
                                           "$XDG_STATE_HOME/safesail/audit.sqlite).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
SinceOption = Annotated[str | None, typer.Option("--since", help="Only records at or after this time: a duration "
                                                                 "ago (30m, 1h, 2d, 1w) or an ISO date/time.")]
UntilOption = Annotated[str | None, typer.Option("--until", help="Only records before this time: a duration ago "
                                                                 "(30m, 1h, 2d, 1w) or an ISO date/time.")]
StageOption = Annotated[str | None, typer.Option("--stage", help="Only this stage: prompt, response or final "
                                                                 "(final = the verdict released to the client).")]

_ACTION_STYLES = {"allow": "green", "log": "cyan", "steer": "magenta", "flag": "yellow", "block": "bold red"}


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """``--since``-style text (duration ago or ISO date/time) -> seconds since the epoch; bad text -> `fail`."""
    from safesail_guard.audit.timespec import parse_duration, parse_iso

    now = time.time() if now is None else now
    seconds = parse_duration(text)
    if seconds is not None:
        return now - seconds
    try:
        when = parse_iso(text)
    except ValueError as e:
        _fail(f"{option}: {e}")
    if when is None:
        _fail(f"{option}: cannot read {text!r}; use a duration ago (45s, 30m, 1h, 2d, 1w) or an ISO date/time "
              "(2025-01-31, 2025-01-31T14:00, 2025-01-31T14:00+00:00)")
    return when


def _fmt_time(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@contextmanager
def _open(db: Path | None) -> Iterator[AuditLog]:
    """Open an existing audit log for reading (no retention); problems become `fail`."""
    from safesail_guard.audit import AuditLog, default_audit_path

    path = db if db is not None else default_audit_path()
    if not path.exists():
        _fail(f"no audit log at {path}; the proxy creates it on its first decision (or pass --db PATH)")
    with _user_errors():
        with AuditLog.open(path, retention_days=None) as log:
            yield log


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _action_text(action: str) -> Text:
    from rich.text import Text

    return Text(action, style=_ACTION_STYLES.get(action, ""))


def _feature_label(row: AuditRow, width: int = 40) -> str:
    f = row.top_feature
    if f is None:
        return "-"
    value = f.get("normalized", f.get("activation"))
    label = f"{f.get('id', '?')} {value:.2f}" if isinstance(value, int | float) else str(f.get("id", "?"))
    expl = f.get("explanation")
    if expl:
        label += f" {expl if len(expl) <= width else expl[: width - 1] + '…'}"
    return label


@app.command("list")
def list_cmd(
    db: AuditDbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    action: Annotated[list[str] | None, typer.Option("--action", help="Only this action (allow, log, steer, flag, "
                                                                      "block); repeat for several.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this client key id.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Only decisions under this policy.")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only decisions where this rule matched.")] = None,
    concept: Annotated[str | None, typer.Option("--concept", help="Only decisions scoring this concept >= 0.5 "
                                                                  "(e.g. weapons).")] = None,
    request_id: Annotated[str | None, typer.Option("--request-id", help="Only this request's decisions.")] = None,
    stage: StageOption = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show at most this many records (0 = all).")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many matching records first.")] = 0,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest records first (default: newest "
                                                                      "first).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per record (JSON lines).")] = False,
) -> None:
    """List decisions, newest first, filtered by time, action, key, policy, rule, concept, request or stage."""
    filters: dict[str, Any] = {
        "since": parse_time(since, "--since") if since is not None else None,
        "until": parse_time(until, "--until") if until is not None else None,
        "action": action or None, "key_id": key, "policy": policy, "rule": rule, "concept": concept,
        "request_id": request_id, "stage": stage,
    }
    with _open(db) as log:
        rows = log.query(**filters, limit=limit or None, offset=offset, newest_first=not oldest_first)
        total = log.count(**filters) if not as_json else len(rows)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        return
    from rich.table import Table

    con = _console()
    if not rows:
        con.print("no matching records")
        return
    columns = ("id", "time", "request id", "stage", "action", "policy", "rules", "top feature", "score")
    cells = [(str(row.id), _fmt_time(row.time), row.request_id, row.stage, row.action, row.policy or "-",
              ", ".join(row.rules) or "-", _feature_label(row), _fmt(row.score)) for row in rows]
    if not con.is_terminal:  # a pipe or a file: one line per record, whatever the width
        sys.stdout.write(plain_table(columns, cells, right=("id", "score")))
    else:
        table = Table(show_edge=False)
        for col in columns:
            table.add_column(col, justify="right" if col in ("id", "score") else "left",
                             no_wrap=col in ("id", "time", "request id", "stage", "action", "score"))
        for cell in cells:
            table.add_row(*cell[:4], _action_text(cell[4]), *cell[5:])
        con.print(table)
    order = "oldest" if oldest_first else "newest"
    con.print(f"{len(rows)} of {total} matching records, {order} first"
              + ("; use --limit/--offset for more" if offset + len(rows) < total else ""))


@app.command("show")
def show(
    row_id: Annotated[int, typer.Argument(metavar="ROW_ID", help="Row id of the record (the `id` column of "
                                                                 "`safesail audit list`).")],
    db: AuditDbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one decision in full: verdict, rules, features with activations, concepts, text or its hash."""
    with _open(db) as log:
        row = log.get(row_id)
        path = log.path
    if row is None:
        _fail(f"no record with id {row_id} in {path}")
    if as_json:
        _print_json(row.to_dict())
        return
    from rich.table import Table

    con = _console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    text = row.text if row.text is not None else (
        "(not stored; only its hash)" if row.text_sha256 else "(not stored)")
    for key, value in [
        ("id", str(row.id)), ("time", f"{_fmt_time(row.time)} ({row.time:.3f})"), ("request id", row.request_id),
        ("stage", row.stage), ("action", _action_text(row.action)), ("policy", row.policy or "-"),
        ("rules", ", ".join(row.rules) or "-"), ("score", _fmt(row.score)), ("key id", row.key_id or "-"),
        ("model", row.model or "-"), ("mode", row.mode), ("endpoint", row.endpoint or "-"),
        ("latency", "-" if row.latency_ms is None else f"{row.latency_ms:.1f} ms"),
        ("text sha256", row.text_sha256 or "-"), ("text", text),
    ]:
        grid.add_row(key, value)
    con.print(grid)
    if row.concepts:
        concepts = sorted(row.concepts.items(), key=lambda kv: -(kv[1] if kv[1] is not None else -1.0))
        con.print("concepts: " + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in concepts))
    if row.features:
        table = Table(show_edge=False, title="features")
        for col in ("id", "layer", "activation", "normalized", "explanation"):
            table.add_column(col)
        for f in row.features:
            table.add_row(str(f.get("id", "-")), str(f.get("layer", "-")), _num(f.get("activation")),
                          _num(f.get("normalized")), str(f.get("explanation") or "-"))
        con.print(table)
    if row.extra:
        con.print("extra: " + json.dumps(row.extra, ensure_ascii=False))


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


@app.command("stats")
def stats(
    db: AuditDbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    stage: StageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Count decisions by action, stage, rule and concept (concept = scored >= 0.5)."""
    with _open(db) as log:
        doc = log.stats(since=parse_time(since, "--since") if since is not None else None,
                        until=parse_time(until, "--until") if until is not None else None, stage=stage)
    if as_json:
        _print_json(doc)
        return
    from rich.table import Table

    con = _console()
    con.print(f"{doc['total']} records, {doc['requests']} requests, from {_fmt_time(doc['first_time'])} to "
              f"{_fmt_time(doc['last_time'])}")
    for title, counts in (("action", doc["by_action"]), ("stage", doc["by_stage"]), ("rule", doc["by_rule"]),
                          ("concept", doc["by_concept"])):
        if not counts:
            continue
        table = Table(show_edge=False)
        table.add_column(title)
        table.add_column("records", justify="right")
        for name, n in counts.items():
            table.add_row(_action_text(name) if title == "action" else name, str(n))
        con.print(table)


def _default_retention() -> str:
    from safesail_guard.audit import AuditConfig

    days = AuditConfig.model_fields["retention_days"].default
    return f"{days:g}d"


@app.command("purge")
def purge(
    db: AuditDbOption = None,
    older_than: Annotated[str | None, typer.Option("--older-than", help="Delete records older than this: a "
                                                                        "duration (30d, 12h) or an ISO date/time "
                                                                        "(default: 30d, the default retention).")
                          ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Apply retention: delete records older than a cutoff (the only way records leave the log)."""
    spec = older_than if older_than is not None else _default_retention()
    cutoff = parse_time(spec, "--older-than")
    con = _console()
    with _open(db) as log:
        n = log.count(until=cutoff)
        if n == 0:
            con.print(f"nothing to purge: no record before {_fmt_time(cutoff)} in {log.path}")
            return
        if not yes:
            typer.confirm(f"delete {n} records older than {_fmt_time(cutoff)} from {log.path}?", abort=True)
        deleted = log.purge_before(cutoff)
        con.print(f"deleted {deleted} records older than {_fmt_time(cutoff)} from {log.path}")
