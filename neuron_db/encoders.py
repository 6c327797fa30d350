"""``encoders.safetensors``: per layer, the rows of the SAE the guard needs for the database's features.

Layout: ``layers.<L>.{latents, W_enc, b_enc, threshold, W_dec, b_dec}`` (rows in ascending latent order; weights
float32, latents int64) with metadata ``{format, schema_version, model_fingerprint}``. `DatabaseWriter`
(`safesail_neuron_db.writer`) validates the tensors and writes them with `write_encoders`; `NeuronDB.encoder`
(`safesail_neuron_db.database`) reads one layer with `read_encoder`, which checks the metadata against the
manifest. Serialization is canonical (`safesail_neuron_db.tensor_file`). torch is imported only when a
function here runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from safesail_neuron_db.errors import CorruptDatabaseError
from safesail_neuron_db.manifest import SCHEMA_VERSION
from safesail_neuron_db.tensor_file import safetensors_bytes

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["ENCODER_FIELDS", "write_encoders", "read_encoder"]

ENCODER_FIELDS = ("latents", "W_enc", "b_enc", "threshold", "W_dec", "b_dec")
"""The tensors stored per layer, in file order."""


def write_encoders(path: Path, encoders: dict[int, dict[str, Tensor]], model_fingerprint: str) -> None:
    """Write ``{layer: {field: tensor}}`` (every field of `ENCODER_FIELDS`) to ``path`` and fsync it."""
    tensors: dict[str, Tensor] = {}
    for layer in sorted(encoders):
        for name in ENCODER_FIELDS:
            tensors[f"layers.{layer}.{name}"] = encoders[layer][name]
    metadata = {"format": "pt", "schema_version": str(SCHEMA_VERSION), "model_fingerprint": model_fingerprint}
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors, metadata))
        f.flush()
        os.fsync(f.fileno())


def read_encoder(path: Path, layer: int, model_fingerprint: str) -> dict[str, Tensor]:
    """``{latents, W_enc, b_enc, threshold, W_dec, b_dec}`` of one layer; `CorruptDatabaseError` when the file
    cannot be read or its metadata does not match ``model_fingerprint`` and this code's schema version."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            out = {name: f.get_tensor(f"layers.{layer}.{name}") for name in ENCODER_FIELDS}
    except (SafetensorError, OSError, KeyError) as e:
        raise CorruptDatabaseError(f"{path}: cannot read layer {layer} ({e})") from e
    if meta.get("model_fingerprint") != model_fingerprint or meta.get("schema_version") != str(SCHEMA_VERSION):
        raise CorruptDatabaseError(f"{path}: metadata {meta} does not match the manifest (model fingerprint "
                                   f"{model_fingerprint[:16]}, schema {SCHEMA_VERSION})")
    return out
