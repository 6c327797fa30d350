"""Read the project's markdown the way a newcomer copies from it: fenced code blocks, inline code spans, the
`safesail ...` command lines inside them, and the feature ids (``<layer>_<latent>``) anywhere in the text.

`tests/docs/test_docs_examples.py` checks what this module finds against the shipped database, the typer app
and a test server. Only the standard library here, so a markdown quirk fails one assertion, not the import.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (the checkout the tests run in)."""


def doc_files() -> list[Path]:
    """Every page a user reads: README.md, policies/README.md and docs/ (results pages included)."""
    return [ROOT / "README.md", ROOT / "policies" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Snippet:
    """A piece of a markdown file: a fenced block (``lang`` is its info string, "" when none) or an inline code
    span (``lang`` is "inline"); ``line`` is the 1-based line where it starts."""

    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        """``path:line`` relative to the repository, for assertion messages."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def snippets(path: Path) -> list[Snippet]:
    """The fenced blocks and inline code spans of ``path``, in file order (indented fences included)."""
    out: list[Snippet] = []
    fence: str | None = None
    lang, start, body = "", 0, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, lang, start, body = m.group(1), m.group(2).lower(), n, []
            indent = len(line) - len(line.lstrip())
        elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            out.append(Snippet(path, start, lang, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
        else:
            out.extend(Snippet(path, n, "inline", s.group(2).strip()) for s in _SPAN.finditer(line))
    assert fence is None, f"{path.relative_to(ROOT)}:{start}: code block never closed"
    return out


FEATURE_ID = re.compile(r"(?<![\w./:#-])(\d{1,3})_(\d{1,6})(?![\w/-])")
"""A feature id ``<layer>_<latent>`` standing alone (not part of a longer name, number or path)."""


def feature_ids(path: Path) -> list[tuple[int, str]]:
    """(line, id) for every feature id in ``path``, in code or prose (a figure's caption names one too)."""
    text = path.read_text(encoding="utf-8")
    return [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1) for m in FEATURE_ID.finditer(line)]


SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<", "&>"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One command of a shell line: ``argv[0]`` is the program (``safesail``, ``make``, ``python``...)."""

    snippet: Snippet
    argv: tuple[str, ...]

    @property
    def where(self) -> str:
        return self.snippet.where


def shell_commands(snippet: Snippet) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments dropped, pipelines and ``&&`` lists
    split, leading ``VAR=value`` assignments and redirections dropped. Unbalanced quotes raise ValueError."""
    logical: list[str] = []
    pending = ""
    for line in snippet.text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    out: list[Command] = []
    for line in logical:
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        part: list[str] = []
        skip_next = False
        for tok in [*lexer, ";"]:
            if tok in _OPERATORS:
                if part:
                    out.append(Command(snippet, tuple(part)))
                part = []
                skip_next = tok in {">", ">>", "2>", "<", "&>"}  # the redirection's target is no argument
                continue
            if skip_next:
                skip_next = False
                continue
            if not part and _ASSIGNMENT.match(tok):
                continue
            part.append(tok)
    return out


def is_safesail(argv: tuple[str, ...]) -> bool:
    """Whether ``argv`` runs the `safesail` console script (also as ``.venv/bin/safesail``)."""
    return bool(argv) and Path(argv[0]).name == "safesail"


def synopsis_commands(snippet: Snippet) -> list[tuple[str, ...]]:
    """The `safesail` invocations of a synopsis (the README's command table, an inline ``safesail ...`` span):
    ``a | b`` lists alternative sub-commands of one group, ``[--opt X]`` an optional part (kept), ``...`` "and
    so on" (dropped). A table line ends where three spaces start its description."""
    out: list[tuple[str, ...]] = []
    for raw in snippet.text.splitlines():
        if not raw.startswith("safesail ") and not raw.startswith(".venv/bin/safesail "):
            continue
        line = re.split(r"\s{3,}|\s+#\s", raw, maxsplit=1)[0]
        alternatives = [shlex.split(alt) for alt in line.split(" | ")]
        first = alternatives[0]
        out.append(tuple(_unbracket(first)))
        for alt in alternatives[1:]:  # "safesail db info | search Q": `search` is another command of `db`
            out.append(("__sibling__", *_unbracket(alt)))
    return out


def _unbracket(tokens: list[str]) -> list[str]:
    """Synopsis notation to argv: ``[--json]`` -> ``--json``; ``...`` dropped."""
    out = []
    for tok in tokens:
        tok = tok.lstrip("[").rstrip("]")
        if tok and tok != "..." and not tok.endswith("..."):
            out.append(tok)
    return out


PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.[a-z]+)?|.*\.\.\..*|.*<[^>]*>.*)$")
"""A synopsis placeholder a user replaces: ``FILE``, ``IN.jsonl``, ``ID``, ``...``, ``<id>``."""
