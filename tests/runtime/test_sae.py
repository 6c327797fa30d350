"""TopKSAE: shapes, sparsity, the fast autograd path against the dense reference, and checkpoint I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import safesail_guard.sae as sae_mod
from safesail_guard.sae import CFG_FILE, WEIGHTS_FILE, SAECheckpointError, SAEConfig, SparseCode, TopKSAE


def tiny_sae(d_in: int = 16, expansion: int = 4, k: int = 4, seed: int = 0, **kw) -> TopKSAE:
    """A small SAE with non-trivial biases (so bias gradients are exercised)."""
    sae = TopKSAE(SAEConfig(d_in=d_in, expansion=expansion, k=k, **kw), seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(sae.n_latents, generator=g))
    return sae


# ---------------------------------------------------------------------------------------------- config
def test_config_derives_n_latents_and_checks_fields() -> None:
    assert SAEConfig(d_in=8, k=2).n_latents == 80
    assert SAEConfig(d_in=8, n_latents=24, k=2).n_latents == 24
    with pytest.raises(ValueError, match="k=100 must be <= n_latents=80"):
        SAEConfig(d_in=8, k=100)
    with pytest.raises(ValueError, match="n_latents=24 contradicts"):
        SAEConfig(d_in=8, expansion=4, n_latents=24, k=2)
    with pytest.raises(ValueError, match="hook_point"):
        SAEConfig(d_in=8, k=2, hook_point="../etc")
    with pytest.raises(ValidationError, match="d_in"):
        SAEConfig(d_in=0, k=2)
    with pytest.raises(ValidationError, match="dtype"):
        SAEConfig(d_in=8, k=2, dtype="float64")
    for name, field in SAEConfig.model_fields.items():
        assert field.description, f"SAEConfig.{name} has no description"


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("lead", [(), (7,), (3, 5), (2, 3, 4)])
def test_shapes_for_any_leading_dims(lead: tuple[int, ...]) -> None:
    sae = tiny_sae()
    x = torch.randn(*lead, 16)
    out = sae(x)
    assert out.x_hat.shape == (*lead, 16)
    assert out.code.values.shape == out.code.indices.shape == (*lead, 4)
    assert out.pre_acts.shape == (*lead, sae.n_latents)
    assert sae.dense(out.code).shape == (*lead, sae.n_latents)
    assert sae.decode(sae.encode(x)).shape == (*lead, 16)
    assert sae.pre_acts(x).shape == (*lead, sae.n_latents)
    torch.testing.assert_close(sae.decode(out.code), out.x_hat)


def test_exactly_k_nonzeros_and_they_are_the_topk() -> None:
    sae = tiny_sae(d_in=32, expansion=8, k=6)
    x = torch.randn(50, 32) * 3
    code = sae.encode(x)
    z = sae.dense(code)
    assert ((z != 0).sum(-1) == 6).all()
    assert (code.values > 0).all()
    pre = sae.pre_acts(x)
    kth = pre.topk(6, dim=-1).values[:, -1:]
    assert (pre.gather(-1, code.indices) >= kth - 1e-6).all()
    torch.testing.assert_close(code.values, pre.gather(-1, code.indices).relu())


def test_relu_zeroes_negative_selected_values() -> None:
    sae = tiny_sae()
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    code = sae.encode(torch.randn(5, 16))
    assert (code.values == 0).all()
    assert code.indices.shape == (5, 4)


def test_wrong_width_is_an_error() -> None:
    with pytest.raises(ValueError, match="d_in=16"):
        tiny_sae().encode(torch.randn(3, 15))


def test_decoder_rows_unit_norm_after_init_and_normalize() -> None:
    sae = tiny_sae()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.n_latents))
    torch.testing.assert_close(sae.W_enc, sae.W_dec)  # tied init
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.n_latents, 1) * 5 + 0.1)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.n_latents))


def test_remove_parallel_grad_leaves_only_orthogonal_component() -> None:
    sae = tiny_sae()
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_grad_()
    dots = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert dots.abs().max() < 1e-5


def test_init_b_dec_geometric_median_is_robust_to_outliers() -> None:
    sae = tiny_sae()
    sample = torch.randn(400, 16) * 0.1 + 2.0
    sample[:40] = 1000.0  # 10% outliers drag the mean, not the median
    sae.init_b_dec_(sample, method="geometric_median")
    assert (sae.b_dec - 2.0).abs().max() < 0.2
    sae.init_b_dec_(sample, method="mean")
    assert sae.b_dec.mean() > 50


# ---------------------------------------------------------------------------------------------- fast path vs reference
def _grads(sae: TopKSAE, x: torch.Tensor, reference: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    out = sae.forward_reference(xg) if reference else sae(xg)
    # a loss touching reconstruction and code values (as AuxK-like terms do)
    loss = (out.x_hat - x).pow(2).sum() + 0.1 * out.code.values.pow(2).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in sae.named_parameters()}, xg.grad.clone()


@pytest.mark.parametrize("lead", [(64,), (4, 9)])
def test_fast_path_matches_dense_reference(lead: tuple[int, ...]) -> None:
    sae = tiny_sae(d_in=24, expansion=6, k=5)
    x = torch.randn(*lead, 24) * 2
    loss_f, g_f, gx_f = _grads(sae, x, reference=False)
    loss_r, g_r, gx_r = _grads(sae, x, reference=True)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-4)
    for name in g_r:
        torch.testing.assert_close(g_f[name], g_r[name], rtol=1e-4, atol=1e-4, msg=f"grad of {name}")
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-4, atol=1e-4)


def test_pre_acts_at_gradients_match_dense() -> None:
    """The sparse gather used for AuxK gives the same gradients as indexing dense pre-activations."""
    sae = tiny_sae(d_in=12, expansion=5, k=3)
    x = torch.randn(20, 12)
    idx = torch.randint(0, sae.n_latents, (20, 7))
    w = torch.randn(20, 7)
    sae.zero_grad(set_to_none=True)
    (sae.pre_acts_at(x, idx) * w).sum().backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad(set_to_none=True)
    (sae.pre_acts(x).gather(-1, idx) * w).sum().backward()
    for name in ("W_enc", "b_enc", "b_dec"):
        torch.testing.assert_close(fast[name], sae.get_parameter(name).grad, rtol=1e-5, atol=1e-5)


def test_bfloat16_matmul_is_close_to_float32() -> None:
    """bf16 changes pre-activations by ~0.3%; only near-ties at the k-th place may swap."""
    sae = tiny_sae(d_in=64, expansion=4, k=8)
    x = torch.randn(128, 64)
    exact, approx = sae(x), sae(x, matmul_dtype=torch.bfloat16)
    assert approx.pre_acts.dtype == torch.bfloat16 and approx.code.values.dtype == torch.float32
    rel = (approx.pre_acts.float() - exact.pre_acts).norm() / exact.pre_acts.norm()
    assert rel < 0.01
    same_set = (exact.code.indices.sort(-1).values == approx.code.indices.sort(-1).values).all(-1)
    assert same_set.float().mean() > 0.85


def test_reuse_buffers_gives_same_result() -> None:
    sae = tiny_sae()
    x = torch.randn(10, 16)
    a = sae(x)
    b = sae(x, reuse_buffers=True)
    torch.testing.assert_close(a.x_hat, b.x_hat)
    torch.testing.assert_close(a.pre_acts, b.pre_acts)


def test_encode_in_inference_mode_has_no_graph() -> None:
    sae = tiny_sae()
    with torch.inference_mode():
        code = sae.encode(torch.randn(3, 16))
    assert not code.values.requires_grad


# ---------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_bit_identical(tmp_path: Path) -> None:
    sae = tiny_sae(hook_point="layers.3.mlp_out", model_id="tiny/llama")
    sae.save(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / CFG_FILE).read_text())
    assert cfg["schema_version"] == 1 and cfg["hook_point"] == "layers.3.mlp_out" and WEIGHTS_FILE in cfg["sha256"]
    loaded = TopKSAE.load(tmp_path / "ckpt", expected_d_in=16)
    assert loaded.cfg == sae.cfg
    for name, p in sae.named_parameters():
        assert torch.equal(p, loaded.get_parameter(name)), name
        assert loaded.get_parameter(name).requires_grad
    x = torch.randn(3, 5, 16)
    a, b = sae(x), loaded(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.code.indices, b.code.indices)


def test_save_overwrites_previous_checkpoint(tmp_path: Path) -> None:
    tiny_sae(seed=1).save(tmp_path)
    second = tiny_sae(seed=2)
    second.save(tmp_path)
    assert torch.equal(TopKSAE.load(tmp_path).W_dec, second.W_dec)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CFG_FILE, WEIGHTS_FILE]


def test_load_missing_directory_or_cfg(tmp_path: Path) -> None:
    with pytest.raises(SAECheckpointError, match="does not exist"):
        TopKSAE.load(tmp_path / "nope")
    tiny_sae().save(tmp_path)
    (tmp_path / CFG_FILE).unlink()
    with pytest.raises(SAECheckpointError, match=f"{CFG_FILE}: missing"):
        TopKSAE.load(tmp_path)


def test_load_missing_weights(tmp_path: Path) -> None:
    tiny_sae().save(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(SAECheckpointError, match=f"{WEIGHTS_FILE}: missing"):
        TopKSAE.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_load_detects_corrupt_weights(tmp_path: Path, damage: str) -> None:
    tiny_sae().save(tmp_path)
    path = tmp_path / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-7] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(SAECheckpointError, match=WEIGHTS_FILE):
        TopKSAE.load(tmp_path)


def test_load_truncated_without_checksum_still_fails_clearly(tmp_path: Path) -> None:
    tiny_sae().save(tmp_path)
    path = tmp_path / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SAECheckpointError, match=f"{WEIGHTS_FILE}: unreadable safetensors"):
        TopKSAE.load(tmp_path, verify_checksum=False)


def test_load_rejects_unknown_schema_and_bad_json(tmp_path: Path) -> None:
    tiny_sae().save(tmp_path)
    cfg_path = tmp_path / CFG_FILE
    doc = json.loads(cfg_path.read_text())
    doc["schema_version"] = 99
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(SAECheckpointError, match=r"schema_version 99 is not supported \(known: \[1\]\)"):
        TopKSAE.load(tmp_path)
    cfg_path.write_text("{not json")
    with pytest.raises(SAECheckpointError, match=f"{CFG_FILE}: not valid JSON"):
        TopKSAE.load(tmp_path)


def test_load_rejects_shape_mismatch_and_wrong_d_in(tmp_path: Path) -> None:
    tiny_sae().save(tmp_path)
    with pytest.raises(SAECheckpointError, match=r"d_in=16 but the caller expects d_in=32"):
        TopKSAE.load(tmp_path, expected_d_in=32)
    cfg_path = tmp_path / CFG_FILE
    doc = json.loads(cfg_path.read_text())
    doc["k"], doc["expansion"], doc["n_latents"] = 4, 5, 80  # cfg now implies 80 latents, file has 64
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(SAECheckpointError, match=r"W_enc has shape \(64, 16\), but cfg.json implies \(80, 16\)"):
        TopKSAE.load(tmp_path)


def test_load_rejects_invalid_config_values(tmp_path: Path) -> None:
    tiny_sae().save(tmp_path)
    cfg_path = tmp_path / CFG_FILE
    doc = json.loads(cfg_path.read_text())
    doc["k"] = 10_000
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(SAECheckpointError, match="invalid SAE config"):
        TopKSAE.load(tmp_path)


@pytest.mark.parametrize("fail_at", ["weights", "cfg"])
def test_interrupted_save_never_leaves_a_loadable_mixed_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    old = tiny_sae(seed=1)
    old.save(existing)
    new = tiny_sae(seed=2)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    if fail_at == "weights":
        monkeypatch.setattr(sae_mod, "save_file", boom)
    else:
        monkeypatch.setattr(sae_mod, "_atomic_write_text", boom)
    for directory in (fresh, existing):
        with pytest.raises(OSError, match="disk full"):
            new.save(directory)
        assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")], "temp files left behind"
    # A fresh directory never gains a cfg.json, so it does not look like a checkpoint.
    assert not (fresh / CFG_FILE).exists()
    # An existing checkpoint either still loads as the old SAE or fails its checksum; never a mix.
    if fail_at == "weights":
        assert torch.equal(TopKSAE.load(existing).W_dec, old.W_dec)
    else:
        with pytest.raises(SAECheckpointError, match="sha256"):
            TopKSAE.load(existing)


def test_sparse_code_is_a_named_tuple() -> None:
    code = SparseCode(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.long))
    values, indices = code
    assert values is code.values and indices is code.indices
