"""`DatabaseWriter`: collect encoders and feature records, then write a database directory in one atomic step.

Layout written by `finish` (see `safesail_neuron_db.manifest` for the manifest fields)::

    <directory>/manifest.json           model, site, layers, SAE configs, build params, counts, file checksums
    <directory>/features.sqlite         features / concepts / examples / scores tables + FTS5 index `search`
    <directory>/encoders.safetensors    layers.<L>.{latents, W_enc, b_enc, threshold, W_dec, b_dec}

Determinism: rows are inserted in (layer, latent) order into a fresh SQLite file with a fixed page size, the
FTS index is optimized and the file VACUUMed; the safetensors file is serialized here (sorted header, fixed
tensor order) rather than by the library, whose metadata order varies between processes. With the same SQLite
library, the same content therefore gives byte-identical files. Nothing time- or path-dependent is stored.

Atomicity: everything is written into a temporary sibling directory, fsynced, then swapped in (Linux
``renameat2(RENAME_EXCHANGE)`` where available, else two renames). A crash or error leaves either the old
database or the new one at ``directory``, never a half-written one.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import shutil
import sqlite3
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safesail_guard.fileio import atomic_write_text, fsync_dir, sha256_file
from safesail_neuron_db.manifest import (
    ENCODERS_FILE,
    FEATURES_FILE,
    MANIFEST_FILE,
    OPTIONAL_FILES,
    SCHEMA_VERSION,
    Counts,
    FileInfo,
    Manifest,
    ModelInfo,
    created_by,
    load_manifest,
)
from safesail_training.db_types import (
    ConceptHit,
    Explanation,
    FeatureRecords,
    SimulationScore,
    SuperpositionScore,
    feature_id,
    parse_feature_id,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DatabaseWriter", "add_files", "competition_bytes", "ENCODER_FIELDS", "APPLICATION_ID", "SQLITE_PAGE_SIZE"]

ENCODER_FIELDS = ("latents", "W_enc", "b_enc", "threshold", "W_dec", "b_dec")
APPLICATION_ID = 0x5353_4E44  # "SSND" in the SQLite header, so `file`/tools can tell what this is
SQLITE_PAGE_SIZE = 4096
ACT_DECIMALS = 4

SCHEMA_SQL = """
CREATE TABLE features (
    id TEXT PRIMARY KEY NOT NULL,
    layer INTEGER NOT NULL,
    latent INTEGER NOT NULL,
    domain TEXT,
    explanation TEXT,
    explanation_status TEXT NOT NULL,
    explainer TEXT,
    explanation_detail TEXT NOT NULL,
    explanation_prompt_tokens INTEGER NOT NULL,
    explanation_completion_tokens INTEGER NOT NULL,
    threshold REAL NOT NULL,
    max_act REAL NOT NULL,
    fire_rate REAL NOT NULL,
    map_x REAL,
    map_y REAL,
    sp_score REAL,
    sp_status TEXT,
    sp_method TEXT,
    token_corr REAL,
    segment_corr REAL,
    simulator TEXT,
    UNIQUE (layer, latent)
);
CREATE TABLE concepts (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    level0 TEXT NOT NULL,
    level1 TEXT NOT NULL,
    precision REAL NOT NULL,
    recall REAL NOT NULL,
    n_pairs INTEGER NOT NULL,
    concept_fires INTEGER NOT NULL,
    deconcept_fires INTEGER NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE INDEX concepts_by_domain ON concepts (level0 COLLATE NOCASE, feature_id);
CREATE TABLE examples (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    max_act REAL NOT NULL,
    source TEXT NOT NULL,
    tokens TEXT NOT NULL,
    acts TEXT NOT NULL,
    levels TEXT NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE TABLE scores (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('token', 'segment', 'superposition')),
    scorer TEXT NOT NULL,
    value REAL,
    status TEXT NOT NULL,
    n_examples INTEGER NOT NULL,
    n_units INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE search USING fts5(
    fid, explanation, concepts, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

_FEATURE_COLUMNS = (
    "id", "layer", "latent", "domain", "explanation", "explanation_status", "explainer", "explanation_detail",
    "explanation_prompt_tokens", "explanation_completion_tokens", "threshold", "max_act", "fire_rate",
    "map_x", "map_y", "sp_score", "sp_status", "sp_method", "token_corr", "segment_corr", "simulator",
)  # fmt: skip


@dataclass
class _PendingFeature:
    rec: FeatureRecords
    explanation: Explanation | None
    scores: list[SimulationScore]
    sp: SuperpositionScore | None
    map_xy: tuple[float, float] | None
    threshold: float


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _json_ready(name: str, value: Any) -> Any:
    """Round-trip through strict JSON so the manifest is guaranteed to serialize; a clear error otherwise."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serializable (plain str/int/float/bool/list/dict): {e}") from e


def _reject_absolute_paths(name: str, value: Any) -> None:
    """Databases must not depend on the build machine: refuse absolute paths inside stored configs."""
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_absolute_paths(f"{name}[{k!r}]", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_absolute_paths(f"{name}[{i}]", v)
    elif isinstance(value, str) and (value.startswith(("/", "\\", "~/")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        raise ValueError(f"{name} = {value!r} looks like an absolute path; store it relative or drop it "
                         "(a database must not depend on the machine it was built on)")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


class DatabaseWriter:
    """Collects one model + hook site's encoders and feature records, and writes them with `finish`."""

    def __init__(
        self,
        directory: Path,
        *,
        model: dict,
        site: str,
        sae_configs: dict[int, dict],
        build: dict,
        seed: int,
        map_method: str = "none",
    ) -> None:
        """``model`` needs ``name``, ``source`` and ``fingerprint`` (other keys such as ``path`` are dropped)."""
        self.directory = Path(directory)
        missing = [k for k in ("name", "source", "fingerprint") if not isinstance(model.get(k), str)]
        if missing or not model["name"] or not model["fingerprint"]:
            raise ValueError(f"model must give non-empty string 'name', 'source' and 'fingerprint'; got {model!r}")
        self._model = ModelInfo(name=model["name"], source=model["source"], fingerprint=model["fingerprint"])
        if not isinstance(site, str) or not site:
            raise ValueError(f"site must be a non-empty string such as 'mlp_out', got {site!r}")
        self._site = site
        self._sae = {int(layer): _json_ready(f"sae_configs[{layer}]", cfg) for layer, cfg in sae_configs.items()}
        self._build = _json_ready("build", build)
        _reject_absolute_paths("build", self._build)
        for layer, cfg in self._sae.items():
            _reject_absolute_paths(f"sae_configs[{layer}]", cfg)
        if not isinstance(self._build, dict):
            raise ValueError("build must be a dict of build parameters")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self._seed = seed
        self._map_method = map_method
        self._encoders: dict[int, dict[str, Tensor]] = {}
        self._features: dict[str, _PendingFeature] = {}
        self._finished = False

    # ------------------------------------------------------------------ collecting
    def add_encoder(
        self,
        layer: int,
        *,
        latents: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        threshold: Tensor,
        W_dec: Tensor,
        b_dec: Tensor,
    ) -> None:
        """Add the encoder/decoder rows of one layer's selected latents (rows in the order of ``latents``).

        Rows are re-ordered to ascending latent; weights are stored as float32, latents as int64.
        """
        import torch

        if layer in self._encoders:
            raise ValueError(f"layer {layer}: encoder added twice")
        if layer not in self._sae:
            raise ValueError(f"layer {layer}: no SAE config given for it (sae_configs has {sorted(self._sae)})")
        given = {"latents": latents, "W_enc": W_enc, "b_enc": b_enc, "threshold": threshold, "W_dec": W_dec, "b_dec": b_dec}
        for name, t in given.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"layer {layer}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if latents.ndim != 1 or latents.dtype.is_floating_point or latents.dtype == torch.bool:
            raise ValueError(f"layer {layer}: latents must be a 1-D integer tensor, got {latents.dtype} {tuple(latents.shape)}")
        n = latents.shape[0]
        if n == 0:
            raise ValueError(f"layer {layer}: latents is empty")
        if W_enc.ndim != 2 or W_enc.shape[0] != n:
            raise ValueError(f"layer {layer}: W_enc must be [n_latents={n}, d_in], got {tuple(W_enc.shape)}")
        d_in = W_enc.shape[1]
        expected = {"b_enc": (n,), "threshold": (n,), "W_dec": (n, d_in), "b_dec": (d_in,)}
        for name, shape in expected.items():
            t = given[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"layer {layer}: {name} must have shape {list(shape)}, got {list(t.shape)}")
        for name in ("W_enc", "b_enc", "threshold", "W_dec", "b_dec"):
            t = given[name]
            if not t.dtype.is_floating_point:
                raise ValueError(f"layer {layer}: {name} must be a floating-point tensor, got {t.dtype}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"layer {layer}: {name} contains NaN or infinite values")
        lat = latents.detach().cpu().to(torch.int64)
        if bool((lat < 0).any()):
            raise ValueError(f"layer {layer}: latents must be >= 0")
        order = torch.argsort(lat, stable=True)
        lat = lat[order]
        if n > 1 and bool((lat[1:] == lat[:-1]).any()):
            dup = sorted({int(v) for v in lat[1:][lat[1:] == lat[:-1]]})
            raise ValueError(f"layer {layer}: duplicate latents {dup[:10]}")

        def f32(t: Tensor) -> Tensor:
            return t.detach().cpu().to(torch.float32).contiguous()

        self._encoders[layer] = {
            "latents": lat.contiguous(),
            "W_enc": f32(W_enc)[order].contiguous(),
            "b_enc": f32(b_enc)[order].contiguous(),
            "threshold": f32(threshold)[order].contiguous(),
            "W_dec": f32(W_dec)[order].contiguous(),
            "b_dec": f32(b_dec),
        }

    def add_feature(
        self,
        rec: FeatureRecords,
        *,
        explanation: Explanation | None,
        scores: list[SimulationScore],
        sp: SuperpositionScore | None,
        map_xy: tuple[float, float] | None,
        threshold: float,
    ) -> None:
        """Add one feature with its explanation, simulation scores, SpScore, map position and firing threshold."""
        fid = rec.feature_id
        if parse_feature_id(fid) != (rec.layer, rec.latent):
            raise ValueError(f"feature {fid!r}: id does not match layer {rec.layer} / latent {rec.latent} "
                             f"(expected {feature_id(rec.layer, rec.latent)!r})")
        if fid in self._features:
            raise ValueError(f"feature {fid}: added twice (duplicate feature id)")
        _finite(f"{fid}: max_act", rec.max_act)
        _finite(f"{fid}: fire_rate", rec.fire_rate)
        _finite(f"{fid}: threshold", threshold)
        if map_xy is not None:
            if len(map_xy) != 2:
                raise ValueError(f"{fid}: map_xy must be (x, y), got {map_xy!r}")
            map_xy = (_finite(f"{fid}: map_x", map_xy[0]), _finite(f"{fid}: map_y", map_xy[1]))
        self._check_concepts(fid, rec.concepts)
        for i, ex in enumerate(rec.examples):
            if not (len(ex.tokens) == len(ex.acts) == len(ex.levels)):
                raise ValueError(f"{fid}: example {i} has {len(ex.tokens)} tokens, {len(ex.acts)} acts, "
                                 f"{len(ex.levels)} levels (must be equal)")
            _finite(f"{fid}: example {i} max_act", ex.max_act)
            for a in ex.acts:
                _finite(f"{fid}: example {i} activation", a)
        if explanation is not None:
            self._check_explanation(fid, explanation)
        for s in scores:
            self._check_simulation(fid, s)
        if sp is not None:
            self._check_status_value(fid, "superposition score", sp.feature_id, sp.status, sp.value)
        self._features[fid] = _PendingFeature(rec, explanation, list(scores), sp, map_xy, float(threshold))

    @staticmethod
    def _check_concepts(fid: str, concepts: list[ConceptHit]) -> None:
        seen: set[tuple[str, str]] = set()
        for c in concepts:
            key = (c.level0, c.level1)
            if key in seen:
                raise ValueError(f"{fid}: concept {c.level0}/{c.level1} listed twice")
            seen.add(key)
            _finite(f"{fid}: concept precision", c.precision)
            _finite(f"{fid}: concept recall", c.recall)

    @staticmethod
    def _check_explanation(fid: str, e: Explanation) -> None:
        if e.feature_id != fid:
            raise ValueError(f"{fid}: explanation is for feature {e.feature_id!r}")
        if e.status == "ok" and not (isinstance(e.text, str) and e.text.strip()):
            raise ValueError(f"{fid}: explanation status 'ok' needs a non-empty text")
        if e.status != "ok" and e.text is not None:
            raise ValueError(f"{fid}: explanation with status {e.status!r} must have text None")
        if not e.method:
            raise ValueError(f"{fid}: explanation method (the explainer) is empty")

    @classmethod
    def _check_simulation(cls, fid: str, s: SimulationScore) -> None:
        if s.method not in ("token", "segment"):
            raise ValueError(f"{fid}: simulation method must be 'token' or 'segment', got {s.method!r}")
        cls._check_status_value(fid, f"{s.method} score", s.feature_id, s.status, s.corr)

    @staticmethod
    def _check_status_value(fid: str, what: str, owner: str, status: str, value: float | None) -> None:
        if owner != fid:
            raise ValueError(f"{fid}: {what} is for feature {owner!r}")
        if status == "ok":
            _finite(f"{fid}: {what} value", value)
        elif value is not None:
            raise ValueError(f"{fid}: {what} with status {status!r} must have value None")

    # ------------------------------------------------------------------ writing
    def finish(self) -> Path:
        """Write the database into a temporary sibling directory, fsync it and swap it in at ``directory``."""
        if self._finished:
            raise ValueError("finish() was already called on this writer")
        self._check_complete()
        target = self.directory.absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_replaceable(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            self._write_sqlite(tmp / FEATURES_FILE)
            self._write_encoders(tmp / ENCODERS_FILE)
            files = {
                name: FileInfo(sha256=sha256_file(tmp / name, fsync=True), bytes=(tmp / name).stat().st_size)
                for name in (FEATURES_FILE, ENCODERS_FILE)
            }
            _publish(tmp, target, self._manifest(files).to_json())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._finished = True
        return self.directory

    def _check_complete(self) -> None:
        if not self._features:
            raise ValueError("no features were added; a database needs at least one feature")
        by_layer: dict[int, set[int]] = {}
        for p in self._features.values():
            by_layer.setdefault(p.rec.layer, set()).add(p.rec.latent)
        for layer in sorted(set(by_layer) | set(self._encoders)):
            if layer not in self._encoders:
                raise ValueError(f"layer {layer} has features but no encoder; call add_encoder({layer}, ...) first")
            enc_latents = set(self._encoders[layer]["latents"].tolist())
            feats = by_layer.get(layer, set())
            no_rows = sorted(feats - enc_latents)
            if no_rows:
                ids = [feature_id(layer, lat) for lat in no_rows[:10]]
                raise ValueError(f"features {ids} have no row in the layer {layer} encoder")
            no_feature = sorted(enc_latents - feats)
            if no_feature:
                ids = [feature_id(layer, lat) for lat in no_feature[:10]]
                raise ValueError(f"layer {layer} encoder has rows without a feature record: {ids}; "
                                 "pass only the rows of the selected features")
        rows = {layer: {lat: i for i, lat in enumerate(enc["latents"].tolist())} for layer, enc in self._encoders.items()}
        for p in self._features.values():
            stored = float(self._encoders[p.rec.layer]["threshold"][rows[p.rec.layer][p.rec.latent]])
            if abs(stored - p.threshold) > 1e-6 * max(1.0, abs(p.threshold)):
                raise ValueError(f"{p.rec.feature_id}: threshold {p.threshold} differs from the encoder's "
                                 f"threshold row {stored}")

    def _sorted(self) -> list[_PendingFeature]:
        return sorted(self._features.values(), key=lambda p: (p.rec.layer, p.rec.latent))

    def _manifest(self, files: dict[str, FileInfo]) -> Manifest:
        per_layer: dict[str, int] = {}
        per_domain: dict[str, int] = {}
        for p in self._sorted():
            per_layer[str(p.rec.layer)] = per_layer.get(str(p.rec.layer), 0) + 1
            for d in p.rec.domains:
                per_domain[d] = per_domain.get(d, 0) + 1
        return Manifest(
            schema_version=SCHEMA_VERSION,
            created_by=created_by(),
            model=self._model,
            site=self._site,
            layers=sorted(self._encoders),
            sae={str(layer): cfg for layer, cfg in sorted(self._sae.items())},
            build=self._build,
            seed=self._seed,
            counts=Counts(features=len(self._features), per_layer=per_layer, per_domain=per_domain),
            map_method=self._map_method,
            files=files,
        )

    def _write_sqlite(self, path: Path) -> None:
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            con.execute("PRAGMA journal_mode = OFF")  # a throw-away temp file until the swap
            con.execute("PRAGMA synchronous = OFF")  # durability comes from the fsync before the swap
            con.executescript(SCHEMA_SQL)
            con.execute("BEGIN")
            placeholders = ", ".join("?" for _ in _FEATURE_COLUMNS)
            for p in self._sorted():
                row = _feature_row(p)
                cur = con.execute(f"INSERT INTO features ({', '.join(_FEATURE_COLUMNS)}) VALUES ({placeholders})",
                                  [row[c] for c in _FEATURE_COLUMNS])
                fid = p.rec.feature_id
                con.executemany("INSERT INTO concepts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                    (fid, i, c.level0, c.level1, float(c.precision), float(c.recall), c.n_pairs,
                     c.concept_fires, c.deconcept_fires) for i, c in enumerate(p.rec.concepts)
                ])  # fmt: skip
                con.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                    (fid, i, e.kind, e.level, float(e.max_act), e.source, _dumps(list(e.tokens)),
                     _dumps([round(float(a), ACT_DECIMALS) for a in e.acts]), _dumps([int(v) for v in e.levels]))
                    for i, e in enumerate(p.rec.examples)
                ])  # fmt: skip
                con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _score_rows(p))
                concepts_text = " ; ".join(f"{c.level0} {c.level1}" for c in p.rec.concepts)
                con.execute("INSERT INTO search (rowid, fid, explanation, concepts) VALUES (?, ?, ?, ?)",
                            (cur.lastrowid, fid, row["explanation"] or "", concepts_text))
            con.execute("COMMIT")
            con.execute("INSERT INTO search (search) VALUES ('optimize')")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute("VACUUM")
        finally:
            con.close()

    def _write_encoders(self, path: Path) -> None:
        tensors: dict[str, Tensor] = {}
        for layer in sorted(self._encoders):
            for name in ENCODER_FIELDS:
                tensors[f"layers.{layer}.{name}"] = self._encoders[layer][name]
        metadata = {"format": "pt", "schema_version": str(SCHEMA_VERSION), "model_fingerprint": self._model.fingerprint}
        with open(path, "wb") as f:
            f.write(safetensors_bytes(tensors, metadata))
            f.flush()
            os.fsync(f.fileno())


def _feature_row(p: _PendingFeature) -> dict[str, Any]:
    rec, e, sp = p.rec, p.explanation, p.sp
    best = min(rec.concepts, key=lambda c: (-c.precision, -c.recall, c.level0, c.level1), default=None)
    headline: dict[str, SimulationScore] = {}
    for s in p.scores:
        if s.status == "ok" and s.method not in headline:
            headline[s.method] = s
    simulators = sorted({s.simulator for s in headline.values()})
    return {
        "id": rec.feature_id,
        "layer": rec.layer,
        "latent": rec.latent,
        "domain": best.level0 if best else None,
        "explanation": e.text if e else None,
        "explanation_status": e.status if e else "skipped",
        "explainer": e.method if e else None,
        "explanation_detail": e.detail if e else "",
        "explanation_prompt_tokens": e.prompt_tokens if e else 0,
        "explanation_completion_tokens": e.completion_tokens if e else 0,
        "threshold": p.threshold,
        "max_act": float(rec.max_act),
        "fire_rate": float(rec.fire_rate),
        "map_x": p.map_xy[0] if p.map_xy else None,
        "map_y": p.map_xy[1] if p.map_xy else None,
        "sp_score": sp.value if sp else None,
        "sp_status": sp.status if sp else None,
        "sp_method": sp.method if sp else None,
        "token_corr": headline["token"].corr if "token" in headline else None,
        "segment_corr": headline["segment"].corr if "segment" in headline else None,
        "simulator": "; ".join(simulators) if simulators else None,
    }


def _score_rows(p: _PendingFeature) -> list[tuple[Any, ...]]:
    fid = p.rec.feature_id
    rows: list[tuple[Any, ...]] = [
        (fid, i, s.method, s.simulator, s.corr, s.status, s.n_examples, s.n_units, s.prompt_tokens,
         s.generated_tokens, s.detail)
        for i, s in enumerate(p.scores)
    ]  # fmt: skip
    if p.sp is not None:
        sp = p.sp
        rows.append((fid, len(rows), "superposition", sp.method, sp.value, sp.status, 0, 0, sp.prompt_tokens,
                     sp.completion_tokens, sp.detail))
    return rows


_ST_DTYPES = {"torch.float32": ("F32", "<f4"), "torch.int64": ("I64", "<i8"), "torch.int8": ("I8", "<i1"),
              "torch.uint8": ("U8", "<u1")}


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """Serialize tensors in the safetensors format with a canonical header (sorted keys, fixed data order).

    Only float32 and int64 tensors are needed here. The header is padded with spaces to 8 bytes as the
    format allows, so tensor data stays aligned.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        if str(t.dtype) not in _ST_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        code, np_dtype = _ST_DTYPES[str(t.dtype)]
        data = t.detach().cpu().contiguous().numpy().astype(np_dtype, copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _publish(tmp: Path, target: Path, manifest_json: str) -> None:
    """Write the manifest last into the complete temporary directory, make it readable, sync, swap it in."""
    atomic_write_text(tmp / MANIFEST_FILE, manifest_json)
    for p in tmp.iterdir():
        p.chmod(0o644)
    tmp.chmod(0o755)
    fsync_dir(tmp)
    _swap_into_place(tmp, target)


def _check_replaceable(target: Path) -> None:
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


def competition_bytes(layers: dict[int, tuple[Tensor, Tensor, int]], model_fingerprint: str) -> bytes:
    """``competition.safetensors`` from ``{layer: (W_enc [n, d] fp32, b_enc [n], k)}``: 12-bit rows (int8 code,
    4-bit residual code, fp32 row scale; see `safesail_guard.runtime.competition`)."""
    from safesail_guard.runtime.competition import quantize_rows

    tensors: dict[str, Tensor] = {}
    meta = {"model_fingerprint": model_fingerprint, "schema_version": str(SCHEMA_VERSION), "quantization": "int8+int4-residual-row"}
    for layer in sorted(layers):
        W, b, k = layers[layer]
        qr = quantize_rows(W)
        tensors[f"layers.{layer}.W_q"] = qr.q
        tensors[f"layers.{layer}.W_r"] = qr.r_packed
        tensors[f"layers.{layer}.scale"] = qr.scale
        tensors[f"layers.{layer}.b_enc"] = b.detach().float().contiguous()
        meta[f"layers.{layer}.k"] = str(int(k))
    return safetensors_bytes(tensors, meta)


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
        _publish(tmp, target, new.to_json())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
