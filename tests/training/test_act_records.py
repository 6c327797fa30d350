"""Activation records and encoder thresholds on tiny random models."""

from __future__ import annotations

import pytest
import torch

from safesail_guard.sae import SAEConfig, TopKSAE
from safesail_neuron_db.records import ConceptHit, quantize
from safesail_training.act_records import ExplanationActs, RecordsConfig, collect_acts, feature_records, fit_thresholds

TEXTS = [
    "the cat sat on the mat and looked at the door",
    "a quick brown fox jumps over the lazy dog again",
    "please write a short poem about rain in the city",
    "numbers like 1 2 3 and letters like a b c",
    "the knife was on the table next to the bread",
    "we went to the market and bought apples",
] * 3


def _sae(d_in: int, point: str) -> TopKSAE:
    return TopKSAE(SAEConfig(d_in=d_in, expansion=4, k=8, hook_point=point), seed=0)


def test_collect_matches_a_direct_encode(tiny_loaded) -> None:
    from safesail_training.model_metrics import query_site_acts

    point = "layers.1.mlp_out"
    sae = _sae(tiny_loaded.d_model, point)
    latents = torch.arange(0, sae.n_latents, 3)
    ex = collect_acts(tiny_loaded, {point: sae}, {point: latents}, TEXTS[:6], progress=False)
    assert ex.acts[point].shape == (ex.n_tokens, latents.numel())
    assert len(ex.pieces) == 6 and sum(len(p) for p in ex.pieces) == ex.n_tokens
    # the same tokens encoded directly: plain-text records, no chat template, special tokens dropped
    direct = query_site_acts(tiny_loaded, point, TEXTS[:6], chat=False)
    for d, acts in enumerate(direct):
        with torch.inference_mode():
            code = sae.encode(acts)
        dense = torch.zeros(acts.shape[0], sae.n_latents)
        dense.scatter_(1, code.indices, code.values.clamp_min(0))
        got = ex.acts[point][int(ex.starts[d]) : int(ex.starts[d + 1])].float()
        assert torch.allclose(got, dense[:, latents], atol=2e-2, rtol=1e-2)
    pre = ex.pre[point].float()
    fired = ex.acts[point].float() > 0
    assert torch.allclose(pre[fired], ex.acts[point].float()[fired], atol=2e-2, rtol=1e-2)


def test_thresholds_reproduce_a_planted_cut() -> None:
    torch.manual_seed(0)
    pre = torch.randn(2000, 3)
    acts = torch.where(pre > torch.tensor([0.5, 1.0, 99.0]), pre, torch.zeros_like(pre))
    fit = fit_thresholds(pre, acts)
    assert fit.threshold[0].item() == pytest.approx(0.5, abs=0.02)
    assert fit.threshold[1].item() == pytest.approx(1.0, abs=0.02)
    assert fit.precision[:2].tolist() == [1.0, 1.0] and fit.recall[:2].tolist() == [1.0, 1.0]
    assert fit.n_fired[2].item() == 0 and fit.threshold[2].item() > pre[:, 2].max().item()  # never fired: never fires


def test_thresholds_on_noisy_firing_trade_precision_and_recall() -> None:
    torch.manual_seed(1)
    pre = torch.randn(5000, 1)
    noisy = pre + 0.3 * torch.randn(5000, 1)
    acts = torch.where(noisy > 1.0, pre.abs() + 0.1, torch.zeros_like(pre))
    fit = fit_thresholds(pre, acts)
    assert 0.6 < fit.precision[0].item() < 1.0 and 0.6 < fit.recall[0].item() < 1.0


def _synthetic_acts() -> ExplanationActs:
    pieces = [[f"w{d}_{i}" for i in range(40)] for d in range(5)]
    starts = torch.tensor([0, 40, 80, 120, 160, 200])
    acts = torch.zeros(200, 1)
    acts[10, 0] = 5.0  # doc 0, strongest
    acts[45, 0] = 2.5  # doc 1
    acts[130, 0] = 0.5  # doc 3, weak
    return ExplanationActs(pieces=pieces, sources=["s"] * 5, starts=starts, latents={"layers.2.mlp_out": torch.tensor([7])}, acts={"layers.2.mlp_out": acts.half()}, pre={"layers.2.mlp_out": acts.half()})


def test_feature_records_windows_levels_and_quiet_examples() -> None:
    ex = _synthetic_acts()
    hits = {7: [ConceptHit("violence", "assault", 1.0, 0.5, 10, 5, 0)]}
    cfg = RecordsConfig(n_top=2, per_level=1, n_quiet=2, before=4, after=2)
    (rec,) = feature_records(ex, "layers.2.mlp_out", 2, hits, cfg, seed=0)
    assert rec.feature_id == "2_7" and rec.max_act == 5.0 and rec.concepts == hits[7]
    assert rec.fire_rate == pytest.approx(3 / 200)
    kinds = [e.kind for e in rec.examples]
    assert kinds == ["top", "top", "level", "quiet", "quiet"]
    top = rec.examples[0]
    assert top.tokens == [f"w0_{i}" for i in range(6, 13)]  # 4 before, the max, 2 after
    assert top.levels[4] == 10 and top.level == 10
    assert rec.examples[1].level == 5  # 2.5 / 5.0 -> level 5
    assert rec.examples[2].level == quantize([0.5], 5.0)[0] == 1
    assert all(e.max_act == 0 for e in rec.examples if e.kind == "quiet")
    again = feature_records(ex, "layers.2.mlp_out", 2, hits, cfg, seed=0)[0]
    assert again == rec


def test_empty_explanation_set_is_a_clear_error(tiny_loaded) -> None:
    sae = _sae(tiny_loaded.d_model, "layers.1.mlp_out")
    with pytest.raises(ValueError, match="explanation set is empty"):
        collect_acts(tiny_loaded, {"layers.1.mlp_out": sae}, {"layers.1.mlp_out": torch.tensor([0])}, [], progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        collect_acts(tiny_loaded, {"layers.1.mlp_out": sae}, {"layers.1.mlp_out": torch.tensor([0])}, ["", "  "], progress=False)
