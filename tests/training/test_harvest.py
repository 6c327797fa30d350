"""Harvesting on tiny random models: shapes, masks, early stop equivalence, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safesail_guard.hooks import HookPoint, capture
from safesail_training.harvest import HarvestConfig, HarvestError, encode_record, harvest
from safesail_training.shards import open_shards

DOCS = [
    {"text": "The quick brown fox jumps over the lazy dog. " * (i % 4 + 1), "kind": "doc"} for i in range(30)
] + [{"text": f"How do I bake bread number {i}?", "kind": "chat"} for i in range(10)]


def _cfg(**kw) -> HarvestConfig:
    base = dict(points=["layers.1.mlp_out", "layers.2.resid_post"], max_tokens=10_000, window_docs=8, shard_tokens=256, max_seq_len=32)
    base.update(kw)
    return HarvestConfig(**base)


def test_harvest_writes_all_kept_tokens(tiny_loaded, tmp_path: Path) -> None:
    res = harvest(tiny_loaded, DOCS, tmp_path, _cfg(), progress=False)
    expected = 0
    for rec in DOCS:
        for enc in encode_record(tiny_loaded.tokenizer, rec, 32):
            expected += sum(not s for s in enc.special)
    assert res.n_tokens == expected
    for p in res.points:
        r = open_shards(tmp_path / p)
        assert r.complete and r.n_tokens == expected and r.d_model == 64
        r.verify()


def test_harvested_rows_equal_unbatched_forward(tiny_loaded, tmp_path: Path) -> None:
    """Batching with padding and early stop must not change the activations of any kept token."""
    docs = DOCS[:6]
    harvest(tiny_loaded, docs, tmp_path, _cfg(points=["layers.1.mlp_out"], window_docs=64), progress=False)
    stored = open_shards(tmp_path / "layers.1.mlp_out").load_all()
    # reference: one document at a time, full forward, same (length-sorted) order as the harvester
    seqs = sorted((enc for rec in docs for enc in encode_record(tiny_loaded.tokenizer, rec, 32)), key=len)
    ref = []
    for enc in seqs:
        with torch.no_grad(), capture(tiny_loaded.model, ["layers.1.mlp_out"]) as acts:
            tiny_loaded.model(input_ids=torch.tensor([enc.input_ids]))
        keep = torch.tensor([not s for s in enc.special])
        ref.append(acts[HookPoint(1, "mlp_out")][0][0][keep])
    ref_t = torch.cat(ref)
    assert stored.shape == ref_t.shape
    assert torch.allclose(stored, ref_t.half().float(), atol=2e-3)


def test_special_tokens_excluded_or_kept(tiny_loaded, tmp_path: Path) -> None:
    chats = [{"text": "hi there", "kind": "chat"}] * 4
    a = harvest(tiny_loaded, chats, tmp_path / "a", _cfg(points=["layers.0.mlp_out"]), progress=False)
    b = harvest(tiny_loaded, chats, tmp_path / "b", _cfg(points=["layers.0.mlp_out"], exclude_special=False), progress=False)
    assert b.n_tokens > a.n_tokens


def test_resume_after_interruption_matches_uninterrupted(tiny_loaded, tmp_path: Path) -> None:
    cfg = _cfg()
    full = harvest(tiny_loaded, DOCS, tmp_path / "full", cfg, progress=False)

    class Boom(Exception):
        pass

    def exploding(n: int):
        for i, r in enumerate(DOCS):
            if i == n:
                raise Boom
            yield r

    with pytest.raises(Boom):
        harvest(tiny_loaded, exploding(25), tmp_path / "part", cfg, progress=False)
    index = json.loads((tmp_path / "part" / "layers.1.mlp_out" / "index.json").read_text())
    assert not index["complete"] and index["shards"], "some shards must have been committed before the crash"
    resumed = harvest(tiny_loaded, DOCS, tmp_path / "part", cfg, progress=False)
    assert resumed.resumed_from_tokens > 0
    for p in full.points:
        assert torch.equal(open_shards(tmp_path / "full" / p).load_all(), open_shards(tmp_path / "part" / p).load_all())
    again = harvest(tiny_loaded, DOCS, tmp_path / "part", cfg, progress=False)
    assert again.n_records == 0 and again.n_tokens == full.n_tokens


def test_max_tokens_is_respected(tiny_loaded, tmp_path: Path) -> None:
    res = harvest(tiny_loaded, DOCS, tmp_path, _cfg(max_tokens=100), progress=False)
    assert res.n_tokens == 100
    assert open_shards(tmp_path / "layers.1.mlp_out").n_tokens == 100


def test_bad_inputs(tiny_loaded, tmp_path: Path) -> None:
    with pytest.raises(HarvestError, match="no tokens"):
        harvest(tiny_loaded, [{"text": "   "}], tmp_path / "e", _cfg(), progress=False)
    with pytest.raises(ValueError, match="at least one hook point"):
        HarvestConfig(points=[])
    with pytest.raises(Exception, match=r"layers 0\.\.2"):
        harvest(tiny_loaded, DOCS, tmp_path / "x", _cfg(points=["layers.7.mlp_out"]), progress=False)
    harvest(tiny_loaded, DOCS[:5], tmp_path / "m", _cfg(), progress=False)
    with pytest.raises(HarvestError, match="different model, config or corpus"):
        harvest(tiny_loaded, DOCS[:5], tmp_path / "m", _cfg(max_seq_len=16), progress=False)


def test_resume_when_one_writer_closed_and_another_did_not(tiny_loaded, tmp_path: Path) -> None:
    """A crash between two writers' close() leaves one complete and one not; the rerun must finish cleanly."""
    cfg = _cfg()
    full = harvest(tiny_loaded, DOCS, tmp_path, cfg, progress=False)
    index_path = tmp_path / "layers.2.resid_post" / "index.json"
    index = json.loads(index_path.read_text())
    index["complete"] = False
    index_path.write_text(json.dumps(index))
    again = harvest(tiny_loaded, DOCS, tmp_path, cfg, progress=False)
    assert again.n_tokens == full.n_tokens
    assert all(open_shards(tmp_path / p).complete for p in full.points)


def test_adding_a_point_keeps_the_finished_one(tiny_loaded, tmp_path: Path) -> None:
    """A second harvest with more points leaves a finished point's shards untouched and fills the new one."""
    first = harvest(tiny_loaded, DOCS, tmp_path, _cfg(points=["layers.1.mlp_out"]), progress=False)
    index = tmp_path / "layers.1.mlp_out" / "index.json"
    before = index.read_bytes()
    both = harvest(tiny_loaded, DOCS, tmp_path, _cfg(points=["layers.1.mlp_out", "layers.2.resid_post"]), progress=False)
    assert index.read_bytes() == before
    assert both.points == ["layers.1.mlp_out", "layers.2.resid_post"]
    new = open_shards(tmp_path / "layers.2.resid_post")
    assert new.complete and new.n_tokens == first.n_tokens
    # and the new point holds the same tokens as a harvest of it alone
    alone = harvest(tiny_loaded, DOCS, tmp_path / "alone", _cfg(points=["layers.2.resid_post"]), progress=False)
    assert torch.equal(open_shards(alone.out_dir / "layers.2.resid_post").load_all(), new.load_all())
