"""Selection metrics on synthetic activations where the answer is known."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from safesail_training.select import cdf_curve, delta_freq, domain_scores, feature_max, i_cdf, k_sparse_probe, l0_t


def test_delta_freq_counts_concept_only_firings() -> None:
    c = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.0]])
    d = torch.tensor([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    freq = delta_freq(c, d)
    assert freq.tolist() == [0.75, 0.25, 0.25]
    assert l0_t(freq, 0.25) == 1 and l0_t(freq, 0.2) == 3
    assert i_cdf(freq) == pytest.approx((0.75 + 0.25 + 0.25) / 3)


def test_i_cdf_is_area_above_cdf() -> None:
    freq = torch.rand(500)
    xs, cdf = cdf_curve(freq, grid=2001)
    area = torch.trapezoid(1 - cdf, xs)
    assert float(area) == pytest.approx(i_cdf(freq), abs=2e-3)


def test_shape_mismatch_and_empty() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        delta_freq(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least one pair"):
        delta_freq(torch.zeros(0, 3), torch.zeros(0, 3))


def test_probe_finds_planted_feature_and_fails_on_noise() -> None:
    g = torch.Generator().manual_seed(0)
    n, f = 80, 50
    d = torch.rand(n, f, generator=g)
    c = d.clone() + 0.05 * torch.rand(n, f, generator=g)
    c[:, 7] += 1.0  # feature 7 carries the concept
    acc = k_sparse_probe(c, d, ks=(1, 5))
    assert acc[1] > 0.95
    noise = k_sparse_probe(torch.rand(n, f, generator=g), torch.rand(n, f, generator=g), ks=(1,))
    assert noise[1] < 0.75


class _Code(NamedTuple):
    values: torch.Tensor
    indices: torch.Tensor


class _IdentityTopK(torch.nn.Module):
    """A stand-in SAE: latent i = x[i], top-2."""

    def encode(self, x: torch.Tensor) -> _Code:
        v, i = x.topk(2, dim=-1)
        return _Code(v, i)


def test_feature_max_per_query() -> None:
    acts = [torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.1, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])]
    m = feature_max(_IdentityTopK(), acts, 4, batch=1)
    assert m.tolist() == [[1.0, 2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 3.0]]


def test_domain_scores_groups_by_domain() -> None:
    c = torch.zeros(6, 4)
    d = torch.zeros(6, 4)
    c[:3, 0] = 1.0  # domain a: feature 0 always concept-only
    c[3:, 1] = 1.0
    d[3:, 1] = 1.0  # domain b: feature 1 fires on both -> not distinguishing
    s = domain_scores(c, d, ["a"] * 3 + ["b"] * 3, probe_ks=())
    assert s["a"].l0_t == 1 and s["b"].l0_t == 0 and s["a"].n_pairs == 3
