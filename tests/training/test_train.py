"""SAE training on planted sparse data: learning, AuxK, resume equivalence, config validation, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from safesail_guard.sae import SAEConfig, TopKSAE
from safesail_training.metrics import reconstruction_metrics
from safesail_training.shards import ShardError, ShardWriter, open_shards
from safesail_training.train import SAETrainer, TrainConfig, train_sae

D = 32


def planted(n: int, *, d: int = D, n_dirs: int = 64, active: int = 3, seed: int = 0) -> torch.Tensor:
    """x = sum of `active` of `n_dirs` random unit directions with coefficients in [0.5, 2.5], + offset + noise."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_dirs, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 2 + 0.5
    return (coef[..., None] * dirs[idx]).sum(1) + 1.0 + 0.01 * torch.randn(n, d, generator=g)


def make_shards(directory: Path, x: torch.Tensor, *, shard_tokens: int = 4096, complete: bool = True):
    w = ShardWriter(directory, x.shape[1], shard_tokens=shard_tokens, meta={"hook_point": "layers.0.mlp_out"})
    for i in range(0, x.shape[0], 1000):
        w.add(x[i : i + 1000], i // 1000)
    w.close(complete=complete)
    return open_shards(directory)


def small_cfg(**kw) -> TrainConfig:
    base = dict(k=4, expansion=4, batch_size=256, lr=3e-3, dead_tokens_threshold=5000, matmul_dtype="float32",
                checkpoint_every=None, log_every=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def planted_shards(tmp_path_factory: pytest.TempPathFactory):
    return make_shards(tmp_path_factory.mktemp("planted") / "layers.0.mlp_out", planted(40_000))


# ---------------------------------------------------------------------------------------------- learning
def test_learns_planted_structure(planted_shards, tmp_path: Path) -> None:
    res = train_sae(planted_shards, small_cfg(), tmp_path / "sae", progress=False)
    _, val = planted_shards.train_val_split(0.05)
    baseline = TopKSAE(res.sae.cfg, seed=0)
    baseline.init_b_dec_(val.load_all(), method="mean")  # random dictionary, but centred like the trained one
    random_fvu = reconstruction_metrics(baseline, val).fvu  # ~0.44: matching pursuit on 128 random atoms in 32-d
    assert res.val is not None and res.val.fvu < 0.2, res.val  # ~0.08 after 149 steps
    assert res.val.fvu < random_fvu / 4
    assert res.val.mean_l0 == pytest.approx(4.0)
    assert res.tokens_seen == 38_000 and res.steps == 149
    assert res.tokens_per_s > 0 and res.peak_rss_mb > 0
    # artefacts: the final SAE loads, the log has one line per log_every steps plus the last, no checkpoint left
    loaded = TopKSAE.load(tmp_path / "sae", expected_d_in=D)
    assert loaded.cfg.hook_point == "layers.0.mlp_out" and loaded.cfg.k == 4
    lines = [json.loads(s) for s in (tmp_path / "sae" / "train_log.jsonl").read_text().splitlines()]
    assert len(lines) == 149 // 5 + 1 and lines[-1]["tokens"] == 38_000
    assert {"step", "tokens", "loss", "fvu", "aux_loss", "dead_frac"} <= set(lines[0])
    assert lines[-1]["fvu"] < lines[0]["fvu"]
    assert not (tmp_path / "sae" / "checkpoint").exists()


def test_bfloat16_matmul_trains_as_well(planted_shards, tmp_path: Path) -> None:
    f32 = train_sae(planted_shards, small_cfg(), tmp_path / "f32", progress=False)
    bf16 = train_sae(planted_shards, small_cfg(matmul_dtype="bfloat16"), tmp_path / "bf16", progress=False)
    assert bf16.extra["matmul_dtype"] == "bfloat16"
    assert bf16.val.fvu < f32.val.fvu * 1.1 + 0.01  # evaluated with float32 matmuls


# ---------------------------------------------------------------------------------------------- AuxK
def _train_with_suppressed_latents(aux_coef: float, seed: int) -> torch.Tensor:
    """16 latents for 16 planted directions; latents 0-3 start with tiny encoder rows so they lose every
    TopK competition. Without AuxK they get no gradient and stay dead; AuxK should revive them."""
    x = planted(20_000, d=16, n_dirs=16, active=2, seed=0)
    cfg = TrainConfig(k=2, expansion=1, batch_size=256, lr=3e-3, dead_tokens_threshold=256, aux_coef=aux_coef,
                      seed=seed, matmul_dtype="float32")
    sae = TopKSAE(SAEConfig(d_in=16, expansion=1, k=2), seed=seed)
    sae.init_b_dec_(x[:2000])
    with torch.no_grad():
        sae.W_enc[:4] *= 0.02
    trainer = SAETrainer(sae, cfg)
    for _ in range(2):
        for i in range(0, 18_000, 256):
            trainer.step(x[i : i + 256])
    return reconstruction_metrics(sae, x[18_000:]).fire_counts


@pytest.mark.parametrize("seed", [0, 1])
def test_auxk_revives_dead_latents(seed: int) -> None:
    with_aux = _train_with_suppressed_latents(1 / 32, seed)
    without = _train_with_suppressed_latents(0.0, seed)
    assert (with_aux[:4] > 0).all(), with_aux[:4]
    assert (with_aux > 0).sum() > (without > 0).sum()
    assert (without[:4] == 0).any()


def test_aux_loss_zero_without_dead_latents_and_positive_with() -> None:
    x = planted(1024)
    cfg = small_cfg(dead_tokens_threshold=10**9)
    trainer = SAETrainer(TopKSAE(SAEConfig(d_in=D, expansion=4, k=4), seed=0), cfg)
    m = trainer.step(x[:256])
    assert m.aux_loss.item() == 0.0 and m.dead_frac.item() == 0.0
    trainer.tokens_since_fired[:10] = 10**9  # mark 10 latents dead
    m = trainer.step(x[256:512])
    assert m.aux_loss.item() > 0 and m.dead_frac.item() == pytest.approx(10 / 128)
    assert m.loss.item() == pytest.approx(m.fvu.item() + cfg.aux_coef * m.aux_loss.item(), rel=1e-5)


def test_fast_step_matches_reference_step_including_auxk() -> None:
    """One full optimisation step (loss, AuxK, parallel-grad removal, Adam, renorm) equals the dense reference."""
    x = planted(512)
    cfg = small_cfg(dead_tokens_threshold=256)
    results = []
    for reference in (False, True):
        sae = TopKSAE(SAEConfig(d_in=D, expansion=4, k=4), seed=3)
        sae.init_b_dec_(x)
        trainer = SAETrainer(sae, cfg, reference=reference)
        trainer.tokens_since_fired[::3] = 10**6  # a third of the latents dead -> AuxK active
        m1 = trainer.step(x[:256])
        m2 = trainer.step(x[256:])
        results.append((m1, m2, {n: p.detach().clone() for n, p in sae.named_parameters()}))
    (f1, f2, fp), (r1, r2, rp) = results
    assert f1.aux_loss > 0
    for a, b in ((f1, r1), (f2, r2)):
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.aux_loss, b.aux_loss, rtol=1e-5, atol=1e-6)
    for name in fp:
        torch.testing.assert_close(fp[name], rp[name], rtol=1e-4, atol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_reproduces_uninterrupted_run(planted_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_cfg(n_tokens=20_000, epochs=2, checkpoint_every=3000, dead_tokens_threshold=1024)
    full = train_sae(planted_shards, cfg, tmp_path / "full", progress=False)

    real_step = SAETrainer.step
    calls = {"n": 0}

    def crashing_step(self, x):
        calls["n"] += 1
        if calls["n"] == 120:  # mid second epoch, a few steps after a checkpoint
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, x)

    monkeypatch.setattr(SAETrainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_sae(planted_shards, cfg, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "checkpoint" / "trainer_state.pt").is_file()
    monkeypatch.setattr(SAETrainer, "step", real_step)
    resumed = train_sae(planted_shards, cfg, tmp_path / "resumed", progress=False)

    assert resumed.resumed_from_tokens > 20_000 and resumed.tokens_seen == full.tokens_seen == 40_000
    assert resumed.steps == full.steps
    for name, p in full.sae.named_parameters():
        assert torch.equal(p, resumed.sae.get_parameter(name)), name
    strip = lambda path: [{k: v for k, v in json.loads(s).items() if k != "elapsed_s"}  # noqa: E731
                          for s in path.read_text().splitlines()]
    assert strip(tmp_path / "resumed" / "train_log.jsonl") == strip(tmp_path / "full" / "train_log.jsonl")


def test_resume_refuses_a_different_config(planted_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_cfg(n_tokens=8000, checkpoint_every=2000)
    real_step = SAETrainer.step
    calls = {"n": 0}

    def crashing_step(self, x):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real_step(self, x)

    monkeypatch.setattr(SAETrainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_sae(planted_shards, cfg, tmp_path, progress=False)
    monkeypatch.setattr(SAETrainer, "step", real_step)
    with pytest.raises(ValueError, match=r"TrainConfig differs in \['k'\]"):
        train_sae(planted_shards, small_cfg(k=5, n_tokens=8000, checkpoint_every=2000), tmp_path, progress=False)
    # operational fields may change; resume=False starts over
    train_sae(planted_shards, small_cfg(n_tokens=8000, checkpoint_every=4000, log_every=7), tmp_path, progress=False)
    train_sae(planted_shards, small_cfg(k=5, n_tokens=8000), tmp_path, progress=False, resume=False)


# ---------------------------------------------------------------------------------------------- config and inputs
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0}, "k"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"aux_coef": -1}, "aux_coef"),
        ({"device": "tpu"}, "device"),
        ({"matmul_dtype": "float8"}, "matmul_dtype"),
        ({"dead_tokens_threshold": 100}, "dead_tokens_threshold"),
        ({"aux_k": 2}, "aux_k"),
        ({"epoch": 2}, "epoch"),
    ],
)
def test_bad_config_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"k": 8, **kwargs})


def test_config_fields_are_described_and_lr_scales() -> None:
    for name, f in TrainConfig.model_fields.items():
        assert f.description, name
    cfg = TrainConfig(k=8)
    assert cfg.resolved_lr(2**14) == pytest.approx(1.6e-3)
    assert cfg.resolved_lr(5760) == pytest.approx(1.6e-3 / (5760 / 2**14) ** 0.5)
    assert cfg.resolved_aux_k(576, 5760) == 288
    with pytest.raises(ValidationError):
        TrainConfig(k=8, unknown=1)


def test_refuses_incomplete_shards_and_too_many_tokens(tmp_path: Path) -> None:
    partial = make_shards(tmp_path / "partial", planted(3000), shard_tokens=1000, complete=False)
    with pytest.raises(ShardError, match="not marked complete"):
        train_sae(partial, small_cfg(), tmp_path / "out", progress=False)
    done = make_shards(tmp_path / "done", planted(3000), shard_tokens=1000)
    with pytest.raises(ValueError, match="n_tokens=5000 but only 2850 training tokens"):
        train_sae(done, small_cfg(n_tokens=5000), tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------- metrics
def test_reconstruction_metrics_match_direct_computation(planted_shards) -> None:
    sae = TopKSAE(SAEConfig(d_in=D, expansion=4, k=4), seed=0)
    sae.init_b_dec_(planted(500))
    x = planted(3000, seed=5)
    m = reconstruction_metrics(sae, x, batch_size=700)
    with torch.no_grad():
        out = sae(x)
    err = (x - out.x_hat).double()
    assert m.n_tokens == 3000
    assert m.mse == pytest.approx(err.pow(2).mean().item(), rel=1e-6)
    assert m.fvu == pytest.approx((err.pow(2).sum() / (x.double() - x.double().mean(0)).pow(2).sum()).item(), rel=1e-6)
    assert m.mean_l0 == pytest.approx((out.code.values > 0).sum(-1).double().mean().item())
    fired = torch.zeros(sae.n_latents, dtype=torch.bool)
    fired[out.code.indices[out.code.values > 0]] = True
    assert m.r_alive == pytest.approx(fired.double().mean().item())
    assert int(m.fire_counts.sum()) == int((out.code.values > 0).sum())
    # the same numbers from an iterable of batches, and from shards
    assert reconstruction_metrics(sae, [x[:1000], x[1000:]]).fvu == pytest.approx(m.fvu, rel=1e-9)
    assert reconstruction_metrics(sae, planted_shards).n_tokens == planted_shards.n_tokens
    with pytest.raises(ValueError, match="no tokens"):
        reconstruction_metrics(sae, [])
    with pytest.raises(ValueError, match="d_in=32"):
        reconstruction_metrics(sae, torch.zeros(4, 7))


def test_lr_schedule_warmup_and_decay() -> None:
    cfg = TrainConfig(k=4, lr=1e-3, lr_warmup_steps=4, lr_decay_frac=0.2)
    trainer = SAETrainer(TopKSAE(SAEConfig(d_in=8, expansion=2, k=4), seed=0), cfg, total_steps=100)
    lrs = [trainer.lr_at(s) for s in range(100)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4:80] == pytest.approx([1e-3] * 76)
    assert lrs[80] == pytest.approx(1e-3) and lrs[90] == pytest.approx(5e-4) and lrs[99] == pytest.approx(5e-5)
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:]))
    constant = SAETrainer(trainer.sae, TrainConfig(k=4, lr=1e-3, lr_decay_frac=0.0), total_steps=100)
    assert {constant.lr_at(s) for s in range(100)} == {1e-3}
