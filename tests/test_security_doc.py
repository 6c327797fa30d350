"""docs/security.md stays true: every test it names exists (a renamed or deleted test fails here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_named_in_security_md_exists() -> None:
    refs = _REF.findall(DOC.read_text())
    assert len(refs) >= 30, "docs/security.md should point each covered line at its test"
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.exists() or name not in _test_names(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_redteam_module_is_cited() -> None:
    cited = {file for file, _ in _REF.findall(DOC.read_text())}
    for path in sorted((ROOT / "tests" / "redteam").glob("test_*.py")):
        assert str(path.relative_to(ROOT)) in cited, f"{path.name} is not cited in docs/security.md"
