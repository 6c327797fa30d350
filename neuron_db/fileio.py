"""Durable file helpers shared by every artefact writer: checksums, atomic replaces and directory fsyncs.

They live in the neuron database package because the database needs them (manifest reading, checksums,
the atomic publish in `safesail_neuron_db.publish`) and must import neither half; the guard (SAE checkpoints in
`safesail_guard.sae`, the embedded-model check in `safesail_guard.models`) and the pipeline (activation shards,
the feature map, build outputs in `safesail_training`) import them from here, so "written completely or not at
all" means the same thing everywhere: write to a temp file in the same directory, fsync it, `os.replace` it
into place, fsync the directory. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def sha256_file(path: Path, *, fsync: bool = False, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a whole file; with `fsync=True` the file is also flushed to disk."""
    h = hashlib.sha256()
    with open(path, "rb+" if fsync else "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest()


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (after a rename); silently a no-op where the OS does not allow it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a partial one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, sync_dir: bool = False) -> None:
    """UTF-8 text version of `atomic_write_bytes` (the directory is not fsynced unless asked)."""
    atomic_write_bytes(path, text.encode("utf-8"), sync_dir=sync_dir)


def read_json_object(path: Path, error: type[Exception]) -> dict:
    """Parse a JSON file that must hold an object; any failure raises `error` with a message naming `path`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise error(f"{path}: expected a JSON object")
    return doc
