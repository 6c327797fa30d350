"""The import contracts of ``pyproject.toml`` ([tool.importlinter]), run through import-linter, plus what they cannot
see: the modules actually loaded when the server app is imported.

The contracts are the arrows of ``docs/architecture.md``: serving never imports the offline pipeline
(`safesail_training`), the neuron database (`safesail_neuron_db`) imports neither half, and the guard's packages
form layers without cycles. Each contract runs in its own subprocess (``lint-imports --contract <id>``), so a
failure names the contract and prints import-linter's explanation (the chain of imports that breaks it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

CONTRACTS = ("serving-never-imports-pipeline", "neuron-db-is-a-leaf", "guard-acyclic", "guard-layers")
"""Every contract id the project promises; removing one from pyproject.toml fails `test_all_contracts_declared`."""

_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_all_contracts_declared() -> None:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert set(config["root_packages"]) == {"safesail_guard", "safesail_training", "safesail_neuron_db",
                                             "safesail_policies"}
    assert sorted(c["id"] for c in config["contracts"]) == sorted(CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_contract_kept(contract: str) -> None:
    result = _run(_LINT, "--no-cache", "--contract", contract, str(PYPROJECT))
    assert result.returncode == 0, f"import contract {contract!r} is broken:\n{result.stdout}\n{result.stderr}"
    assert "1 kept, 0 broken" in result.stdout, result.stdout


def _loaded_after(module: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (f"import json, sys, {module}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_server_app_loads_no_training_module() -> None:
    """What actually runs, lazy imports and plugins included: importing the proxy loads no pipeline module."""
    assert _loaded_after("safesail_guard.server.app", ("safesail_training",)) == []


def test_neuron_db_loads_neither_half() -> None:
    assert _loaded_after("safesail_neuron_db", ("safesail_training", "safesail_guard")) == []
