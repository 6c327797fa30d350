"""``manifest.json``: what a database directory holds and for which model, plus the checksums of its files.

The manifest is written last (by `safesail_neuron_db.publish`, for `DatabaseWriter.finish` and `add_files`) and
read first by `NeuronDB.open`; this module also names the database's files and its `SCHEMA_VERSION`. A manifest
holds no timestamps and no absolute paths, so two builds of the same content give byte-identical manifests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safesail_neuron_db.errors import (
    BUILD_HINT,
    DatabaseNotFoundError,
    ManifestError,
    SchemaVersionError,
)
from safesail_neuron_db.fileio import read_json_object

SCHEMA_VERSION = 1
"""Version of the on-disk database format written by `DatabaseWriter`."""
SUPPORTED_SCHEMA_VERSIONS = (1,)

MANIFEST_FILE = "manifest.json"
FEATURES_FILE = "features.sqlite"
ENCODERS_FILE = "encoders.safetensors"
DATA_FILES = (FEATURES_FILE, ENCODERS_FILE)
COMPETITION_FILE = "competition.safetensors"
"""Optional: every encoder row of each layer (int8 + per-row scale) for the guard's exact TopK firing rule."""
HEAD_FILE = "risk_head.json"
"""Optional: the guard's sparse risk head over the database's features (fitted on the concept pairs)."""
DETECTION_HEAD_FILE = "detection_head.safetensors"
"""Optional: the guard's detection head, linear over SAE codes and their error (`safesail_neuron_db.detection_head`)."""
OPTIONAL_FILES = (COMPETITION_FILE, HEAD_FILE, DETECTION_HEAD_FILE)


class ModelInfo(BaseModel):
    """The model a database was built for; ``fingerprint`` is its identity hash (readers compare it)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    source: str
    fingerprint: str = Field(min_length=1)


class FileInfo(BaseModel):
    """Checksum and size of one data file."""

    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Counts(BaseModel):
    """Feature counts: total, per layer and per domain (a feature with concepts in two domains counts in both)."""

    model_config = ConfigDict(extra="forbid")
    features: int = Field(ge=0)
    per_layer: dict[str, int]
    per_domain: dict[str, int]


class Manifest(BaseModel):
    """The parsed ``manifest.json`` of a database directory."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int
    created_by: str
    model: ModelInfo
    site: str = Field(min_length=1)
    layers: list[int]
    sae: dict[str, dict[str, Any]]
    build: dict[str, Any]
    seed: int
    counts: Counts
    map_method: str
    files: dict[str, FileInfo]

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, 2-space indent, trailing newline) - identical for identical content."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def created_by() -> str:
    """``"safesail-guard <installed version>"``, or ``"safesail-guard unknown"`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"safesail-guard {version('safesail-guard')}"
    except PackageNotFoundError:
        return "safesail-guard unknown"


def load_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/manifest.json``.

    Raises `DatabaseNotFoundError` (no directory / no manifest), `SchemaVersionError` (a version this code
    does not read) or `ManifestError` (anything else wrong with the file).
    """
    path = directory / MANIFEST_FILE
    if directory.exists() and not directory.is_dir():
        raise DatabaseNotFoundError(f"{directory} is a file, not a neuron database directory; {BUILD_HINT}")
    if not directory.is_dir():
        raise DatabaseNotFoundError(f"no neuron database at {directory}: the directory does not exist; {BUILD_HINT}")
    if not path.is_file():
        raise DatabaseNotFoundError(f"{directory} is not a neuron database (no {MANIFEST_FILE}); {BUILD_HINT}")
    doc = read_json_object(path, ManifestError)
    found = doc.get("schema_version")
    if found not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        raise SchemaVersionError(
            f"{path}: schema_version {found!r} is not supported (this safesail-guard reads version {supported}); "
            "rebuild the database with `safesail build-db`"
        )
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ManifestError(f"{path}: invalid manifest at '{where}': {first['msg']}") from e
    missing = [name for name in DATA_FILES if name not in manifest.files]
    if missing:
        raise ManifestError(f"{path}: 'files' does not list {', '.join(missing)}")
    unknown = sorted(set(manifest.files) - set(DATA_FILES) - set(OPTIONAL_FILES))
    if unknown:
        raise ManifestError(f"{path}: 'files' lists unknown files {', '.join(unknown)}")
    return manifest
