"""The guard's detection head at run time: a linear score over SAE codes and the SAE error, token by token.

For a TopK SAE at layer ``L`` every hook activation splits as ``x = W_dec^T z + b_dec + e``. The head
(`safesail_neuron_db.detection_head`, file ``detection_head.safetensors``) scores each token ``t``::

    s_t = bias + sum_L [ sum_{i in head(L)} w_i (z_{L,i,t} - mu_i)  +  (w_e_L . x_{L,t} - v_L . z_{L,t} - c_L) ]
                         \\_______ named part (database features) _/     \\______ remainder (the error's share) _/

with ``v_L = W_dec^T w_e_L`` over the whole dictionary, so the remainder needs only the hook activation and the
token's TopK code. ``z_{L,t}`` is the SAE's code over the *whole* dictionary: the guard's encoder already
computes every pre-activation for exact TopK firing (`encoder.Competition.pre_all`), and `LayerTerms`
turns the same matmul's TopK into the remainder with one gather over the ``k`` selected values and one dot
product over ``d`` (no second pass over the dictionary). The tracker stores the remainder per layer on each
`TokenActivations` (``head_terms``); the named part comes from the token's ``hits`` (the fp32 ``activation`` of
every head latent that fired; each head latent is a database feature ``"{L}_{i}"``).

Aggregation over a scope's content tokens (`RiskAggregate`): ``mean`` of the token logits, or ``rolling_max``,
the largest mean over any ``window`` consecutive tokens (the plain mean while the scope is shorter), so the
score neither grows with length nor follows one token. Risk = ``sigmoid(aggregate)``. A scope with no content
token scores ``sigmoid(bias)`` (the training average).

Explanation (`DetectionHead.explain`): over the winning window of ``n`` tokens, each head feature contributes
``w_i * (mean_window(z_i) - mu_i)`` (features that never fired there contribute ``-w_i mu_i``), the remainder
``mean_window(remainder_t)`` and the bias itself; they add up to the aggregate. ``share = |c| / (sum |c_named|
+ |c_remainder|)``. Per-domain scores are an *attribution*, not separate classifiers: a domain's score is the
share of the positive named contribution carried by that domain's features, times the risk (a feature in two
domains counts for both).

Fail closed: a token in a scored scope that carries no remainder terms for every head layer (it was scanned
without the head, or built elsewhere) makes scoring raise `MissingHeadTermsError`; it never scores as zero.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safesail_guard.events import FeatureCatalog, TokenActivations
from safesail_guard.runtime.scoring import RiskHead, RiskScore

if TYPE_CHECKING:
    from safesail_neuron_db import NeuronDB
    from safesail_neuron_db.detection_head import DetectionHeadFile

AGGREGATIONS = ("mean", "rolling_max")


class DetectionHeadError(ValueError):
    """A detection head that does not fit the guard or catalog it is attached to."""


class MissingHeadTermsError(RuntimeError):
    """A token to be scored by the detection head carries no remainder terms (fail closed, never zero)."""


def sigmoid(z: float) -> float:
    """Numerically stable logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# ------------------------------------------------------------------------------------------- per layer


@dataclass(frozen=True)
class LayerTerms:
    """One layer's remainder ``w_e . x - v . z - c`` from the encoder's own TopK (see the module docstring).

    ``b_dec`` is the SAE's decoder bias (the encoder centres ``x_c = x - b_dec``), folded into a constant so the
    hot path works on ``x_c`` directly: ``w_e . x - c = w_e . x_c - (c - w_e . b_dec)``.
    """

    layer: int
    w_e: Tensor  # [d] fp32
    v: Tensor  # [n_latents] fp32
    c: float
    b_dec: Tensor  # [d] fp32
    c_centred: float = field(init=False)

    def __post_init__(self) -> None:
        c_centred = self.c - float(self.w_e.double() @ self.b_dec.double())
        object.__setattr__(self, "c_centred", c_centred)

    @property
    def n_latents(self) -> int:
        """Dictionary size the head was fitted on."""
        return int(self.v.shape[0])

    def remainder_code(self, x_c: Tensor, vals: Tensor, idx: Tensor) -> Tensor:
        """Remainder per token from the centred input ``x_c [N, d]`` and the TopK of its pre-activations
        (``vals [N, k]``, ``idx [N, k]``; ``z = max(vals, 0)`` at ``idx``) -> ``[N]`` fp32."""
        z = vals.float().clamp_min(0)
        return x_c.float() @ self.w_e - (self.v[idx] * z).sum(-1) - self.c_centred

    def remainder(self, x: Tensor, pre_all: Tensor, k: int) -> Tensor:
        """Remainder per token from the hook activation ``x [N, d]`` and every pre-activation
        ``pre_all [N, n_latents]`` (z = TopK_k(pre_all) clamped at 0) -> ``[N]`` fp32."""
        if pre_all.shape[-1] != self.n_latents:
            raise DetectionHeadError(f"layer {self.layer}: pre-activations over {pre_all.shape[-1]} latents, the "
                                     f"head was fitted on a dictionary of {self.n_latents}")
        vals, idx = pre_all.float().topk(k, dim=-1, sorted=False)
        return self.remainder_code(x.float() - self.b_dec, vals, idx)


# ------------------------------------------------------------------------------------------- per token


@dataclass(frozen=True)
class TokenParts:
    """One token's logit and its parts: ``logit = bias + named + remainder`` where ``named`` is
    ``sum_i w_i (z_i - mu_i)``; ``fired`` lists the head features that fired, ``(id, activation)``."""

    position: int
    logit: float
    remainder: float
    fired: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Window:
    """The tokens an aggregate reads: their count, sums of logit / remainder / activation per head feature,
    each feature's peak ``(activation, position)`` and the first and last position."""

    n: int
    logit_sum: float
    remainder_sum: float
    z_sums: dict[str, float]
    peaks: dict[str, tuple[float, int]]
    first: int
    last: int

    @classmethod
    def of(cls, parts: Sequence[TokenParts]) -> Window:
        """The window over ``parts`` (non-empty)."""
        z: dict[str, float] = {}
        peaks: dict[str, tuple[float, int]] = {}
        for p in parts:
            _add_fired(p, z, peaks)
        return cls(len(parts), math.fsum(p.logit for p in parts), math.fsum(p.remainder for p in parts), z, peaks,
                   parts[0].position, parts[-1].position)


def _add_fired(p: TokenParts, z: dict[str, float], peaks: dict[str, tuple[float, int]]) -> None:
    for f, a in p.fired:
        z[f] = z.get(f, 0.0) + a
        if a > peaks.get(f, (0.0, -1))[0]:
            peaks[f] = (a, p.position)


class RiskAggregate:
    """Running aggregate of token logits over one scope: ``mean`` or ``rolling_max`` (module docstring).

    Memory is bounded by ``window`` (rolling_max) or by the number of head features (mean); `push` is O(1)
    amortised plus the token's head hits, so it can follow a stream token by token."""

    def __init__(self, kind: str, window: int = 1) -> None:
        if kind not in AGGREGATIONS:
            raise DetectionHeadError(f"unknown aggregation {kind!r}; choose one of {', '.join(AGGREGATIONS)}")
        if window < 1:
            raise DetectionHeadError(f"aggregation window must be >= 1, got {window}")
        self.kind, self.window = kind, int(window)
        self.n = 0  # tokens pushed
        self._sum = 0.0  # mean: all logits; rolling_max: logits in the current window
        self._rem = 0.0
        self._z: dict[str, float] = {}
        self._peaks: dict[str, tuple[float, int]] = {}
        self._first = self._last = -1
        self._win: deque[TokenParts] = deque(maxlen=self.window)
        self._best: tuple[float, tuple[TokenParts, ...]] | None = None

    def push(self, p: TokenParts) -> None:
        """Add the next token of the scope."""
        self.n += 1
        if self.kind == "mean":
            self._sum += p.logit
            self._rem += p.remainder
            _add_fired(p, self._z, self._peaks)
            self._first = p.position if self._first < 0 else self._first
            self._last = p.position
            return
        if len(self._win) == self.window:
            self._sum -= self._win[0].logit
        self._win.append(p)
        self._sum += p.logit
        if self.n % self.window == 0:  # re-sum now and then so the running sum never drifts
            self._sum = math.fsum(q.logit for q in self._win)
        if self.n >= self.window:
            mean = self._sum / self.window
            if self._best is None or mean > self._best[0]:
                self._best = (mean, tuple(self._win))

    @property
    def value(self) -> float | None:
        """The aggregate logit (None before any token)."""
        if self.n == 0:
            return None
        if self.kind == "mean":
            return self._sum / self.n
        if self._best is None:  # fewer tokens than the window: the plain mean
            return self._sum / len(self._win)
        return self._best[0]

    def winner(self) -> Window | None:
        """The tokens behind `value` (None before any token)."""
        if self.n == 0:
            return None
        if self.kind == "mean":
            return Window(self.n, self._sum, self._rem, dict(self._z), dict(self._peaks), self._first, self._last)
        return Window.of(self._best[1] if self._best is not None else tuple(self._win))


# ------------------------------------------------------------------------------------------- the score


@dataclass
class DetectionScore(RiskScore):
    """A `RiskScore` from the detection head, with the split of its logit.

    ``logit = bias + named + remainder`` over the winning window (``span``, ``tokens`` of the ``scope_tokens``
    scored); ``named_share`` / ``remainder_share`` are ``sum |c_named|`` and ``|remainder|`` over their sum.
    ``concepts`` holds per-domain *attributions* (module docstring), not separate classifiers.
    """

    logit: float = 0.0
    bias: float = 0.0
    named: float = 0.0
    remainder: float = 0.0
    named_share: float = 0.0
    remainder_share: float = 0.0
    aggregation: str = "mean"
    window: int = 1
    span: tuple[int, int] = (-1, -1)
    tokens: int = 0
    scope_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """`RiskScore.to_dict` plus ``head: "detection"``, the shares and the logit's parts."""
        return super().to_dict() | {
            "head": "detection", "named_share": round(self.named_share, 6),
            "remainder_share": round(self.remainder_share, 6), "logit": round(self.logit, 6),
            "bias": round(self.bias, 6), "named": round(self.named, 6), "remainder": round(self.remainder, 6),
            "aggregation": {"kind": self.aggregation, "window": self.window}, "span": list(self.span),
            "tokens": self.tokens}


# ------------------------------------------------------------------------------------------- the head


class DetectionHead:
    """The detection head of one database, ready to score token events (see the module docstring).

    Built from the database's `DetectionHeadFile` and the guard's `FeatureCatalog`; `layer_terms` gives the
    per-layer remainder functions the guard's encoders compute. ``kind == "detection"`` tells the policy
    compiler which kind of head it holds.
    """

    kind = "detection"

    def __init__(self, file: DetectionHeadFile, catalog: FeatureCatalog, *, source: str = "detection head") -> None:
        spec = dict(file.spec)
        agg = dict(spec.get("aggregation") or {})
        kind, window = agg.get("kind"), agg.get("window", 1)
        if kind not in AGGREGATIONS or not isinstance(window, int) or window < 1:
            raise DetectionHeadError(f"{source}: aggregation {agg!r}; need kind in {', '.join(AGGREGATIONS)} and an "
                                     "integer window >= 1")
        self.file, self.catalog, self.spec = file, catalog, spec
        self.bias = float(file.bias)
        self.aggregation, self.window = str(kind), int(window)
        self.layers: tuple[int, ...] = tuple(sorted(file.layers))
        self._wmu: dict[str, tuple[float, float]] = {}  # feature id -> (w, mu), nonzero weights only
        named_const = 0.0
        for L in self.layers:
            hl = file.layers[L]
            for fid, w, mu in zip(hl.feature_ids(), hl.w_z.tolist(), hl.mu_z.tolist()):
                if fid not in catalog:
                    raise DetectionHeadError(f"{source}: latent {fid} has a weight but is not a database feature")
                if fid in self._wmu:
                    raise DetectionHeadError(f"{source}: latent {fid} is listed twice")
                if w != 0.0:
                    self._wmu[fid] = (float(w), float(mu))
                    named_const -= float(w) * float(mu)
        self._named_const = named_const  # sum_i -w_i mu_i: the named part of a token where nothing fired
        self._w = {f: w for f, (w, _) in self._wmu.items()}

    # ---------------------------------------------------------------- facts
    @property
    def weights(self) -> dict[str, float]:
        """Weight per head feature id (nonzero only)."""
        return dict(self._w)

    @property
    def feature_ids(self) -> list[str]:
        """Head features with a nonzero weight, in file order."""
        return list(self._wmu)

    @property
    def domains(self) -> list[str]:
        """Domains of the head's weighted features, sorted."""
        return sorted({d for f in self._wmu for d in self.catalog[f].domains})

    def layer_terms(self, layer: int, b_dec: Tensor) -> LayerTerms:
        """The remainder function of ``layer`` for an encoder that centres with ``b_dec [d]``."""
        hl = self.file.layers.get(layer)
        if hl is None:
            raise DetectionHeadError(f"the detection head has no layer {layer} (layers: {list(self.layers)})")
        if hl.w_e.shape != b_dec.shape:
            raise DetectionHeadError(f"layer {layer}: head w_e has width {hl.w_e.shape[0]}, the encoder "
                                     f"{b_dec.shape[0]}")
        return LayerTerms(layer, hl.w_e.float().contiguous(), hl.v.float().contiguous(), float(hl.c),
                          b_dec.float().contiguous())

    # ---------------------------------------------------------------- tokens
    def token_parts(self, tok: TokenActivations, damp: Mapping[str, float] | None = None) -> TokenParts:
        """``tok``'s logit and parts; ``damp`` scales head features' activations (policy over-refusal damping,
        named part only). `MissingHeadTermsError` when the token lacks a head layer's remainder."""
        terms = tok.head_terms
        if terms is None:
            raise MissingHeadTermsError(
                f"token {tok.position} ({tok.text!r}) carries no detection-head terms: it was not scanned by a "
                "guard with this head, so its risk cannot be scored")
        rem = 0.0
        for L in self.layers:
            r = terms.get(L)
            if r is None or not math.isfinite(r):
                raise MissingHeadTermsError(f"token {tok.position} ({tok.text!r}) has no finite detection-head "
                                            f"term for layer {L} (has {sorted(terms)})")
            rem += r
        named = self._named_const
        fired: list[tuple[str, float]] = []
        for h in tok.hits:
            w = self._w.get(h.feature_id)
            if w is None:
                continue
            a = h.activation * damp.get(h.feature_id, 1.0) if damp else h.activation
            named += w * a
            fired.append((h.feature_id, a))
        return TokenParts(tok.position, self.bias + named + rem, rem, tuple(fired))

    def token_logit(self, tok: TokenActivations) -> float:
        """The per-token logit ``s_t``."""
        return self.token_parts(tok).logit

    def aggregate(self) -> RiskAggregate:
        """An empty aggregate with this head's aggregation."""
        return RiskAggregate(self.aggregation, self.window)

    # ---------------------------------------------------------------- scores
    def risk_of(self, agg: RiskAggregate) -> float:
        """``sigmoid(aggregate)`` (``sigmoid(bias)`` before any token)."""
        v = agg.value
        return sigmoid(self.bias if v is None else v)

    def contributions(self, win: Window | None) -> tuple[dict[str, float], float]:
        """Each head feature's contribution and the remainder's over ``win`` (empty, 0 for None)."""
        if win is None:
            return {}, 0.0
        n = win.n
        named = {f: w * (win.z_sums.get(f, 0.0) / n - mu) for f, (w, mu) in self._wmu.items()}
        return named, win.remainder_sum / n

    def domain_risk(self, agg: RiskAggregate, domain: str) -> float:
        """The risk attributed to ``domain``: its features' share of the positive named contribution, times the
        risk (0 when no named contribution is positive)."""
        named, _ = self.contributions(agg.winner())
        return _domain_shares(named, self.catalog, [domain]).get(domain, 0.0) * self.risk_of(agg)

    def explain(self, agg: RiskAggregate, *, top: int = 5) -> DetectionScore:
        """The score of ``agg`` with its contributions (module docstring); ``top`` features are listed,
        largest ``|contribution|`` first."""
        win = agg.winner()
        named, rem = self.contributions(win)
        logit = self.bias if agg.value is None else float(agg.value)
        risk = sigmoid(logit)
        total_abs = math.fsum(abs(c) for c in named.values()) + abs(rem)
        shares = _domain_shares(named, self.catalog, self.catalog.domains)
        concepts = {d: round(s * risk, 6) for d, s in shares.items()}
        n = win.n if win is not None else 0
        tops: list[dict[str, Any]] = []
        for f, c in sorted(named.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top]:
            info = self.catalog[f]
            act, pos = win.peaks.get(f, (0.0, -1)) if win is not None else (0.0, -1)
            mean_act = win.z_sums.get(f, 0.0) / n if n else 0.0
            tops.append({"id": f, "layer": info.layer, "index": info.latent, "latent": info.latent,
                         "contribution": round(c, 6), "share": round(abs(c) / total_abs, 6) if total_abs else 0.0,
                         "activation": round(act, 6), "normalized": round(info.normalize(act), 6),
                         "mean_activation": round(mean_act, 6), "position": pos,
                         "explanation": info.explanation, "domains": list(info.domains)})
        named_sum = math.fsum(named.values())
        return DetectionScore(
            round(risk, 6), concepts, tops, logit=logit, bias=self.bias, named=named_sum, remainder=rem,
            named_share=(total_abs - abs(rem)) / total_abs if total_abs else 0.0,
            remainder_share=abs(rem) / total_abs if total_abs else 0.0, aggregation=self.aggregation,
            window=self.window, span=(win.first, win.last) if win is not None else (-1, -1), tokens=n,
            scope_tokens=agg.n)

    def score(self, tokens: Iterable[TokenActivations], *, scopes: Sequence[str] = ("prompt",),
              top: int = 5) -> DetectionScore:
        """Score the content tokens of ``scopes`` (same call as `RiskHead.score`). Every token of ``scopes``,
        content or not, must carry its terms (a token without them was not scanned with this head)."""
        agg = self.aggregate()
        for t in tokens:
            if t.scope not in scopes:
                continue
            if t.content:
                agg.push(self.token_parts(t))
            elif t.head_terms is None:
                raise MissingHeadTermsError(f"token {t.position} ({t.text!r}) carries no detection-head terms: the "
                                            "sequence was not scanned by a guard with this head")
        return self.explain(agg, top=top)


def _domain_shares(named: Mapping[str, float], catalog: FeatureCatalog, domains: Iterable[str]) -> dict[str, float]:
    """Per domain, the share of the positive named contribution carried by its features."""
    positive = {f: c for f, c in named.items() if c > 0}
    total = math.fsum(positive.values())
    out: dict[str, float] = {}
    for d in domains:
        part = math.fsum(c for f, c in positive.items() if d in catalog[f].domains)
        out[d] = part / total if total > 0 else 0.0
    return out


# ------------------------------------------------------------------------------------------- loading


def scorer_from_db(db: NeuronDB, catalog: FeatureCatalog | None = None, *,
                   required: bool = False) -> DetectionHead | RiskHead | None:
    """The database's risk scorer: its detection head when it ships one, else its sparse `RiskHead` (None
    without either, unless ``required``). Policies compiled for the guard should use this."""
    catalog = catalog or FeatureCatalog.from_db(db)
    file = db.detection_head()
    if file is not None:
        return DetectionHead(file, catalog, source=str(db.path))
    return RiskHead.from_db(db, catalog, required=required)


__all__ = ["AGGREGATIONS", "DetectionHead", "DetectionHeadError", "DetectionScore", "LayerTerms",
           "MissingHeadTermsError", "RiskAggregate", "TokenParts", "Window", "scorer_from_db", "sigmoid"]
