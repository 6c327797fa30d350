"""The lock is complete, hashed, within pyproject's ranges, and is what the suite runs on (docs/dependencies.md)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQ_DIR = ROOT / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def parse_pins(path: Path) -> dict[str, tuple[str, int]]:
    """``{canonical name: (version, number of hashes)}`` of a pip-compile style requirements file."""
    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            if current in pins:
                raise AssertionError(f"{path.name}: {current} is pinned twice")
            pins[current] = (m.group(2), 0)
        elif line.startswith("--hash=sha256:") and current is not None:
            version, n = pins[current]
            pins[current] = (version, n + 1)
        elif line and not line.startswith("#"):
            raise AssertionError(f"{path.name}: unexpected line {raw!r} (only pins and hashes belong in a lock)")
    return pins


def pyproject_requirements() -> list[Requirement]:
    """Runtime dependencies plus the dev extra (what `make test` needs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


LOCK = parse_pins(REQ_DIR / "lock.txt")
ALL_PINS = {**LOCK, **parse_pins(REQ_DIR / "nodeps.txt"), **parse_pins(REQ_DIR / "tools.txt")}


def test_parse_pins_reads_versions_and_hashes(tmp_path: Path) -> None:
    f = tmp_path / "l.txt"
    f.write_text("# c\nfoo-bar==1.2 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\nbaz==3\n")
    assert parse_pins(f) == {"foo-bar": ("1.2", 2), "baz": ("3", 0)}
    f.write_text("foo>=1\n")
    with pytest.raises(AssertionError, match="unexpected line"):
        parse_pins(f)


def test_every_pin_is_hashed() -> None:
    unhashed = [name for name, (_, n) in ALL_PINS.items() if n == 0]
    assert not unhashed, f"pins without --hash (pip's hash-checking mode would refuse them): {unhashed}"


def test_lock_covers_pyproject_within_its_ranges() -> None:
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in LOCK, f"{req} is required by pyproject.toml but missing from requirements/lock.txt"
        version = Version(LOCK[name][0])
        # a local label (torch's +cpu) does not change which release it is
        assert req.specifier.contains(Version(version.public), prereleases=True), (
            f"requirements/lock.txt pins {name}=={version}, outside pyproject.toml's {req}")


def test_suite_runs_on_exactly_the_lock() -> None:
    """The environment running these tests has every locked package at its locked version."""
    wrong = {}
    for name, (version, _) in ALL_PINS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if Version(installed) != Version(version):
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from the lock (locked, installed): {wrong}; run `make bootstrap`"


def test_bootstrap_installs_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for line in ("--require-hashes --no-deps -r $(LOCK)", "--require-hashes --no-deps -r $(NODEPS)",
                 "--require-hashes -r $(TOOLS)", "--no-deps --no-build-isolation -e ."):
        assert line in makefile, f"the bootstrap no longer runs `pip install {line}`"
    inputs = next(line for line in makefile.splitlines() if line.startswith("BOOTSTRAP_INPUTS"))
    for var in ("$(LOCK)", "$(NODEPS)", "$(TOOLS)"):
        assert var in inputs, f"changing {var} must redo the bootstrap"
