"""Exact TopK firing ranks each feature by the competition's own numbers.

The guard computes the selected features' pre-activations with their own (small) matmul and the k-th largest
pre-activation with the competition's (full) matmul. The two are summed differently, so for the feature that
*is* the k-th largest its two values can differ by an ulp; comparing one against the other dropped that
feature about 1 time in 30 firings on the tiny test models (`test_events_match_exact_topk_reference`). Firing
must be decided inside one set of numbers.
"""

from __future__ import annotations

import torch

from safesail_guard.runtime.encoder import Competition, LayerEncoder, topk_reference


def _encoder(W: torch.Tensor, b: torch.Tensor, latents: list[int], nudge: list[float], k: int) -> LayerEncoder:
    """Selected rows of ``W``/``b`` at ``latents``, their biases nudged as a differently-summed matmul would."""
    lat = torch.tensor(latents)
    n, d = len(latents), W.shape[1]
    return LayerEncoder(0, [f"0_{i}" for i in latents], lat, W[lat].clone(), b[lat] + torch.tensor(nudge),
                        torch.zeros(d), torch.zeros(n), torch.ones(n), torch.eye(n, d), firing="topk",
                        competition=Competition(W, b, k))


def test_the_kth_feature_fires_even_when_its_own_row_rounds_below_the_kth_value():
    torch.manual_seed(0)
    d, n_latents, k = 16, 64, 8
    W = torch.randn(n_latents, d)
    b = torch.full((n_latents,), 10.0)  # every pre-activation > 0, so only the rank decides
    x = torch.randn(1, d)
    pre = torch.nn.functional.linear(x, W) + b
    order = pre[0].argsort(descending=True).tolist()
    kth, next_one = order[k - 1], order[k]
    gap = float(pre[0, kth] - pre[0, next_one])
    tiny = min(1e-5, gap / 4)
    # the k-th latent's own row lands a hair below the k-th value; the (k+1)-th a hair above its own value
    enc = _encoder(W, b, [kth, next_one], [-tiny, +tiny], k)
    _, acts = enc.encode(x)
    ref = topk_reference(x, enc, W, b, k)
    assert (ref[0] > 0).tolist() == [True, False]
    assert (acts[0] > 0).tolist() == [True, False]
    assert float(acts[0, 0]) == float(enc.pre_selected(x)[1][0, 0])  # reported: its own row's value


def test_low_precision_competitions_rank_within_their_own_numbers():
    """With a half-precision competition the k-th value carries rounding noise; comparing exact fp32 values
    against it under-fires. Ranking each feature by its own competition value tracks exact TopK more closely."""
    torch.manual_seed(1)
    d, n_latents, k = 64, 1024, 16
    W, b = torch.randn(n_latents, d) / d ** 0.5, torch.randn(n_latents) * 0.05
    x = torch.randn(4000, d) * 2
    latents = torch.randperm(n_latents)[:40].sort().values.tolist()
    enc = _encoder(W, b, latents, [0.0] * len(latents), k).with_firing("topk", Competition(W.half(), b, k))
    ref = topk_reference(x, enc, W, b, k) > 0
    got = enc.encode(x)[1] > 0
    union = (ref | got).sum().item()
    assert (ref & got).sum().item() / union > 0.99
