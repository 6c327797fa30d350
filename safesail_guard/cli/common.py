"""Helpers every CLI module shares: the ``--db`` option, a console, and the one convention for user errors.

A user error (a bad file, database, model, policy, option value or setting) is printed on stderr as red
``error: ...`` lines (`fail`) and exits with `EXIT_USAGE` (2), the status click itself gives an unknown
option; never a traceback. `user_errors` turns the exceptions that mean bad input into that. The command
modules (`db`, `policy`, `audit`, `model`, `pairs`, `pipeline`, `guard_cmds`, `serve`) all go through here;
`EXIT_STATUS_HELP` is the table `safesail --help` prints.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from safesail_neuron_db import NeuronDB

EXIT_USAGE = 2
"""Exit status for bad input: a bad file, database, model, policy, option or setting (click uses 2 for an
unknown option too, so every user error exits the same way)."""

EXIT_STATUS_HELP = (
    "Exit status: 0 done; 1 a check found problems (`policy test`: a case got another decision) or a "
    "confirmation was declined; 2 bad input (file, database, model, policy, option or setting), explained on "
    "stderr, never with a traceback; 3 `pairs generate` finished but some records got no twin (rerun to retry)."
)
"""The exit statuses of every command, shown at the end of `safesail --help`."""

DbOption = Annotated[
    Path | None, typer.Option("--db", help="Database directory (default: the database shipped with safesail-guard).")
]


def console(stderr: bool = False) -> Console:
    """A rich console with markup off: explanations, concepts and queries are user/LLM text that may hold "[...]"."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, highlight=False, markup=False)


def fail(message: str) -> NoReturn:
    """Print ``message`` on stderr as red ``error:`` lines (one per line of the message) and exit 2."""
    from rich.text import Text

    con = console(stderr=True)
    for line in message.splitlines() or [message]:
        con.print(Text(f"error: {line}", style="bold red"))
    raise typer.Exit(EXIT_USAGE)


def user_error_types(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug, plus ``extra`` (`PolicyError`, `HookError` and pydantic
    errors are ValueErrors)."""
    from safesail_guard.models import ModelLoadError
    from safesail_neuron_db import NeuronDBError

    return (NeuronDBError, ModelLoadError, ValueError, OSError, *extra)


def text_problem(text: str, what: str) -> str | None:
    """Why ``text`` cannot be scanned, naming it as ``what``, or None when it can.

    A lone UTF-16 surrogate is not a character: a JSON or YAML ``"\\ud800"`` escape without its pair puts one
    in a str, and so do bytes that are not UTF-8 in a command-line argument (Python decodes argv with
    ``surrogateescape``). No tokenizer can encode it, and the error it raises names nothing the user typed.
    """
    from safesail_guard.chat_template import ChatFormatError
    from safesail_guard.chat_template import check_text as _check_text

    try:
        _check_text(text, what)
    except ChatFormatError as exc:
        return str(exc)
    return None


def check_text(text: str, what: str) -> None:
    """`fail` when ``text`` cannot be scanned (see `text_problem`)."""
    problem = text_problem(text, what)
    if problem is not None:
        fail(problem)


@contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn bad-input exceptions raised inside the block (`user_error_types`, plus ``extra``) into `fail`."""
    try:
        yield
    except user_error_types(*extra) as exc:
        fail(_surrogate_message(exc) or str(exc))


def _surrogate_message(exc: BaseException) -> str | None:
    """A clear message for text with a lone surrogate that reached an encoder (SQLite, a tokenizer...), whose
    own ``'utf-8' codec can't encode character '\\ud800' ...`` does not say which text; None for other errors."""
    if not (isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str)
            and 0xD800 <= ord(exc.object[exc.start]) <= 0xDFFF):
        return None
    shown = exc.object if len(exc.object) <= 60 else exc.object[:57] + "..."
    return text_problem(exc.object, f"the text {shown!r}")


@contextmanager
def open_db(db: Path | None) -> Iterator[NeuronDB]:
    """Open ``db`` (default: the shipped database) for the block; problems become `fail`."""
    from safesail_neuron_db import NeuronDB, default_database_path

    with user_errors():
        path = db if db is not None else default_database_path()
        if db is None and not path.exists():
            fail(f"the shipped neuron database is not installed at {path}; run `safesail build-db` to build it, "
                 "or pass --db PATH")
        with NeuronDB.open(path) as handle:
            yield handle


def plain_table(columns: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[str] = ()) -> str:
    """A fixed-width text table for output that is not a terminal (a pipe, a file): one line per row, columns
    padded to their widest cell and two spaces apart, nothing wrapped or cut, control characters (tabs, line
    breaks) turned into spaces so every record stays on its line. Columns named in ``right`` are right-aligned."""
    from rich.cells import cell_len  # terminal cells: a CJK character takes two

    table = [[_one_line(c) for c in columns], *([_one_line(c) for c in row] for row in rows)]
    widths = [max(cell_len(r[i]) for r in table) for i in range(len(columns))]
    lines = []
    for r in table:
        pads = [" " * (w - cell_len(c)) for c, w in zip(r, widths)]
        cells = [p + c if name in right else c + p for c, p, name in zip(r, pads, columns)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """``text`` with every whitespace or unprintable character as one space."""
    return "".join(" " if ch.isspace() or not ch.isprintable() else ch for ch in text)
