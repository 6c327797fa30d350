"""`safesail db ...`: look inside a neuron database - info, search, show one feature, export.

Every command reads the shipped database unless ``--db`` names another. Bad input (unknown feature, missing or
corrupt database, bad option) prints one red line on stderr and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safesail_guard.cli.common import DbOption
from safesail_guard.cli.common import console as _console
from safesail_guard.cli.common import fail as _fail
from safesail_guard.cli.common import open_db as _open
from safesail_guard.cli.common import user_errors as _user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from safesail_neuron_db import FeatureView, NeuronDB

app = typer.Typer(no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

# background per activation level 1..10, pale to strong (level 0 is unstyled)
_LEVEL_STYLES = [f"black on rgb(255,{int(238 - 19 * lv)},{int(225 - 21 * lv)})" for lv in range(1, 11)]


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _head_line(spec: dict | None) -> str:
    if spec is None:
        return "none (the old sparse risk head is used, if any)"
    agg, cal = spec.get("aggregation", {}), spec.get("calibration", {})
    lat = spec.get("latents", {})
    return (f"{agg.get('kind')} over {agg.get('window')} tokens; {sum(lat.values())} weighted features "
            f"({', '.join(f'L{k} {v}' for k, v in sorted(lat.items(), key=lambda kv: int(kv[0])))}); "
            f"flag_at {_fmt(cal.get('flag_at'))}, block_at {_fmt(cal.get('block_at'))} "
            f"(flag {_fmt(cal.get('flag_fpr'), 2)} / block {_fmt(cal.get('block_fpr'), 2)} of safe training prompts)")


@app.command("info")
def info(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Model, site, layers, feature counts per layer and domain, explanation and score summaries."""
    from rich.table import Table

    with _open(db) as handle:
        doc = handle.info()
    if as_json:
        _print_json(doc)
        return
    con = _console()
    s = doc["scores"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in [
        ("database", doc["path"]),
        ("model", f"{doc['model']['name']} ({doc['model']['source']}), fingerprint {doc['model']['fingerprint'][:16]}"),
        ("site", doc["site"]),
        ("layers", ", ".join(str(ly) for ly in doc["layers"])),
        ("features", str(doc["counts"]["features"])),
        ("explanations", ", ".join(f"{k} {v}" for k, v in doc["explanations"].items())),
        ("median corr", f"token {_fmt(s['median_token_corr'])} (n={s['n_token_corr']}), "
                        f"segment {_fmt(s['median_segment_corr'])} (n={s['n_segment_corr']})"),
        ("median SpScore", _fmt(s["median_sp_score"], 2)),
        ("scorers", ", ".join(s["scorers"]) or "-"),
        ("map", doc["map_method"]),
        ("built by", f"{doc['created_by']}, seed {doc['seed']}, schema v{doc['schema_version']}"),
        ("detection head", _head_line(doc.get("detection_head"))),
    ]:
        grid.add_row(key, value)
    con.print(grid)
    counts = Table(title="features per layer / domain", show_edge=False)
    counts.add_column("layer", justify="right")
    counts.add_column("n", justify="right")
    counts.add_column("domain")
    counts.add_column("n", justify="right")
    layers = list(doc["counts"]["per_layer"].items())
    domains = list(doc["counts"]["per_domain"].items())
    for i in range(max(len(layers), len(domains))):
        ly = layers[i] if i < len(layers) else ("", "")
        dm = domains[i] if i < len(domains) else ("", "")
        counts.add_row(str(ly[0]), str(ly[1]), str(dm[0]), str(dm[1]))
    con.print(counts)


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Words to look for in ids, explanations and concept names.")],
    limit: Annotated[int, typer.Option("--limit", help="Most results to show.")] = 20,
    layer: Annotated[int | None, typer.Option("--layer", help="Only features of this layer.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Only features with a concept in this domain.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Full-text search over features, best match first."""
    from rich.table import Table

    with _open(db) as handle, _user_errors():
        hits = handle.search(query, limit=limit, layer=layer, domain=domain)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    con = _console()
    if not hits:
        con.print(f"no features match {query!r}")
        return
    table = Table(show_edge=False)
    for name, justify in [("#", "right"), ("feature", "left"), ("domain", "left"), ("score", "right"),
                          ("token r", "right"), ("explanation / concepts", "left")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, h in enumerate(hits, 1):
        text = h.explanation if h.explanation is not None else f"[{h.explanation_status}] {h.concepts}"
        table.add_row(str(i), h.id, h.domain or "-", f"{h.score:.2f}", _fmt(h.token_corr, 2), text)
    con.print(table)


@app.command("show")
def show(
    fid: Annotated[str, typer.Argument(metavar="FEATURE_ID", help="Feature id '<layer>_<latent>', e.g. 14_21.")],
    examples: Annotated[int, typer.Option("--examples", min=0, help="Activation examples to show.")] = 3,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One feature: explanation, concepts, scores and activation examples coloured by level."""
    with _open(db) as handle, _user_errors():
        view = handle.get(fid)
    if as_json:
        doc = view.to_dict()
        doc["examples"] = doc["examples"][:examples]
        _print_json(doc)
        return
    _render_feature(_console(), view, examples)


def _render_feature(con: Console, v: FeatureView, n_examples: int) -> None:
    from rich.table import Table
    from rich.text import Text

    head = Text(v.id, style="bold")
    head.append(f"  layer {v.layer} · latent {v.latent} · domain {v.domain or '-'}", style="dim")
    con.print(head)
    if v.explanation is not None:
        con.print(Text(v.explanation, style="bold cyan"))
    else:
        con.print(Text(f"no explanation ({v.explanation_status}) {v.explanation_detail}".rstrip(), style="yellow"))
    if v.explainer:
        con.print(Text(f"explainer: {v.explainer}", style="dim"))
    where = "-" if v.map_x is None else f"({v.map_x:.2f}, {v.map_y:.2f})"
    con.print(f"threshold {v.threshold:.4g} · max act {v.max_act:.4g} · fire rate {v.fire_rate:.3%} · "
              f"SpScore {_fmt(v.sp_score, 1)} · map {where}")

    concepts = Table(title="concepts", show_edge=False, title_justify="left")
    for name in ("domain", "concept", "precision", "recall", "pairs", "fires c/d"):
        concepts.add_column(name, justify="left" if name in ("domain", "concept") else "right")
    for c in v.concepts:
        concepts.add_row(c.level0, c.level1, f"{c.precision:.3f}", f"{c.recall:.3f}", str(c.n_pairs),
                         f"{c.concept_fires}/{c.deconcept_fires}")
    con.print(concepts)

    scores = Table(title="scores", show_edge=False, title_justify="left")
    scores.add_column("kind", no_wrap=True)
    scores.add_column("scorer", no_wrap=True)  # simulator names must stay whole
    scores.add_column("value", justify="right", no_wrap=True)
    scores.add_column("status", no_wrap=True)
    scores.add_column("ex/units", justify="right", no_wrap=True)
    scores.add_column("tokens", justify="right", no_wrap=True)
    details: list[str] = []
    for s in v.simulation_scores:
        scores.add_row(s.method, s.simulator, _fmt(s.corr), s.status, f"{s.n_examples}/{s.n_units}",
                       f"{s.prompt_tokens}/{s.generated_tokens}")
        if s.detail:
            details.append(f"{s.method} {s.simulator}: {s.detail}")
    if v.superposition is not None:
        sp = v.superposition
        scores.add_row("sp", sp.method, _fmt(sp.value, 2), sp.status, "", f"{sp.prompt_tokens}/{sp.completion_tokens}")
        if sp.detail:
            details.append(f"sp {sp.method}: {sp.detail}")
    con.print(scores)
    for line in details:
        con.print(Text(f"  {line}", style="dim"))

    shown = v.examples[:n_examples]
    if shown:
        con.print(Text(f"examples ({len(shown)} of {len(v.examples)}; background = activation level 1-10)",
                       style="bold"))
    for e in shown:
        con.print(Text(f"{e.kind} · max {e.max_act:.3g} · level {e.level}" + (f" · {e.source}" if e.source else ""),
                       style="dim"))
        line = Text("  ")
        for tok, level in zip(e.tokens, e.levels):
            piece = tok.replace("\n", "↵")
            line.append(piece, style=_LEVEL_STYLES[min(level, 10) - 1] if level > 0 else "")
        con.print(line)


@app.command("export")
def export_cmd(
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one object per feature) or csv (one row per feature).")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: stdout); written atomically.")] = None,
    db: DbOption = None,
) -> None:
    """Export every feature as JSON Lines or CSV."""
    from safesail_neuron_db import EXPORT_FORMATS, export

    if fmt not in EXPORT_FORMATS:
        _fail(f"unknown --format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    with _open(db) as handle, _user_errors():
        if out is None:
            try:
                export(handle, fmt, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. `safesail db export | head`: the reader left, nothing to report
                _silence_stdout()
            return
        n = _export_to_file(handle, fmt, out)
    _console(stderr=True).print(f"wrote {n} features to {out}")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _export_to_file(handle: NeuronDB, fmt: str, out: Path) -> int:
    """Export into a temp file next to ``out``, fsync it, then rename it over ``out``."""
    from safesail_neuron_db import export

    target = out.absolute()
    if target.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            n = export(handle, fmt, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


@app.command("report")
def report_cmd(
    db: DbOption = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="The build directory (for its summary, style check and timings).")] = Path("runs/smollm2-135m-instruct"),
    out: Annotated[Path, typer.Option("--out", help="Markdown file to write; PNGs go beside it.")] = Path("docs/results/neuron_db.md"),
) -> None:
    """Write the results page of a database build (markdown + plots)."""
    from safesail_neuron_db import default_database_path
    from safesail_training.db_report import write_report

    with _user_errors():
        path = write_report(db or default_database_path(), work_dir, out)
    print(f"wrote {path}")
