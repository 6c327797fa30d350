"""How `safesail build-db` resumes: append-only result logs, input digests and per-stage times.

Every stage of the build (:mod:`safesail_training.build_db` and its ``build_db_*`` neighbours) keeps its results
under ``<work_dir>/db/``. Per-feature results go to an append-only :class:`JsonlLog` keyed by feature (and method);
each row carries a digest (:func:`digest`) of the inputs it was made from, so a rerun skips rows that are
:func:`fresh` and redoes the rest, and a torn last line from a killed run is cut. Whole-stage caches are JSON
files written atomically (:func:`write_json`, with the neuron database's file helper). :class:`StageClock`
records how long each stage took in this run and how long it took the last time it really computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
"""Where the build reports progress (``print`` by default)."""


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically (parent folders are created)."""
    from safesail_neuron_db.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


class JsonlLog:
    """Append-only JSONL keyed by a tuple of fields; the last line per key wins; torn tail lines are ignored."""

    def __init__(self, path: Path, key_fields: tuple[str, ...]) -> None:
        self.path = path
        self.key_fields = key_fields
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if path.is_file():
            with path.open("rb") as fh:
                data = fh.read()
            good_end = 0
            for line in data.split(b"\n"):
                if not line.strip():
                    good_end += len(line) + 1
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn final line from an interrupted run
                self.rows[self.key(row)] = row
                good_end += len(line) + 1
            if good_end < len(data):
                with path.open("r+b") as fh:
                    fh.truncate(min(good_end, len(data)))

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """The key of ``row``: its values of ``key_fields``."""
        return tuple(row[f] for f in self.key_fields)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line (flushed and synced) and make it the row of its key."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[self.key(row)] = row


def digest(obj: Any) -> str:
    """A short, stable digest of a JSON-able value (the inputs a cached result was made from)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fresh(row: dict[str, Any] | None, key: str, statuses: set[str]) -> bool:
    """True when a logged result can be reused: it ended in one of ``statuses`` and was made from inputs whose
    digest is ``key``."""
    return row is not None and row.get("status") in statuses and row.get("input_key") == key


def rounded(row: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Scores rounded for storage: the last float digits of a CorrScore depend on embedding batch composition,
    and a database must come out byte-identical from two runs of the same build."""
    return {k: (round(v, digits) if isinstance(v, float) and k in ("corr", "value") else v) for k, v in row.items()}


def strip_input_key(row: dict[str, Any]) -> dict[str, Any]:
    """A logged row without its ``input_key`` (the digest is the log's, not the record's)."""
    return {k: v for k, v in row.items() if k != "input_key"}


@dataclass
class StageClock:
    """Seconds per stage: this run's wall time (``timings``) and how long each stage took the last time it really
    computed (``computed``, kept in ``path`` so that a cached rerun does not overwrite it)."""

    path: Path
    timings: dict[str, float] = field(default_factory=dict)
    computed: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StageClock:
        """A clock whose ``computed`` times are read from ``path`` when it exists."""
        return cls(path, computed=json.loads(path.read_text()) if path.is_file() else {})

    def stage(self, name: str, t0: float) -> None:
        """Add the time since ``t0`` (a ``time.perf_counter()`` reading) to stage ``name`` of this run."""
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 1)

    def computed_now(self, name: str, seconds: float) -> None:
        """Remember how long a stage took when it really ran (a cached rerun does not overwrite it)."""
        self.computed[name] = round(seconds, 1)
        write_json(self.path, self.computed)
