"""The `safesail` command line. Thin: one function per command, heavy imports inside commands.

Command groups live in sibling modules and are attached here: `model`, `pairs`, `db`, `policy` and `audit`
are typer sub-apps; `pipeline` (build-sae, build-db, harvest, train, select, demo), `guard_cmds` (score,
inspect, chat) and `serve` register top-level commands. Every module reports user errors the same way,
through `cli/common.py`: red ``error:`` lines on stderr and exit status 2 (`common.EXIT_USAGE`), never a
traceback; tracebacks are for bugs only. `common.EXIT_STATUS_HELP`, the list of exit statuses, ends
``safesail --help``.
"""

from __future__ import annotations

import typer

from safesail_guard.cli import audit, db, guard_cmds, model, pairs, pipeline, policy, serve
from safesail_guard.cli.common import EXIT_STATUS_HELP

app = typer.Typer(
    help="safesail-guard: find, explain and watch the safety features inside an LLM.",
    epilog=EXIT_STATUS_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(model.app, name="model", help="Load and check models (embedded SmolLM2, HF directories, HF cache ids).")
app.add_typer(pairs.app, name="pairs", help="Concept-contrastive query pairs.")
app.add_typer(db.app, name="db", help="Query the neuron database: info, search, show a feature, export.")
app.add_typer(policy.app, name="policy",
              help="Guard policies: validate a YAML policy, test it on cases, print its JSON schema.")
app.add_typer(audit.app, name="audit",
              help="The proxy's audit log: list and filter decisions, show one, stats, apply retention.")
pipeline.register(app)
guard_cmds.register(app)
serve.register(app)


def main() -> None:
    """Entry point of the `safesail` console script."""
    app()


if __name__ == "__main__":
    main()
