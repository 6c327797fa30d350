"""Runtime guard commands: `score` (JSONL batch), `inspect` (per-token table), `chat` (terminal chat).

Each command builds a `Guard` from ``--db`` (default: the shipped database) and ``--model`` (default: the
embedded SmolLM2); a database built for another model is refused. Bad input prints one red line, exit 2; text
that cannot be scanned (a lone surrogate, see `common.text_problem`) is refused naming the argument (or, in
`chat`, the turn; in `score`, the input line) before it reaches the tokenizer.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from safesail_guard.cli.common import check_text, text_problem, user_error_types, user_errors
from safesail_guard.cli.common import fail as _fail

DB_HELP = "Neuron database directory (default: the shipped database for the embedded model)."
MODEL_HELP = "'embedded', a HF model directory, a .gguf file, or a cached HF id (must match the database)."
POLICY_HELP = "Policy: a shipped name (default, monitor, strict) or a YAML file."
FIRING_HELP = ("Firing rule: topk (exact, the default when the database ships its competition file) or threshold "
               "(per-feature thresholds: faster, agrees with TopK on far fewer firings).")


def _guard(db: Path | None, model: str, firing: str | None = None) -> Any:
    from safesail_guard.runtime.guard import Guard

    if firing not in (None, "topk", "threshold"):
        raise ValueError(f"--firing must be topk or threshold, got {firing!r}")
    return Guard.from_db(db, model, firing=firing)  # type: ignore[arg-type]


def score(
    input_path: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="JSONL: {\"id\", \"text\"} or {\"id\", \"messages\"} per line ('-' = stdin).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output JSONL (written atomically).")],
    db: Annotated[Path | None, typer.Option(help=DB_HELP)] = None,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "default",
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "embedded",
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="Prompts per forward pass.")] = 8,
    firing: Annotated[str | None, typer.Option(help=FIRING_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Score prompts: risk score in [0, 1], policy decision, per-domain scores and the features behind them."""
    import json

    from safesail_guard.runtime.batch_score import parse_jsonl, score_items

    try:
        if str(input_path) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            if not input_path.is_file():
                _fail(f"{input_path}: no such file")
            lines = input_path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as e:
        _fail(f"{input_path}: not UTF-8 text ({e})")
    items = list(parse_jsonl(lines))  # a record with a lone surrogate becomes an error record naming its line
    if not items:
        _fail(f"{input_path}: no records (expected one JSON object per line)")
    with user_errors():
        guard = _guard(db, model, firing)
        compiled = guard.compile(policy)
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc="scoring", unit="prompt", disable=quiet, file=sys.stderr)
    with user_errors():
        records = score_items(guard, items, policy=compiled, batch_size=batch_size, progress=bar.update)
    bar.update(len(items) - bar.n)
    bar.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    errors = sum("error" in r for r in records)
    flagged: dict[str, int] = {}
    for r in records:
        if r.get("decision"):
            flagged[r["decision"]] = flagged.get(r["decision"], 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(flagged.items()))
    print(f"scored {len(records) - errors} prompts ({summary}); {errors} error records; wrote {output}",
          file=sys.stderr)


def inspect(
    text: Annotated[str, typer.Argument(help="A user prompt (the chat template is applied).")],
    db: Annotated[Path | None, typer.Option(help=DB_HELP)] = None,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "default",
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "embedded",
    response: Annotated[str | None, typer.Option(help="Also scan this assistant response.")] = None,
    top: Annotated[int, typer.Option(min=1, max=10, help="Features shown per token.")] = 3,
    all_tokens: Annotated[bool, typer.Option("--all", help="Show tokens where nothing fired too.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    firing: Annotated[str | None, typer.Option(help=FIRING_HELP)] = None,
) -> None:
    """Show, token by token, which safety features fire on TEXT and what the policy decides."""
    import json

    from rich.console import Console
    from rich.table import Table

    if not text.strip():
        _fail("TEXT is empty")
    check_text(text, "TEXT")
    if response is not None:
        check_text(response, "--response")
    with user_errors():
        guard = _guard(db, model, firing)
        result = guard.scan(text, policy=policy, response=response)
    if json_out:
        print(json.dumps({"tokens": [t.to_dict() for t in result.tokens],
                          "decision": result.decision.to_dict() if result.decision else None,
                          "risk": result.risk.to_dict() if result.risk else None}, ensure_ascii=False, indent=1))
        return
    console = Console()
    table = Table(title=f"safety features per token ({guard.firing} firing, {len(guard.catalog)} features)")
    for col in ("pos", "scope", "token", "feature", "act (norm)", "explanation"):
        table.add_column(col, overflow="fold")
    for t in result.tokens:
        if not t.content or (not t.hits and not all_tokens):
            continue
        hits = t.hits[:top] or [None]
        for j, h in enumerate(hits):
            info = guard.catalog[h.feature_id] if h is not None else None
            table.add_row(str(t.position) if j == 0 else "", t.scope if j == 0 else "", repr(t.text) if j == 0 else "",
                          h.feature_id if h else "-", f"{h.activation:.2f} ({h.normalized:.2f})" if h else "",
                          (info.explanation or "")[:90] if info else "")
    console.print(table)
    if result.risk is not None:
        worst = sorted(result.risk.concepts.items(), key=lambda kv: -kv[1])[:3]
        console.print(f"risk score [bold]{result.risk.score:.3f}[/bold]; top domains: "
                      + ", ".join(f"{d} {s:.2f}" for d, s in worst))
    if result.decision is not None:
        console.print(result.decision.explain())


def chat(
    db: Annotated[Path | None, typer.Option(help=DB_HELP)] = None,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "default",
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "embedded",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Reply length limit.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="0 = greedy.")] = 0.0,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    firing: Annotated[str | None, typer.Option(help=FIRING_HELP)] = None,
) -> None:
    """Chat with the model in the terminal; flags, blocks and steering show live. /reset clears, /quit ends."""
    from rich.console import Console

    from safesail_guard.runtime.generation import GuardedModel

    if system is not None:
        check_text(system, "--system")
    console = Console()
    with user_errors():
        gm = GuardedModel(_guard(db, model, firing), policy)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    console.print(f"[dim]{gm.guard!r}; policy {policy}. /reset clears the history, /quit (or Ctrl-D) ends.[/dim]")
    while True:
        try:
            line = console.input("[bold cyan]you>[/bold cyan] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        except UnicodeDecodeError:  # the terminal sent bytes that are not UTF-8
            _chat_error(console, "the input is not UTF-8 text; the line was ignored")
            continue
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip() == "/reset":
            history = history[:1] if system else []
            continue
        if not line.strip():
            continue
        problem = text_problem(line, "the message")
        if problem is not None:
            _chat_error(console, f"{problem}; the line was ignored")
            continue
        history.append({"role": "user", "content": line})
        console.print("[bold green]bot>[/bold green] ", end="")
        gen = None
        try:
            for ev in gm.stream(history, max_new_tokens=max_new_tokens, temperature=temperature):
                if ev.kind == "delta":
                    console.print(ev.text, end="", highlight=False, markup=False)
                else:
                    gen = ev.generation
        except user_error_types() as e:
            console.print()
            _chat_error(console, str(e))
            history.pop()
            continue
        console.print()
        assert gen is not None
        if gen.finish_reason == "content_filter":
            console.print(f"[red]blocked[/red] -> {gen.text}")
        if gen.decision is not None and gen.decision.action != "allow":
            console.print(f"[yellow]{gen.decision.explain()}[/yellow]")
        history.append({"role": "assistant", "content": gen.text})


def _chat_error(console: Any, message: str) -> None:
    """A red ``error:`` line in the chat; the message is shown as plain text (it may quote user text)."""
    from rich.text import Text

    console.print(Text("error: ", style="red") + Text(message))


def register(app: typer.Typer) -> None:
    """Attach the runtime commands to the top-level app."""
    app.command()(score)
    app.command()(inspect)
    app.command()(chat)
