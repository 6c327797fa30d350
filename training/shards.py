"""Activation shard storage: the on-disk hand-off between harvesting and SAE training.

How it connects: the harvester (`safesail_training.harvest`) runs the model over a corpus and feeds the
activations of each hook point to a `ShardWriter`; `safesail_training.train` and `safesail_training.metrics`
read them back through `open_shards` / `ShardReader`. Nothing here knows about models or SAEs.

Layout (one directory per hook point)::

    <root>/layers.14.mlp_out/
        index.json              {"schema_version": 1, "d_model": 576, "dtype": "float16", "complete": true,
                                 "meta": {...}, "shards": [{"file": "shard_00000.safetensors",
                                 "n_tokens": 65536, "sha256": "...", "cursor": 1234}, ...]}
        shard_00000.safetensors one tensor "acts" [n_tokens, d_model] in float16 or bfloat16
        shard_00001.safetensors ...

Crash safety: a shard is written to a temporary file, fsynced and renamed, and only then listed in
``index.json`` (itself replaced atomically). A shard is *committed* once it is in the index. ``cursor`` is the
harvester's position (e.g. a document index) of the last `ShardWriter.add` the shard contains; adds are never
split across shards, so after a crash the harvester resumes from ``resume_cursor + 1`` and loses or
duplicates nothing. Buffered, uncommitted data is lost on a crash by design.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from safesail_neuron_db.fileio import atomic_write_bytes as _atomic_write_bytes
from safesail_neuron_db.fileio import read_json_object
from safesail_neuron_db.fileio import sha256_file as _sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "INDEX_FILE",
    "ShardError",
    "ShardInfo",
    "ShardWriter",
    "ShardReader",
    "open_shards",
]

SCHEMA_VERSION = 1
INDEX_FILE = "index.json"
TENSOR_NAME = "acts"
_STORAGE_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPE_NAMES = {"float16": "F16", "bfloat16": "BF16"}


class ShardError(ValueError):
    """A shard set is missing, corrupt, truncated, inconsistent or empty; the message names the file."""


@dataclass(frozen=True)
class ShardInfo:
    """One committed shard as listed in ``index.json``."""

    file: str
    n_tokens: int
    sha256: str
    cursor: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "n_tokens": self.n_tokens, "sha256": self.sha256, "cursor": self.cursor}


# ---------------------------------------------------------------------------------------------- index I/O
def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _is_temp(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


def _read_index(directory: Path) -> dict[str, Any]:
    """Parse and validate ``index.json``; returns a dict with ``shards`` as `ShardInfo` objects."""
    path = directory / INDEX_FILE
    if not directory.is_dir():
        raise ShardError(f"shard directory {directory} does not exist")
    if not path.is_file():
        raise ShardError(f"{path}: missing (not a shard directory, or the harvest never started)")
    doc = read_json_object(path, ShardError)
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path}: schema_version {doc.get('schema_version')!r} is not supported (known: [1])")
    d_model = doc.get("d_model")
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model <= 0:
        raise ShardError(f"{path}: d_model must be a positive integer, got {d_model!r}")
    if doc.get("dtype") not in _STORAGE_DTYPES:
        raise ShardError(f"{path}: dtype {doc.get('dtype')!r} is not one of {sorted(_STORAGE_DTYPES)}")
    shards_raw = doc.get("shards")
    if not isinstance(shards_raw, list):
        raise ShardError(f"{path}: 'shards' must be a list")
    shards: list[ShardInfo] = []
    for i, s in enumerate(shards_raw):
        try:
            info = ShardInfo(file=str(s["file"]), n_tokens=int(s["n_tokens"]), sha256=str(s["sha256"]),
                             cursor=int(s["cursor"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ShardError(f"{path}: shard entry {i} is malformed ({e!r}); needs file, n_tokens, sha256, cursor") from e
        if info.n_tokens <= 0 or "/" in info.file or "\\" in info.file:
            raise ShardError(f"{path}: shard entry {i} ({info.file}) has an invalid file name or n_tokens")
        shards.append(info)
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict):
        raise ShardError(f"{path}: 'meta' must be an object")
    return {
        "d_model": d_model,
        "dtype": doc["dtype"],
        "shards": shards,
        "complete": bool(doc.get("complete", False)),
        "meta": meta,
    }


def _check_shard_header(directory: Path, info: ShardInfo, d_model: int, dtype: str) -> None:
    """Check that a shard file exists, is a complete safetensors file and holds ``acts [n_tokens, d_model]``."""
    path = directory / info.file
    if not path.is_file():
        raise ShardError(f"{path}: listed in {INDEX_FILE} but missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys != [TENSOR_NAME]:
                raise ShardError(f"{path}: expected exactly one tensor {TENSOR_NAME!r}, found {keys}")
            sl = f.get_slice(TENSOR_NAME)
            shape = list(sl.get_shape())
            st_dtype = sl.get_dtype()
    except SafetensorError as e:
        raise ShardError(f"{path}: corrupt or truncated safetensors file ({e})") from e
    if shape != [info.n_tokens, d_model]:
        raise ShardError(f"{path}: tensor shape {shape} does not match {INDEX_FILE} ([{info.n_tokens}, {d_model}])")
    if st_dtype != _ST_DTYPE_NAMES[dtype]:
        raise ShardError(f"{path}: dtype {st_dtype} does not match {INDEX_FILE} ({dtype})")


# ---------------------------------------------------------------------------------------------- writer
class ShardWriter:
    """Appends activations of one hook point to a shard directory, resuming an existing one.

    ``shard_tokens`` is the size at which the buffer is written out: a shard holds whole adds, so it has at
    least ``shard_tokens`` tokens (except the last) and at most ``shard_tokens - 1 + `` the largest add.
    If ``index.json`` exists the writer resumes: ``d_model``, ``dtype`` and ``meta`` (when given) must
    match, listed shards must exist, and stray temporary or unlisted shard files are deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        d_model: int,
        *,
        dtype: str = "float16",
        shard_tokens: int = 65536,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in _STORAGE_DTYPES:
            raise ShardError(f"dtype {dtype!r} is not supported; valid: {sorted(_STORAGE_DTYPES)}")
        if d_model <= 0 or shard_tokens <= 0:
            raise ShardError(f"d_model ({d_model}) and shard_tokens ({shard_tokens}) must be positive")
        self.directory = Path(directory)
        self.d_model = d_model
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in self.directory.iterdir():
            if _is_temp(p.name):
                p.unlink(missing_ok=True)
        index_path = self.directory / INDEX_FILE
        if index_path.exists():
            idx = _read_index(self.directory)
            if idx["d_model"] != d_model:
                raise ShardError(f"{index_path}: existing shards have d_model={idx['d_model']}, writer got {d_model}")
            if idx["dtype"] != dtype:
                raise ShardError(f"{index_path}: existing shards are {idx['dtype']}, writer got dtype={dtype!r}")
            if meta is not None and idx["meta"] and idx["meta"] != meta:
                raise ShardError(
                    f"{index_path}: meta differs from the existing harvest ({idx['meta']} != {meta}); "
                    "refusing to mix activations from different settings"
                )
            self._shards: list[ShardInfo] = idx["shards"]
            self._complete: bool = idx["complete"]
            self.meta: dict[str, Any] = idx["meta"] or dict(meta or {})
            listed = {s.file for s in self._shards}
            for s in self._shards:
                if not (self.directory / s.file).is_file():
                    raise ShardError(f"{self.directory / s.file}: listed in {INDEX_FILE} but missing; cannot resume")
            for p in self.directory.glob("shard_*.safetensors"):
                if p.name not in listed:  # written but never committed (crash before the index update)
                    p.unlink(missing_ok=True)
        else:
            self._shards = []
            self._complete = False
            self.meta = dict(meta or {})
            self._write_index()
        self._buf: list[Tensor] = []
        self._buf_cursors: list[int] = []
        self._buf_tokens = 0
        self._closed = False

    # -------------------------------------------------------------- properties
    @property
    def n_tokens(self) -> int:
        """Committed tokens (buffered tokens not included)."""
        return sum(s.n_tokens for s in self._shards)

    @property
    def resume_cursor(self) -> int:
        """Cursor of the last committed shard, or -1 when nothing is committed."""
        return self._shards[-1].cursor if self._shards else -1

    @property
    def complete(self) -> bool:
        """Whether the set was closed with ``complete=True``."""
        return self._complete

    @property
    def shards(self) -> list[ShardInfo]:
        """Committed shards."""
        return list(self._shards)

    # -------------------------------------------------------------- writing
    def add(self, acts: Tensor, cursor: int) -> None:
        """Buffer ``acts [n, d_model]`` produced at harvester position ``cursor``; writes a shard when the
        buffer reaches ``shard_tokens``.

        Cursors must not decrease, and must exceed `resume_cursor`: a committed shard marks every cursor up to
        its own as done, so all activations of one cursor belong in one add. Non-finite values, and values
        beyond the float16 range when storing float16, are refused (use ``dtype="bfloat16"`` for those).
        """
        if self._closed:
            raise ShardError(f"{self.directory}: writer is closed")
        if self._complete:
            raise ShardError(f"{self.directory / INDEX_FILE}: shard set is marked complete; truncate it or use a new directory")
        if acts.ndim != 2 or acts.shape[1] != self.d_model:
            raise ShardError(f"{self.directory}: expected acts [n, {self.d_model}], got {tuple(acts.shape)}")
        cursor = int(cursor)
        last = self._buf_cursors[-1] if self._buf_cursors else self.resume_cursor
        if cursor < last or (not self._buf_cursors and self._shards and cursor <= last):
            raise ShardError(
                f"{self.directory}: cursor {cursor} goes backwards (last {'buffered' if self._buf_cursors else 'committed'} "
                f"cursor is {last}); new cursors start at resume_cursor + 1 = {self.resume_cursor + 1}"
            )
        stored = acts.detach().to(device="cpu", dtype=_STORAGE_DTYPES[self.dtype]).contiguous()
        if not bool(torch.isfinite(stored).all()):
            bad = "outside the float16 range (|x| > 65504)" if bool(torch.isfinite(acts).all()) else "NaN or inf"
            raise ShardError(
                f"{self.directory}: activations at cursor {cursor} contain values {bad}"
                + ("; store this hook point as bfloat16" if "range" in bad else "")
            )
        self._buf.append(stored)
        self._buf_cursors.append(cursor)
        self._buf_tokens += acts.shape[0]
        if self._buf_tokens >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if self._buf_tokens == 0:
            self._buf.clear()
            self._buf_cursors.clear()
            return
        data = torch.cat(self._buf, dim=0)
        cursor = self._buf_cursors[-1]
        name = _shard_name(len(self._shards))
        payload = st_save({TENSOR_NAME: data}, metadata={"cursor": str(cursor)})
        _atomic_write_bytes(self.directory / name, payload)
        self._shards.append(ShardInfo(name, int(data.shape[0]), hashlib.sha256(payload).hexdigest(), cursor))
        self._write_index()
        self._buf.clear()
        self._buf_cursors.clear()
        self._buf_tokens = 0

    def _write_index(self) -> None:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "d_model": self.d_model,
            "dtype": self.dtype,
            "shards": [s.to_json() for s in self._shards],
            "complete": self._complete,
            "meta": self.meta,
        }
        _atomic_write_bytes(self.directory / INDEX_FILE, (json.dumps(doc, indent=1) + "\n").encode())

    def close(self, complete: bool = True) -> None:
        """Write the buffered remainder as a last shard and record whether the set is complete."""
        if self._closed:
            return
        self._flush()
        self._complete = self._complete or complete
        self._write_index()
        self._closed = True

    def truncate_to_cursor(self, cursor: int) -> None:
        """Drop committed shards (and buffered adds) whose cursor exceeds ``cursor``; marks the set incomplete
        if anything was dropped. Used to bring several writers back to a common resume point."""
        keep = [s for s in self._shards if s.cursor <= cursor]
        dropped = self._shards[len(keep):]
        if any(s.cursor <= cursor for s in dropped):
            raise ShardError(f"{self.directory / INDEX_FILE}: shard cursors are not increasing")
        kept_buf = [i for i, c in enumerate(self._buf_cursors) if c <= cursor]
        if len(kept_buf) != len(self._buf_cursors):
            self._buf = [self._buf[i] for i in kept_buf]
            self._buf_cursors = [self._buf_cursors[i] for i in kept_buf]
            self._buf_tokens = sum(t.shape[0] for t in self._buf)
        if dropped:
            self._shards = keep
            self._complete = False
            self._write_index()  # the index first: a crash now leaves only unlisted files, deleted on resume
            for s in dropped:
                (self.directory / s.file).unlink(missing_ok=True)
            self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)


# ---------------------------------------------------------------------------------------------- reader
@dataclass(frozen=True)
class _Segment:
    shard: int  # index into ShardReader.shards
    lo: int
    hi: int

    @property
    def n(self) -> int:
        return self.hi - self.lo


class ShardReader:
    """Read access to a shard directory, or to a contiguous token range of it (see `take`,
    `train_val_split`). Opening validates ``index.json`` and every shard's header (exists, complete,
    ``acts [n_tokens, d_model]``, dtype); `verify` additionally checks every sha256."""

    def __init__(self, directory: str | os.PathLike[str], *, expected_d_model: int | None = None) -> None:
        self.directory = Path(directory)
        idx = _read_index(self.directory)
        self.d_model: int = idx["d_model"]
        self.storage_dtype_name: str = idx["dtype"]
        self.complete: bool = idx["complete"]
        self.meta: dict[str, Any] = idx["meta"]
        self.shards: list[ShardInfo] = idx["shards"]
        if expected_d_model is not None and expected_d_model != self.d_model:
            raise ShardError(
                f"{self.directory / INDEX_FILE}: d_model={self.d_model} but {expected_d_model} was expected"
            )
        if not self.shards:
            raise ShardError(f"{self.directory / INDEX_FILE}: the shard set is empty (no committed shards)")
        for info in self.shards:
            _check_shard_header(self.directory, info, self.d_model, self.storage_dtype_name)
        self._segments: tuple[_Segment, ...] = tuple(_Segment(i, 0, s.n_tokens) for i, s in enumerate(self.shards))

    # -------------------------------------------------------------- views
    def _view(self, segments: list[_Segment]) -> ShardReader:
        view = object.__new__(ShardReader)
        view.__dict__.update(self.__dict__)
        view._segments = tuple(s for s in segments if s.n > 0)
        return view

    def _slice(self, start: int, stop: int) -> ShardReader:
        out: list[_Segment] = []
        pos = 0
        for seg in self._segments:
            a, b = max(start, pos), min(stop, pos + seg.n)
            if a < b:
                out.append(_Segment(seg.shard, seg.lo + (a - pos), seg.lo + (b - pos)))
            pos += seg.n
        return self._view(out)

    def take(self, n_tokens: int) -> ShardReader:
        """A view of the first ``n_tokens`` tokens (raises ShardError if fewer are available)."""
        if n_tokens <= 0 or n_tokens > self.n_tokens:
            raise ShardError(f"{self.directory}: cannot take {n_tokens} tokens, {self.n_tokens} available")
        return self._slice(0, n_tokens)

    def train_val_split(self, val_fraction: float) -> tuple[ShardReader, ShardReader | None]:
        """Hold out the last ``ceil(val_fraction * n_tokens)`` tokens (contiguous, so they come from documents
        the training part has not seen, except at most one boundary document). Returns ``(train, val)``;
        ``val`` is None when ``val_fraction == 0``."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        n_val = math.ceil(val_fraction * self.n_tokens)
        if n_val == 0:
            return self, None
        if n_val >= self.n_tokens:
            raise ShardError(f"{self.directory}: {self.n_tokens} tokens are too few to hold out {val_fraction:.0%}")
        cut = self.n_tokens - n_val
        return self._slice(0, cut), self._slice(cut, self.n_tokens)

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the tokens this reader (or view) yields: shard checksums and token ranges (JSON-ready).
        Independent of the directory's location, so a moved shard set still matches."""
        return {
            "d_model": self.d_model,
            "n_tokens": self.n_tokens,
            "shards": [s.sha256 for s in self.shards],
            "segments": [[seg.shard, seg.lo, seg.hi] for seg in self._segments],
        }

    # -------------------------------------------------------------- properties
    @property
    def n_tokens(self) -> int:
        """Tokens in this reader (or view)."""
        return sum(s.n for s in self._segments)

    @property
    def storage_dtype(self) -> torch.dtype:
        """On-disk dtype (float16 or bfloat16)."""
        return _STORAGE_DTYPES[self.storage_dtype_name]

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return (
            f"ShardReader({str(self.directory)!r}, n_tokens={self.n_tokens}, d_model={self.d_model}, "
            f"shards={len(self.shards)}, complete={self.complete})"
        )

    # -------------------------------------------------------------- reading
    def verify(self) -> None:
        """Check every shard's sha256 against ``index.json``; raises ShardError naming the first bad file."""
        for info in self.shards:
            path = self.directory / info.file
            try:
                digest = _sha256_file(path)
            except OSError as e:
                raise ShardError(f"{path}: unreadable ({e})") from e
            if digest != info.sha256:
                raise ShardError(f"{path}: sha256 mismatch (corrupt or modified after harvesting)")

    def _read(self, seg: _Segment) -> Tensor:
        info = self.shards[seg.shard]
        path = self.directory / info.file
        try:
            with safe_open(str(path), framework="pt") as f:
                t = f.get_slice(TENSOR_NAME)[seg.lo : seg.hi]
        except (SafetensorError, OSError) as e:
            raise ShardError(f"{path}: cannot read ({e})") from e
        if tuple(t.shape) != (seg.n, self.d_model):
            raise ShardError(f"{path}: read shape {tuple(t.shape)}, expected ({seg.n}, {self.d_model})")
        return t

    def _read_window(self, window: list[_Segment], size: int) -> Tensor:
        if len(window) == 1:
            return self._read(window[0])
        data = torch.empty(size, self.d_model, dtype=self.storage_dtype)  # no torch.cat: peak = window + 1 shard
        pos = 0
        for seg in window:
            data[pos : pos + seg.n] = self._read(seg)
            pos += seg.n
        return data

    def load_all(self, dtype: torch.dtype = torch.float32, max_tokens: int | None = None) -> Tensor:
        """All tokens in order as one tensor ``[n_tokens, d_model]`` (or the first ``max_tokens``)."""
        src = self if max_tokens is None or max_tokens >= self.n_tokens else self.take(max_tokens)
        out = torch.empty(src.n_tokens, self.d_model, dtype=dtype)
        pos = 0
        for seg in src._segments:
            out[pos : pos + seg.n] = src._read(seg)
            pos += seg.n
        return out

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        start_token: int = 0,
        window_shards: int = 4,
        device: str | torch.device | None = None,
    ) -> Iterator[Tensor]:
        """Yield batches ``[batch_size, d_model]`` (the last may be smaller) with bounded memory.

        The token stream is deterministic for a given ``seed``: shards (or view segments) are put in a
        seeded random order, grouped into windows of ``window_shards``, and the tokens of each window are
        permuted with a seed derived from ``(seed, window)``. Memory is one window in the storage dtype plus
        one batch. ``start_token`` skips that many tokens of the stream (without reading skipped windows), so
        ``iter_batches(b, start_token=i * b)`` continues exactly where batch ``i`` would have started.
        """
        if batch_size <= 0 or window_shards <= 0:
            raise ValueError(f"batch_size ({batch_size}) and window_shards ({window_shards}) must be positive")
        if not 0 <= start_token <= self.n_tokens:
            raise ValueError(f"start_token must be in [0, {self.n_tokens}], got {start_token}")
        segs = list(self._segments)
        if shuffle:
            order = torch.randperm(len(segs), generator=torch.Generator().manual_seed(seed)).tolist()
            segs = [segs[i] for i in order]
        per_window = window_shards if shuffle else 1
        windows = [segs[i : i + per_window] for i in range(0, len(segs), per_window)]
        pending: list[Tensor] = []
        n_pending = 0
        pos = 0  # stream position at the start of the current window
        for wi, window in enumerate(windows):
            size = sum(s.n for s in window)
            if pos + size <= start_token:
                pos += size
                continue
            data = self._read_window(window, size)
            perm = (
                torch.randperm(size, generator=torch.Generator().manual_seed(_window_seed(seed, wi)))
                if shuffle
                else None
            )
            i = max(0, start_token - pos)
            while i < size:
                take = min(batch_size - n_pending, size - i)
                piece = data[perm[i : i + take]] if perm is not None else data[i : i + take]
                pending.append(piece)
                n_pending += take
                i += take
                if n_pending == batch_size:
                    yield _finish_batch(pending, dtype, device)
                    pending, n_pending = [], 0
            pos += size
            del data, perm
        if n_pending:
            yield _finish_batch(pending, dtype, device)


def _window_seed(seed: int, window: int) -> int:
    return (seed * 1_000_003 + window * 7_919 + 1) % (2**63 - 1)


def _finish_batch(pieces: list[Tensor], dtype: torch.dtype, device: str | torch.device | None) -> Tensor:
    t = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return t.to(device=device, dtype=dtype) if device is not None else t.to(dtype=dtype)


def open_shards(directory: str | os.PathLike[str], *, expected_d_model: int | None = None) -> ShardReader:
    """Open a shard directory for reading (validates the index and shard headers; see `ShardReader`)."""
    return ShardReader(directory, expected_d_model=expected_d_model)
