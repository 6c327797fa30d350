"""Activation shards: round trip, crash/resume, truncation, integrity checks and deterministic shuffling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safesail_training.shards import INDEX_FILE, ShardError, ShardWriter, open_shards

D = 8


def write_set(directory: Path, sizes: list[int], *, shard_tokens: int = 10, dtype: str = "float16",
              complete: bool = True) -> torch.Tensor:
    """Write one add per entry of ``sizes`` (cursor = its position); returns everything added, in order."""
    w = ShardWriter(directory, D, dtype=dtype, shard_tokens=shard_tokens, meta={"hook_point": "layers.0.mlp_out"})
    parts = []
    for cursor, n in enumerate(sizes):
        acts = torch.arange(n * D, dtype=torch.float32).reshape(n, D) / 64 + cursor
        w.add(acts, cursor)
        parts.append(acts)
    w.close(complete=complete)
    return torch.cat(parts)


def test_round_trip(tmp_path: Path) -> None:
    expected = write_set(tmp_path, [4, 4, 4, 7, 3, 1])
    r = open_shards(tmp_path)
    assert (r.d_model, r.n_tokens, r.complete) == (D, 23, True)
    assert r.meta == {"hook_point": "layers.0.mlp_out"}
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["schema_version"] == 1 and index["dtype"] == "float16"
    # adds are never split: shards end at add boundaries; cursor = last add in the shard
    assert [(s["n_tokens"], s["cursor"]) for s in index["shards"]] == [(12, 2), (10, 4), (1, 5)]
    torch.testing.assert_close(r.load_all(), expected.half().float())
    assert r.load_all(max_tokens=5).shape == (5, D)
    r.verify()
    batches = list(r.iter_batches(5, shuffle=False))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 5, 3]
    torch.testing.assert_close(torch.cat(batches), r.load_all())


def test_bfloat16_storage(tmp_path: Path) -> None:
    expected = write_set(tmp_path, [6, 6], dtype="bfloat16")
    r = open_shards(tmp_path)
    assert r.storage_dtype == torch.bfloat16
    torch.testing.assert_close(r.load_all(), expected.bfloat16().float())


def test_resume_after_crash(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, D, shard_tokens=8)
    for cursor in range(5):
        w.add(torch.full((4, D), float(cursor)), cursor)
    # crash: writer dropped without close; shards end at cursors 1 and 3, cursor 4 is only buffered
    assert (w.n_tokens, w.resume_cursor) == (16, 3)
    w.add(torch.full((2, D), 5.0), 5)  # still below shard_tokens: buffered only, lost
    (tmp_path / ".shard_00002.safetensors.abc.tmp").write_bytes(b"partial")  # a temp file from the crash
    del w
    w2 = ShardWriter(tmp_path, D, shard_tokens=8)
    assert (w2.n_tokens, w2.resume_cursor, w2.complete) == (16, 3, False)
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ShardError, match="goes backwards"):
        w2.add(torch.zeros(1, D), 3)
    for cursor in range(4, 8):
        w2.add(torch.full((4, D), float(cursor)), cursor)
    w2.close()
    r = open_shards(tmp_path)
    assert r.complete and r.n_tokens == 32
    values = r.load_all()[:, 0]
    assert values.tolist() == [float(c) for c in range(8) for _ in range(4)]


def test_uncommitted_shard_file_is_discarded_on_resume(tmp_path: Path) -> None:
    write_set(tmp_path, [10, 10], complete=False)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    # simulate a crash between renaming a shard into place and rewriting the index
    (tmp_path / "shard_00002.safetensors").write_bytes((tmp_path / "shard_00001.safetensors").read_bytes())
    w = ShardWriter(tmp_path, D, shard_tokens=10)
    assert not (tmp_path / "shard_00002.safetensors").exists()
    assert w.n_tokens == sum(s["n_tokens"] for s in index["shards"])


def test_resume_validates_d_model_dtype_and_meta(tmp_path: Path) -> None:
    write_set(tmp_path, [4])
    with pytest.raises(ShardError, match="d_model=8, writer got 16"):
        ShardWriter(tmp_path, 16)
    with pytest.raises(ShardError, match="bfloat16"):
        ShardWriter(tmp_path, D, dtype="bfloat16")
    with pytest.raises(ShardError, match="meta differs"):
        ShardWriter(tmp_path, D, meta={"hook_point": "layers.1.mlp_out"})


def test_add_to_complete_set_is_refused(tmp_path: Path) -> None:
    write_set(tmp_path, [4])
    w = ShardWriter(tmp_path, D)
    assert w.complete
    with pytest.raises(ShardError, match="complete"):
        w.add(torch.zeros(1, D), 10)


def test_add_rejects_wrong_width_and_non_finite_values(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, D)
    with pytest.raises(ShardError, match=r"expected acts \[n, 8\]"):
        w.add(torch.zeros(3, D + 1), 0)
    with pytest.raises(ShardError, match="NaN or inf"):
        w.add(torch.full((2, D), float("nan")), 0)
    with pytest.raises(ShardError, match="float16 range.*bfloat16"):
        w.add(torch.full((2, D), 1e5), 0)
    wb = ShardWriter(tmp_path / "bf16", D, dtype="bfloat16")
    wb.add(torch.full((2, D), 1e5), 0)  # fine in bfloat16


def test_truncate_to_cursor(tmp_path: Path) -> None:
    write_set(tmp_path, [5, 5, 5, 5, 5, 5])  # shards end at cursors 1, 3, 5
    w = ShardWriter(tmp_path, D, shard_tokens=10)
    w.truncate_to_cursor(3)
    assert (w.resume_cursor, w.n_tokens, w.complete) == (3, 20, False)
    assert sorted(p.name for p in tmp_path.glob("shard_*")) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    w.truncate_to_cursor(3)  # idempotent
    w.add(torch.zeros(2, D), 4)
    w.truncate_to_cursor(3)  # also drops buffered adds beyond the cursor
    w.close()
    assert open_shards(tmp_path).n_tokens == 20
    w = ShardWriter(tmp_path, D, shard_tokens=10)
    w.truncate_to_cursor(-1)
    assert (w.n_tokens, w.resume_cursor) == (0, -1)


def test_verify_detects_flipped_byte(tmp_path: Path) -> None:
    write_set(tmp_path, [10, 10])
    path = tmp_path / "shard_00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    r = open_shards(tmp_path)  # the header is intact, so opening works
    with pytest.raises(ShardError, match="shard_00001.safetensors: sha256 mismatch"):
        r.verify()


def test_truncated_shard(tmp_path: Path) -> None:
    write_set(tmp_path, [10, 10])
    path = tmp_path / "shard_00000.safetensors"
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(ShardError, match="shard_00000.safetensors: corrupt or truncated"):
        open_shards(tmp_path)


def test_missing_shard_and_index(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="does not exist"):
        open_shards(tmp_path / "nowhere")
    tmp_path.joinpath("empty_dir").mkdir()
    with pytest.raises(ShardError, match=f"{INDEX_FILE}: missing"):
        open_shards(tmp_path / "empty_dir")
    write_set(tmp_path / "s", [10, 10])
    (tmp_path / "s" / "shard_00001.safetensors").unlink()
    with pytest.raises(ShardError, match="shard_00001.safetensors: listed in index.json but missing"):
        open_shards(tmp_path / "s")


def test_corrupt_index(tmp_path: Path) -> None:
    write_set(tmp_path, [10])
    (tmp_path / INDEX_FILE).write_text('{"schema_version": 1, "d_model": 8, "dtyp')
    with pytest.raises(ShardError, match="index.json: not valid JSON"):
        open_shards(tmp_path)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"schema_version": 2, "d_model": 8, "dtype": "float16", "shards": []}))
    with pytest.raises(ShardError, match="schema_version 2 is not supported"):
        open_shards(tmp_path)


def test_d_model_mismatch(tmp_path: Path) -> None:
    write_set(tmp_path, [10])
    with pytest.raises(ShardError, match="d_model=8 but 16 was expected"):
        open_shards(tmp_path, expected_d_model=16)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    index["d_model"] = 4
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ShardError, match=r"shard_00000.safetensors: tensor shape \[10, 8\] does not match"):
        open_shards(tmp_path)


def test_empty_set(tmp_path: Path) -> None:
    ShardWriter(tmp_path, D).close()
    with pytest.raises(ShardError, match="empty"):
        open_shards(tmp_path)


def test_shuffling_is_deterministic_and_a_permutation(tmp_path: Path) -> None:
    write_set(tmp_path, [7] * 12, shard_tokens=10)
    r = open_shards(tmp_path)
    ordered = r.load_all()

    def stream(seed: int, start: int = 0) -> torch.Tensor:
        return torch.cat(list(r.iter_batches(6, seed=seed, window_shards=2, start_token=start)))

    a, b, c = stream(1), stream(1), stream(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, ordered)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(a) == key(ordered)
    # start_token continues the same stream exactly (this is what makes training resumable)
    assert torch.equal(stream(1, start=30), a[30:])
    assert torch.equal(stream(1, start=78), a[78:])


def test_views_split_and_take(tmp_path: Path) -> None:
    write_set(tmp_path, [5] * 8, shard_tokens=10)
    r = open_shards(tmp_path)
    train, val = r.train_val_split(0.1)
    assert (train.n_tokens, val.n_tokens) == (36, 4)
    everything = r.load_all()
    torch.testing.assert_close(val.load_all(), everything[36:])
    torch.testing.assert_close(train.take(12).load_all(), everything[:12])
    shuffled = torch.cat(list(train.iter_batches(7, seed=3)))
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, everything[:36].tolist()))
    assert r.train_val_split(0.0) == (r, None)
    with pytest.raises(ShardError, match="cannot take 41 tokens"):
        r.take(41)
