"""Shared fixtures: seeding, tiny random Llama/Qwen2 models and a tiny tokenizer built in-process (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_models import make_tiny_model, make_tiny_tokenizer, save_tiny_model_dir


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {fam: save_tiny_model_dir(make_tiny_model(fam), tiny_tokenizer, root / fam) for fam in ("llama", "qwen2")}


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dirs, tiny_family):
    from safesail_guard.models import load_model

    return load_model(str(tiny_model_dirs[tiny_family]))


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2 model (slow tests only)."""
    from safesail_guard.models import load_model

    return load_model("embedded")


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dirs):
    """The tiny random Llama, loaded once for every test that needs a guard on it."""
    from safesail_guard.models import load_model

    return load_model(str(tiny_model_dirs["llama"]))


@pytest.fixture(scope="session")
def llama_guard(tiny_llama, tmp_path_factory):
    """A `Guard` on the tiny Llama with a real random-SAE database (12 features at layers 0 and 2); its
    database directory is ``llama_guard.db.path``. Shared read-only by runtime, CLI, server and UI tests."""
    from safesail_guard.runtime.guard import Guard
    from tests.runtime.guard_factory import make_guard_db

    path, _ = make_guard_db(tmp_path_factory.mktemp("llama_guard") / "db", tiny_llama)
    return Guard.from_db(path, tiny_llama)
