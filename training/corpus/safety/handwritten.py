"""Parser for the handwritten safety items (``data/safety/src/handwritten_<set>.txt``).

The source files are plain text, written by hand for this project (see the data card). Format:

* ``# ...`` comment lines and blank lines are ignored;
* ``@ key=value key=value ...`` sets the tags of the lines that follow: ``domain`` (a level-0 domain or ``-``),
  ``style`` (``direct`` | ``instruction`` | ``roleplay`` | ``indirect`` | ``multi-turn``), ``lang`` (ISO 639-1),
  ``topic`` (optional, e.g. the edgy type ``medical`` / ``legal`` / ``security`` / ``homonym`` ...) and, in mixed
  files only, ``label`` (``unsafe`` | ``edgy`` | ``benign``);
* every other line is one item. A ``multi-turn`` item is written as turns separated by `` || ``, each turn
  starting with ``U:`` (user) or ``A:`` (assistant); the last turn must be the user's.

The label comes from the file (`HANDWRITTEN_SETS`): ``handwritten_unsafe`` -> ``unsafe``, ``handwritten_edgy`` ->
``edgy``, ``handwritten_benign`` -> ``benign``; a fixed-label file must not carry a ``label=`` tag. A *mixed* file
(registered with ``None``, e.g. ``handwritten_contrast``, which holds harmful requests next to benign look-alikes)
takes the label from each header, and there every header must carry one. Item ids are ``<source>-<4 digits>`` in
file order, whatever the label.

Used only by the builder ``make_safety_set``, which writes the parsed items as JSONL next to the upstream rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CorpusError
from .load import DOMAINS, PROMPT_LABELS

__all__ = ["HANDWRITTEN_SETS", "SRC_DIR", "parse_handwritten"]

SRC_DIR = Path(__file__).resolve().parent.parent / "data" / "safety" / "src"
HANDWRITTEN_SETS: dict[str, str | None] = {
    "handwritten_unsafe": "unsafe",
    "handwritten_edgy": "edgy",
    "handwritten_benign": "benign",
    "handwritten_contrast": None,  # mixed: matched harmful / look-alike groups, label from each header
}
"""Set name -> the label of every item, or None for a mixed file whose headers carry ``label=``."""
_STYLES = ("direct", "instruction", "roleplay", "indirect", "multi-turn")
_ORIGIN = "safesail-guard:training/corpus/data/safety/src/{name}.txt"


def _parse_header(line: str, path: Path, n: int, file_label: str | None) -> dict[str, str | None]:
    """Tags of one ``@`` line; ``label`` is the file's label, or the header's own in a mixed file."""
    tags: dict[str, str | None] = {"domain": None, "style": None, "lang": None, "topic": None, "label": None}
    for part in line[1:].split():
        key, sep, value = part.partition("=")
        if not sep or key not in tags:
            raise CorpusError(f"{path}:{n}: bad header tag {part!r}", path=str(path), line=n)
        if key == "label":
            if file_label is not None:
                raise CorpusError(
                    f"{path}:{n}: 'label=' is only allowed in mixed files; this file's items are all {file_label!r}",
                    path=str(path), line=n,
                )
            if value not in PROMPT_LABELS:
                raise CorpusError(f"{path}:{n}: label {value!r} not in {PROMPT_LABELS}", path=str(path), line=n)
        tags[key] = None if value in ("-", "") else value
    if tags["style"] not in _STYLES:
        raise CorpusError(f"{path}:{n}: style {tags['style']!r} not in {_STYLES}", path=str(path), line=n)
    if tags["domain"] is not None and tags["domain"] not in DOMAINS:
        raise CorpusError(f"{path}:{n}: domain {tags['domain']!r} not in {DOMAINS}", path=str(path), line=n)
    if not tags["lang"] or not tags["lang"].isalpha() or not tags["lang"].islower():
        raise CorpusError(f"{path}:{n}: header needs lang=<iso code>", path=str(path), line=n)
    if file_label is None and tags["label"] is None:
        raise CorpusError(
            f"{path}:{n}: a header of a mixed file needs label=<{'|'.join(PROMPT_LABELS)}>", path=str(path), line=n
        )
    if file_label is not None:
        tags["label"] = file_label
    return tags


def _parse_turns(line: str, path: Path, n: int) -> list[list[str]]:
    turns: list[list[str]] = []
    for part in line.split(" || "):
        part = part.strip()
        role = {"U:": "user", "A:": "assistant"}.get(part[:2])
        if role is None or not part[2:].strip():
            raise CorpusError(f"{path}:{n}: a multi-turn part must start with 'U:' or 'A:'", path=str(path), line=n)
        turns.append([role, part[2:].strip()])
    if len(turns) < 2 or turns[-1][0] != "user":
        raise CorpusError(f"{path}:{n}: multi-turn items need >= 2 turns, the last the user's", path=str(path), line=n)
    return turns


def parse_handwritten(name: str, path: Path | None = None) -> list[dict[str, Any]]:
    """Rows (with ids) of one handwritten set, in file order; raises `CorpusError` on malformed lines.

    `path` overrides the file read (default ``SRC_DIR/<name>.txt``); `name` still decides the label rule.
    """
    if name not in HANDWRITTEN_SETS:
        raise CorpusError(f"unknown handwritten set {name!r}; known: {sorted(HANDWRITTEN_SETS)}")
    file = path or SRC_DIR / f"{name}.txt"
    file_label = HANDWRITTEN_SETS[name]
    rows: list[dict[str, Any]] = []
    tags: dict[str, str | None] | None = None
    for n, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            tags = _parse_header(line, file, n, file_label)
            continue
        if tags is None:
            raise CorpusError(f"{file}:{n}: item before the first '@' header", path=str(file), line=n)
        row: dict[str, Any] = {
            "id": f"{name}-{len(rows) + 1:04d}",
            "kind": "prompt",
            "label": tags["label"],
            "source": name,
            "licence": "Apache-2.0",
            "style": tags["style"],
            "lang": tags["lang"],
            "domain": tags["domain"],
            "topic": tags["topic"],
            "origin": _ORIGIN.format(name=name),
        }
        if tags["style"] == "multi-turn":
            turns = _parse_turns(line, file, n)
            row["text"] = "\n".join(f"{'User' if r == 'user' else 'Assistant'}: {c}" for r, c in turns)
            row["turns"] = turns
        else:
            if " || " in line:
                raise CorpusError(f"{file}:{n}: ' || ' outside a multi-turn block", path=str(file), line=n)
            row["text"] = line
        rows.append(row)
    return rows
