"""``docs/architecture.md`` stays true: every path its "to change X, open Y" table names exists (and every name it
points at inside those files is there), and the arrows it draws are the import contracts in ``pyproject.toml``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
TABLE_HEADING = "## To change X, open Y"
_PATH_SUFFIXES = (".py", ".md", ".yaml", ".toml", ".json")


def _importlinter() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def _table_rows() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"{DOC} has no '{TABLE_HEADING}' section"
    rows = []
    for line in text.split(TABLE_HEADING, 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and line.startswith("|") and not set(cells[1]) <= {"-"} and cells[1] != "open":
            rows.append((cells[0], cells[1]))
    assert len(rows) >= 20, f"the table in {DOC} lost rows: {len(rows)} left"
    return rows


def _is_path(token: str) -> bool:
    return "/" in token or token.endswith(_PATH_SUFFIXES)


def test_every_path_in_the_table_exists() -> None:
    missing = [(what, token) for what, where in _table_rows() for token in re.findall(r"`([^`]+)`", where)
               if _is_path(token) and not (ROOT / token.rstrip("/")).exists()]
    assert missing == [], f"{DOC.name} names paths that do not exist: {missing}"


def test_every_name_in_the_table_is_in_its_files() -> None:
    """``(`SITES`)`` after ``hooks.py`` promises that the row's files define or use ``SITES``."""
    absent = []
    for what, where in _table_rows():
        tokens = re.findall(r"`([^`]+)`", where)
        files = [ROOT / t for t in tokens if _is_path(t) and (ROOT / t).is_file()]
        text = "\n".join(f.read_text(encoding="utf-8") for f in files)
        for name in (t for t in tokens if not _is_path(t)):
            parts = [name] if name.startswith("[") else name.split(".")  # `A.b`: both A and b are there
            if not all(p in text for p in parts):
                absent.append((what, name))
    assert absent == [], f"{DOC.name} points at names its files do not hold: {absent}"


def test_layers_in_the_doc_are_the_contract() -> None:
    text = DOC.read_text(encoding="utf-8")
    after = text.split("`guard-layers`", 1)[1]
    block = after.split("```text", 1)[1].split("```", 1)[0]
    drawn = [line.strip() for line in block.strip().splitlines()]
    (contract,) = [c for c in _importlinter()["contracts"] if c["id"] == "guard-layers"]
    assert drawn == contract["layers"]


def test_every_contract_is_described() -> None:
    text = DOC.read_text(encoding="utf-8")
    ids = [c["id"] for c in _importlinter()["contracts"]]
    assert [i for i in ids if f"`{i}`" not in text] == []
