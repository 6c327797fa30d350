"""The detection head's fit: exact [z; e] split, FISTA against a reference, token logits, aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safesail_guard.hooks import HookPoint
from safesail_guard.sae import SAEConfig, TopKSAE
from safesail_training.detection_eval import auroc
from safesail_training.detection_head import (
    Layout,
    TokenBank,
    aggregate_token_logits,
    fit_head,
    harvest_token_bank,
    pooled_features,
    select_lambdas,
    stack_features,
    token_logits,
)


def _saes(loaded, layers=(0, 2), k=8, seed=0) -> dict[int, TopKSAE]:
    out = {}
    for i, L in enumerate(layers):
        sae = TopKSAE(SAEConfig(d_in=loaded.d_model, n_latents=4 * loaded.d_model, k=k), seed=seed + i)
        sae.eval()
        for param in sae.parameters():
            param.requires_grad_(False)
        out[L] = sae
    return out


CONVS = [
    [{"role": "user", "content": "hello there, how are you"}],
    [{"role": "user", "content": "a longer message about the weather and the sea and ships"}],
    [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}, {"role": "user", "content": "second turn"}],
    [{"role": "user", "content": "x y z"}],
]


@pytest.fixture()
def bank_and_saes(tiny_loaded):
    saes = _saes(tiny_loaded)
    points = [HookPoint(L, "mlp_out") for L in saes]
    bank = harvest_token_bank(tiny_loaded, saes, points, CONVS, max_tokens=64, batch_size=3)
    return tiny_loaded, saes, points, bank


def test_bank_holds_content_tokens_and_the_sae_code(bank_and_saes) -> None:
    from safesail_guard.chat_template import encode_chat
    from safesail_guard.hooks import collect_padded

    loaded, saes, points, bank = bank_and_saes
    for i, conv in enumerate(CONVS):
        enc = encode_chat(loaded.tokenizer, conv, max_length=64)
        mask = enc.content_mask()
        assert bank.offsets[i + 1] - bank.offsets[i] == sum(mask)
        acts = collect_padded(loaded.model, points, [(enc, mask)])
        for p in points:
            lo, hi = bank.offsets[i], bank.offsets[i + 1]
            assert np.allclose(bank.x[p.layer][lo:hi], acts[p].numpy(), atol=2e-3, rtol=2e-3)
            code = saes[p.layer].encode(acts[p])
            dense = saes[p.layer].dense(code)
            mine = torch.zeros_like(dense).scatter_(1, torch.from_numpy(bank.idx[p.layer][lo:hi].astype(np.int64)),
                                                    torch.from_numpy(bank.val[p.layer][lo:hi]).float())
            assert torch.allclose(mine, dense, atol=1e-2, rtol=1e-2)


def test_pooled_split_is_exact(bank_and_saes) -> None:
    """z̄ W_dec + b_dec + ē reconstructs the mean activation exactly (the decomposition, not an approximation)."""
    _, saes, _, bank = bank_and_saes
    pooled = pooled_features(bank, saes)
    for L, (Z, E) in pooled.items():
        xbar = np.stack([bank.x[L][bank.offsets[i]:bank.offsets[i + 1]].astype(np.float32).mean(0) for i in range(bank.n)])
        recon = Z @ saes[L].W_dec.detach().numpy() + saes[L].b_dec.detach().numpy() + E
        assert np.allclose(recon, xbar, atol=1e-4)


def test_token_logits_average_to_the_pooled_decision(bank_and_saes) -> None:
    _, saes, _, bank = bank_and_saes
    X, layout = stack_features(pooled_features(bank, saes))
    rng = np.random.default_rng(0)
    from safesail_training.detection_head import HeadModel

    model = HeadModel(layout, rng.normal(size=layout.width) * 0.1, rng.normal(size=layout.width) * 0.01, 0.3, 0, 0)
    per_token = token_logits(model, bank, saes)
    pooled = model.decision_function(X)
    assert np.allclose([s.mean() for s in per_token], pooled, atol=1e-3)


def _synthetic(n=240, m=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    Z = np.abs(rng.normal(size=(n, m))) * (rng.random((n, m)) < 0.3)
    E = rng.normal(size=(n, d))
    logit = 2.5 * Z[:, 3] - 2.0 * Z[:, 7] + 1.5 * E[:, 0]
    y = (logit + 0.3 * rng.normal(size=n) > np.median(logit)).astype(int)
    layout = Layout((5,), (m,), (d,))
    return np.concatenate([Z, E], 1).astype(np.float32), y, layout


def test_fit_is_sparse_on_z_and_finds_the_signal() -> None:
    X, y, layout = _synthetic()
    head = fit_head(X, y, layout, lam1=0.02, lam2=0.01, max_iter=800)
    wz = head.w[:30]
    assert np.count_nonzero(wz) < 30
    assert {3, 7} <= set(np.nonzero(wz)[0].tolist())
    assert wz[3] > 0 and wz[7] < 0 and head.w[30] > 0
    assert auroc(head.decision_function(X), y) > 0.9
    named, rem = head.parts(X)
    assert np.allclose(named + rem + head.bias, head.decision_function(X))


def test_fit_matches_a_reference_solver_without_l1() -> None:
    """With lam1 = 0 the objective is a balanced ridge logistic: compare with scipy's optimiser."""
    from scipy.optimize import minimize

    X, y, layout = _synthetic(n=120, m=8, d=4)
    lam2 = 0.05
    # the head penalises only e; give z a ridge too by treating all columns as e
    layout_all_e = Layout((5,), (0,), (12,))
    head = fit_head(X, y, layout_all_e, lam1=0.0, lam2=lam2, max_iter=3000, tol=1e-10)
    mu, sd = X.mean(0), X.std(0, ddof=1)
    S = (X - mu) / sd
    n, pos = len(y), y.sum()
    a = np.where(y > 0, n / (2 * pos), n / (2 * (n - pos)))

    def obj(p):
        w, b = p[:-1], p[-1]
        z = S @ w + b
        loss = a * (np.logaddexp(0, z) - y * z)
        return loss.mean() + lam2 / 2 * (w @ w)

    ref = minimize(obj, np.zeros(S.shape[1] + 1), method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    w_ref = ref.x[:-1] / sd
    assert np.allclose(head.w, w_ref, atol=2e-3)
    assert abs(head.bias - ref.x[-1]) < 2e-3


def test_fit_needs_both_classes() -> None:
    X, y, layout = _synthetic()
    with pytest.raises(ValueError, match="both classes"):
        fit_head(X, np.zeros_like(y), layout, 0.01, 0.01)


def test_selection_prefers_named_features_within_tolerance() -> None:
    X, y, layout = _synthetic(n=300)
    groups = np.array([f"g{i % 4}" for i in range(len(y))])
    sel = select_lambdas(X, y, groups, layout, lam1_grid=(0.005, 0.02), lam2_grid=(0.01, 1.0), tolerance=1.0)
    assert (sel.lam1, sel.lam2) == (0.02, 1.0)  # everything is within tolerance 1.0: largest lam2, then lam1
    assert len(sel.inner_auroc) == 4 and sel.oof_scores.shape == (len(y),)
    strict = select_lambdas(X, y, groups, layout, lam1_grid=(0.005, 0.02), lam2_grid=(0.01, 1.0), tolerance=0.0)
    best = max(sel.inner_auroc.values())
    assert strict.inner_auroc[f"{strict.lam1:g},{strict.lam2:g}"] == best


@pytest.mark.parametrize("kind,window,expected", [
    ("mean", 1, 2.0), ("last", 1, 0.0), ("max", 1, 6.0), ("rolling_max", 2, 4.5), ("rolling_max", 10, 2.0),
])
def test_aggregations(kind, window, expected) -> None:
    s = np.array([0.0, 3.0, 6.0, 1.0, 0.0])
    assert aggregate_token_logits(s, kind, window) == pytest.approx(expected)


def test_rolling_max_does_not_grow_with_length() -> None:
    rng = np.random.default_rng(0)
    short = rng.normal(-1.0, 0.5, size=64)
    long = np.tile(short, 300)
    assert aggregate_token_logits(long, "rolling_max", 32) <= aggregate_token_logits(short, "rolling_max", 32) + 1e-9
    with pytest.raises(ValueError):
        aggregate_token_logits(np.array([]), "mean")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_token_logits(short, "median")


def test_bank_roundtrip(tmp_path, bank_and_saes) -> None:
    _, _, _, bank = bank_and_saes
    bank.save(tmp_path / "bank.npz")
    back = TokenBank.load(tmp_path / "bank.npz")
    assert back.n == bank.n and back.layers == bank.layers
    for L in bank.layers:
        assert np.array_equal(back.idx[L], bank.idx[L]) and np.array_equal(back.x[L], bank.x[L])


def test_platt_calibrates_a_shifted_score() -> None:
    from safesail_training.detection_head import platt

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=2000)
    true_logit = np.where(y > 0, 1.0, -1.0) + rng.normal(size=2000)
    a, b = platt(3.0 * true_logit + 7.0, y)  # a score on the wrong scale and offset
    assert a > 0
    assert abs(b + 7.0 * a) < 0.2 and abs(3.0 * a - 2.0) < 0.3  # recovers logit ~ 2 * true_logit
