"""The `safesail` command line. Thin: one function per command, heavy imports inside commands.

Sub-apps live in sibling modules (`model`, `pairs`, `sae`) and are attached here.
User errors print one line to stderr (one per problem) and exit non-zero: 2 (`common.EXIT_USAGE`) for the
commands built on `cli/common.py` (serve, score, inspect, chat, db, policy, audit), 1 for the pipeline, model
and pairs commands; tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="safesail-guard: find, explain and watch the safety features inside an LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_SUBAPPS = {
    "model": "Load and check models (embedded SmolLM2, HF directories, HF cache ids).",
    "pairs": "Concept-contrastive query pairs.",
    "db": "Query the neuron database: info, search, show a feature, export.",
    "policy": "Guard policies: validate a YAML policy, test it on cases, print its JSON schema.",
    "audit": "The proxy's audit log: list and filter decisions, show one, stats, apply retention.",
}

for _name, _help in _SUBAPPS.items():
    try:
        _module = importlib.import_module(f"safesail_guard.cli.{_name}")
    except ModuleNotFoundError as exc:  # a sub-app not written yet must not break the others
        if exc.name != f"safesail_guard.cli.{_name}":
            raise
        continue
    app.add_typer(_module.app, name=_name, help=_help)

from safesail_guard.cli import pipeline as _pipeline  # noqa: E402  (commands register on import)

_pipeline.register(app)

from safesail_guard.cli import guard_cmds as _guard_cmds  # noqa: E402

_guard_cmds.register(app)

from safesail_guard.cli import serve as _serve  # noqa: E402

_serve.register(app)


def main() -> None:
    """Entry point of the `safesail` console script."""
    app()


if __name__ == "__main__":
    main()
