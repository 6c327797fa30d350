"""Neuron database (installed as `safesail_neuron_db`): the contract between the offline and online halves.

The offline pipeline (`safesail build-db`) writes one with `DatabaseWriter`; the guard and `safesail db ...`
read it with `NeuronDB`. One database = one model + one hook site + several layers. Importing this package
does not import torch (only `DatabaseWriter.add_encoder` and `NeuronDB.encoder` need it).
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
