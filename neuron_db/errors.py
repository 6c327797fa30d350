"""Errors raised by the neuron database. Every one subclasses `NeuronDBError`, so callers (the CLI, the guard)
can catch one type and show its message: each message says what is wrong and, where it can, what to do."""

from __future__ import annotations

BUILD_HINT = "build one with `safesail build-db` (or pass the path of an existing database)"


class NeuronDBError(Exception):
    """Base class of every neuron-database error."""


class DatabaseNotFoundError(NeuronDBError):
    """No database directory (or no manifest.json in it) at the given path."""


class ManifestError(NeuronDBError):
    """manifest.json is unreadable or does not describe a valid database."""


class SchemaVersionError(NeuronDBError):
    """The database was written in a schema version this code cannot read."""


class ChecksumError(NeuronDBError):
    """A database file is missing, truncated or does not match the sha256 in the manifest."""


class CorruptDatabaseError(NeuronDBError):
    """SQLite or safetensors could not read a file (typically when opened with ``verify=False``)."""


class ModelMismatchError(NeuronDBError):
    """The database was built for a different model than the one in use."""


class FeatureNotFoundError(NeuronDBError):
    """No feature with the requested id."""


class LayerNotFoundError(NeuronDBError):
    """The database holds no encoder for the requested layer."""
