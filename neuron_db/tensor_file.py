"""Canonical safetensors serialization for the database's tensor files.

`encoders.safetensors` (`safesail_neuron_db.encoders`) and `competition.safetensors`
(`safesail_neuron_db.competition`) are written through `safetensors_bytes` rather than by the safetensors
library, whose metadata order varies between processes: here the header keys are sorted and the tensors are
laid out in the order given, so the same content gives byte-identical files (the manifest's checksums depend on
it). Reading goes through the library (`safetensors.safe_open`), which accepts this layout.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["safetensors_bytes"]

_ST_DTYPES = {"torch.float32": ("F32", "<f4"), "torch.int64": ("I64", "<i8"), "torch.int8": ("I8", "<i1"),
              "torch.uint8": ("U8", "<u1")}


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """Serialize tensors in the safetensors format with a canonical header (sorted keys, fixed data order).

    Only float32, int64, int8 and uint8 tensors are needed here. The header is padded with spaces to 8 bytes as
    the format allows, so tensor data stays aligned.
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
