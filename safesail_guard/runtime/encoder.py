"""The guard's encoder for one layer: pre-activations of the database's safety features only, and which fire.

An SAE feature *fires* under the SAE's own rule when its pre-activation is among the ``k`` largest of the whole
dictionary at that token (TopK). The database ships only the rows of the selected safety features, so the guard
cannot rank the full dictionary unless it also has the competition (all encoder rows). Two firing rules:

- ``"topk"``      exact: a feature fires when, among the pre-activations of the full dictionary computed per
  token from the competition weights, its own reaches the k-th largest (and is > 0). Rank and k-th value come
  from the same matmul, so rounding cannot drop the k-th feature; the reported activation is the selected
  row's fp32 pre-activation. The competition may be stored in a lower precision (see `Competition`).
- ``"threshold"`` a per-feature threshold calibrated on held-out text stands in for the competition
  (``pre > threshold``): no extra weights, but it disagrees with TopK near the margin.

`measure_agreement` compares either rule against exact TopK.

With a detection head (`runtime/detection_head.py`) a ``"topk"`` encoder also returns, per token, the head's
remainder term at its layer (`LayerEncoder.encode_terms` / `resolve_terms`), computed from the TopK of the
same pre-activation matmul that decides firing: one gather over the k selected values and one dot product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from safesail_guard.runtime.detection_head import LayerTerms

Firing = Literal["topk", "threshold"]
FIRING_RULES: tuple[str, ...] = ("topk", "threshold")


@dataclass
class Competition:
    """All encoder rows of one SAE, used only to find the k-th largest pre-activation per token.

    ``W_enc`` may be fp16/bf16 (half the bytes of fp32, and the CPU matvec is faster); the k-th value is
    returned in fp32.
    """

    W_enc: Tensor  # [n_latents, d]
    b_enc: Tensor  # [n_latents] fp32
    k: int

    def pre_all(self, x_c: Tensor) -> Tensor:
        """Pre-activations of every latent for the centred input ``x_c [N, d]`` -> ``[N, n_latents]`` (fp32)."""
        return torch.nn.functional.linear(x_c.to(self.W_enc.dtype), self.W_enc).float() + self.b_enc

    def kth(self, x_c: Tensor) -> Tensor:
        """k-th largest pre-activation per row of the centred input ``x_c [N, d]`` -> ``[N]`` (fp32)."""
        pre = self.pre_all(x_c)
        return pre.kthvalue(pre.shape[-1] - self.k + 1, dim=-1).values

    def in_topk(self, x_c: Tensor, latents: Tensor) -> Tensor:
        """Whether each of ``latents [S]`` is among the k largest pre-activations of each row of ``x_c [N, d]``
        -> ``[N, S]`` bool.

        The latents' own values come from the same matmul as the k-th value, so the comparison is exact: a latent
        that *is* the k-th is never lost to rounding between two differently-summed matmuls (the selected rows'
        fp32 pre-activations can differ from the competition's by an ulp)."""
        pre = self.pre_all(x_c)
        kth = pre.kthvalue(pre.shape[-1] - self.k + 1, dim=-1).values
        own = pre[:, latents]
        return (own >= kth.unsqueeze(-1)) & (own > 0)

    def topk_code(self, x_c: Tensor, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`in_topk` plus the TopK itself, from one matmul: ``(fires [N, S] bool, vals [N, k], idx [N, k])``
        (``vals`` fp32 pre-activations, unsorted; the code is ``max(vals, 0)`` at ``idx``)."""
        pre = self.pre_all(x_c)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        kth = vals.min(dim=-1).values
        own = pre[:, latents]
        return (own >= kth.unsqueeze(-1)) & (own > 0), vals, idx


@dataclass
class LayerEncoder:
    """Selected SAE rows of one layer and the rule that decides firing."""

    layer: int
    feature_ids: list[str]
    latents: Tensor  # [S] int64
    W_enc: Tensor  # [S, d] fp32
    b_enc: Tensor  # [S]
    b_dec: Tensor  # [d]
    threshold: Tensor  # [S]
    max_act: Tensor  # [S] (> 0) for normalisation
    W_dec: Tensor  # [S, d] unit rows
    firing: Firing = "threshold"
    competition: Competition | None = None
    head: LayerTerms | None = None  # the detection head's remainder at this layer (needs firing="topk")
    _W_enc_T: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.firing not in FIRING_RULES:
            raise ValueError(f"unknown firing rule {self.firing!r}; choose one of {', '.join(FIRING_RULES)}")
        if self.firing == "topk" and self.competition is None:
            raise ValueError(f"layer {self.layer}: firing='topk' needs the full-dictionary competition weights")
        if self.head is not None:
            if self.firing != "topk" or self.competition is None:
                raise ValueError(f"layer {self.layer}: the detection head's terms need firing='topk' with the "
                                 "competition (the code z is the TopK over the whole dictionary)")
            if self.head.n_latents != self.competition.W_enc.shape[0]:
                raise ValueError(f"layer {self.layer}: the detection head was fitted on {self.head.n_latents} "
                                 f"latents, the competition has {self.competition.W_enc.shape[0]}")
        self._W_enc_T = self.W_enc.T.contiguous()
        self.max_act = torch.where(self.max_act > 0, self.max_act, torch.ones_like(self.max_act))

    @property
    def n_features(self) -> int:
        """Number of selected features at this layer."""
        return len(self.feature_ids)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [N, d]`` -> ``(pre [N, S], acts [N, S])``; acts are the pre-activations where the feature fires, else 0."""
        x_c, pre = self.pre_selected(x)
        return pre, self.resolve(x_c, pre)

    def encode_terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """`encode` plus the detection head's remainder per token: ``(pre [N, S], acts [N, S], terms [N] | None)``
        (None when this layer has no head)."""
        x_c, pre = self.pre_selected(x)
        acts, terms = self.resolve_terms(x_c, pre)
        return pre, acts, terms

    def pre_selected(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_c, pre)``: the centred input ``[N, d]`` and the selected features' pre-activations ``[N, S]``."""
        x_c = x.float() - self.b_dec
        return x_c, torch.addmm(self.b_enc, x_c, self._W_enc_T)

    def resolve(self, x_c: Tensor, pre: Tensor) -> Tensor:
        """Apply the firing rule: the activations ``[N, S]`` (pre-activation where the feature fires, else 0)."""
        if self.head is not None:
            return self.resolve_terms(x_c, pre)[0]
        if self.firing == "topk":
            assert self.competition is not None
            # rank with the competition's own values; report the selected rows' fp32 pre-activations
            fires = self.competition.in_topk(x_c, self.latents) & (pre > 0)
        else:
            fires = pre > self.threshold
        return torch.where(fires, pre, torch.zeros((), dtype=pre.dtype))

    def resolve_terms(self, x_c: Tensor, pre: Tensor) -> tuple[Tensor, Tensor | None]:
        """`resolve` plus the detection head's remainder per token ``[N]`` (None without a head, where this is
        `resolve`), from the same full-dictionary matmul that decides firing."""
        if self.head is None:
            return self.resolve(x_c, pre), None
        assert self.competition is not None  # a head requires topk firing (`__post_init__`)
        in_topk, vals, idx = self.competition.topk_code(x_c, self.latents)
        terms = self.head.remainder_code(x_c, vals, idx)
        fires = in_topk & (pre > 0)
        return torch.where(fires, pre, torch.zeros((), dtype=pre.dtype)), terms

    def with_firing(self, firing: Firing, competition: Competition | None = None) -> LayerEncoder:
        """A copy with another firing rule (the detection head's terms stay only with ``"topk"``)."""
        comp = competition or self.competition
        head = self.head if firing == "topk" else None
        return LayerEncoder(self.layer, self.feature_ids, self.latents, self.W_enc, self.b_enc, self.b_dec,
                            self.threshold, self.max_act, self.W_dec, firing, comp, head)


@dataclass(frozen=True)
class Agreement:
    """How a runtime firing rule agrees with exact TopK on a set of tokens (one layer)."""

    layer: int
    firing: str
    tokens: int
    topk_firings: int  # (token, feature) pairs where TopK fires
    runtime_firings: int
    both: int
    act_abs_error: float  # mean |a_runtime - a_topk| over the union of firings

    @property
    def precision(self) -> float:
        """Share of runtime firings that TopK also fires."""
        return self.both / self.runtime_firings if self.runtime_firings else 1.0

    @property
    def recall(self) -> float:
        """Share of TopK firings the runtime also fires."""
        return self.both / self.topk_firings if self.topk_firings else 1.0

    @property
    def agreement(self) -> float:
        """Firings both agree on over firings either reports (Jaccard); 1.0 when neither fires."""
        union = self.topk_firings + self.runtime_firings - self.both
        return self.both / union if union else 1.0

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready dict including the derived rates."""
        return {"layer": self.layer, "firing": self.firing, "tokens": self.tokens, "topk_firings": self.topk_firings,
                "runtime_firings": self.runtime_firings, "both": self.both, "precision": round(self.precision, 5),
                "recall": round(self.recall, 5), "agreement": round(self.agreement, 5),
                "act_abs_error": round(self.act_abs_error, 6)}


def topk_reference(x: Tensor, enc: LayerEncoder, full_W_enc: Tensor, full_b_enc: Tensor, k: int) -> Tensor:
    """Exact fp32 TopK activations of the selected features: ``x [N, d]`` -> ``[N, S]``."""
    x_c = x.float() - enc.b_dec
    pre_all = torch.addmm(full_b_enc.float(), x_c, full_W_enc.float().T)
    vals, idx = pre_all.topk(k, dim=-1)
    dense = torch.zeros_like(pre_all).scatter_(-1, idx, vals.clamp_min(0))
    return dense[:, enc.latents]


def measure_agreement(x: Tensor, enc: LayerEncoder, full_W_enc: Tensor, full_b_enc: Tensor, k: int,
                      *, chunk: int = 4096) -> Agreement:
    """Compare ``enc``'s firing rule with exact TopK on activations ``x [N, d]``."""
    topk_n = run_n = both_n = 0
    err_sum, union_n = 0.0, 0
    for start in range(0, x.shape[0], chunk):
        xb = x[start:start + chunk]
        ref = topk_reference(xb, enc, full_W_enc, full_b_enc, k)
        _, acts = enc.encode(xb)
        r, a = ref > 0, acts > 0
        topk_n += int(r.sum())
        run_n += int(a.sum())
        both_n += int((r & a).sum())
        union = r | a
        union_n += int(union.sum())
        err_sum += float((acts - ref).abs()[union].sum())
    return Agreement(enc.layer, enc.firing, int(x.shape[0]), topk_n, run_n, both_n,
                     err_sum / union_n if union_n else 0.0)
