"""Publishing a database directory atomically: write into a temporary sibling, fsync, swap it into place.

`DatabaseWriter.finish` (`safesail_neuron_db.writer`) writes the data files into a temporary directory and
calls `publish`, which writes ``manifest.json`` last (`safesail_neuron_db.manifest`), makes the files readable,
syncs and swaps the directory in (Linux ``renameat2(RENAME_EXCHANGE)`` where available, else two renames).
`add_files` adds or replaces the optional files (``competition.safetensors``, ``risk_head.json``) of an existing
database the same way. A crash or error leaves either the old database or the new one at the target, never a
half-written one; only an empty directory or an existing database is ever replaced.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from safesail_neuron_db.fileio import atomic_write_text, fsync_dir, sha256_file
from safesail_neuron_db.manifest import MANIFEST_FILE, OPTIONAL_FILES, FileInfo, load_manifest

__all__ = ["publish", "check_replaceable", "add_files"]


def publish(tmp: Path, target: Path, manifest_json: str) -> None:
    """Write the manifest last into the complete temporary directory, make it readable, sync, swap it in."""
    atomic_write_text(tmp / MANIFEST_FILE, manifest_json)
    for p in tmp.iterdir():
        p.chmod(0o644)
    tmp.chmod(0o755)
    fsync_dir(tmp)
    _swap_into_place(tmp, target)


def check_replaceable(target: Path) -> None:
    """Only an empty directory or an existing database may be replaced - never an unrelated directory."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValueError(f"{target} exists and is not a directory; refusing to replace it")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
        raise ValueError(f"{target} is a non-empty directory without {MANIFEST_FILE} (not a neuron database); "
                         "refusing to replace it - choose another output directory")


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(new: Path, target: Path) -> None:
    """Move the complete directory ``new`` to ``target``; an existing ``target`` is removed only afterwards."""
    if not target.exists():
        os.rename(new, target)
        fsync_dir(target.parent)
        return
    if _rename_exchange(new, target):  # `new` now holds the old database
        fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old)  # replaces the empty placeholder directory
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def add_files(directory: Path | str, files: dict[str, bytes]) -> Path:
    """Add (or replace) optional files of an existing database and rewrite its manifest, atomically.

    The database is copied to a temporary sibling, the files and a new manifest are written there, and the
    copy is swapped in - a crash leaves the old database intact. Only names in `OPTIONAL_FILES` are allowed.
    """
    target = Path(directory).absolute()
    bad = sorted(set(files) - set(OPTIONAL_FILES))
    if bad:
        raise ValueError(f"cannot add {', '.join(bad)}: optional database files are {', '.join(OPTIONAL_FILES)}")
    manifest = load_manifest(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        for name in manifest.files:
            if name not in files:
                shutil.copy2(target / name, tmp / name)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        infos = dict(manifest.files)
        for name, data in files.items():
            infos[name] = FileInfo(sha256=sha256_file(tmp / name, fsync=True), bytes=len(data))
        new = manifest.model_copy(update={"files": dict(sorted(infos.items()))})
        publish(tmp, target, new.to_json())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
