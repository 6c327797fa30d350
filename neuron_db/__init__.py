"""Neuron database (installed as `safesail_neuron_db`): the contract between the offline and online halves.

The offline pipeline (`safesail build-db`) writes one with `DatabaseWriter`; the guard and `safesail db ...`
read it with `NeuronDB`. One database = one model + one hook site + several layers. This package is a leaf: it
imports neither the guard (`safesail_guard`) nor the pipeline (`safesail_training`); both import it (enforced by
the import contracts in ``pyproject.toml``, see ``docs/architecture.md``).

Modules, one concept each: `records` (the record types and feature ids), `manifest` (``manifest.json``, file
names, schema version), `features_sqlite` (the feature tables), `encoders` (``encoders.safetensors``),
`competition` (``competition.safetensors``, the guard's exact-TopK rows), `tensor_file` (canonical safetensors
bytes), `fileio` (checksums and atomic writes), `publish` (atomic directory swap, `add_files`), `writer`
(`DatabaseWriter`), `database` (`NeuronDB`), `export` (JSONL/CSV), `errors`.

Importing this package does not import torch (only `DatabaseWriter.add_encoder`, `NeuronDB.encoder`,
`NeuronDB.competition` and the `competition` module need it).
"""

from safesail_neuron_db.database import DEFAULT_DATABASE, FeatureView, NeuronDB, SearchHit, default_database_path
from safesail_neuron_db.errors import (
    ChecksumError,
    CorruptDatabaseError,
    DatabaseNotFoundError,
    FeatureNotFoundError,
    LayerNotFoundError,
    ManifestError,
    ModelMismatchError,
    NeuronDBError,
    SchemaVersionError,
)
from safesail_neuron_db.export import EXPORT_FORMATS, export
from safesail_neuron_db.manifest import (
    ENCODERS_FILE,
    FEATURES_FILE,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Manifest,
    load_manifest,
)
from safesail_neuron_db.writer import DatabaseWriter

__all__ = [
    "DEFAULT_DATABASE",
    "DatabaseWriter",
    "NeuronDB",
    "FeatureView",
    "SearchHit",
    "default_database_path",
    "export",
    "EXPORT_FORMATS",
    "Manifest",
    "load_manifest",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "MANIFEST_FILE",
    "FEATURES_FILE",
    "ENCODERS_FILE",
    "NeuronDBError",
    "DatabaseNotFoundError",
    "ManifestError",
    "SchemaVersionError",
    "ChecksumError",
    "CorruptDatabaseError",
    "ModelMismatchError",
    "FeatureNotFoundError",
    "LayerNotFoundError",
]
