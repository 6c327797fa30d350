"""Fit the guard's detection head: a linear score over SAE codes ``z`` and the SAE error ``e`` at several layers.

For a TopK SAE, ``x = W_dec^T z + b_dec + e`` exactly, so a linear score over ``[z ; e]`` contains every linear
probe on ``x`` and splits each logit into a *named* part (SAE features) and a *remainder* (the error). The fit:

    min_{w, b}  mean_i  a_i BCE(sigmoid(b + w . s_i), y_i)  +  lam1 * |w_z|_1  +  (lam2 / 2) * |w_e|_2^2

over standardised mean-pooled features ``s_i = [(z̄ - mu_z) / sd_z ; (ē - mu_e) / sd_e]`` per layer (``a_i``:
class weights giving both classes equal total weight, so the logit is calibrated at a 50/50 prior), solved by
FISTA (proximal gradient with soft-thresholding on the ``z`` block). Because the score is linear, the mean of
per-token logits equals the logit of the mean-pooled features; at run time the guard scores each token and
aggregates (`aggregate_token_logits`).

``lam1`` and ``lam2`` are chosen on training sources only by a group split (`select_lambdas`): the highest
pooled inner AUROC, and among the settings within ``tolerance`` of it the one that leans most on named
features (largest ``lam2``), then the sparsest (largest ``lam1``).

How it connects: `safesail_training.build_db_head` harvests a `TokenBank` of the safety set, fits the shipped
head and writes ``detection_head.safetensors`` (`safesail_neuron_db.detection_head`);
`benchmarks/bench_detection_head.py` runs the leave-one-source-out comparison with the dense probe.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from safesail_training.detection_eval import auroc, group_folds

LAM1_GRID: tuple[float, ...] = (0.002, 0.005, 0.01)
"""L1 strengths on the standardised ``z`` weights (mean loss scale)."""
LAM2_GRID: tuple[float, ...] = (0.01, 0.05, 0.2)
"""Ridge strengths on the standardised ``e`` weights (``1 / (C n)`` of an sklearn probe with ``n`` rows)."""


# ------------------------------------------------------------------------------------------- token bank


@dataclass
class TokenBank:
    """Per-token SAE view of ``n`` texts at several layers.

    Attributes:
        offsets: ``[n + 1]`` token offsets; text ``i`` owns rows ``offsets[i]:offsets[i+1]``.
        x: per layer, hook activations ``[T, d]`` (float16).
        idx: per layer, TopK latent ids ``[T, k]`` (int16 when the dictionary fits, else int32).
        val: per layer, TopK values ``[T, k]`` (float16, >= 0).
    """

    offsets: np.ndarray
    x: dict[int, np.ndarray] = field(default_factory=dict)
    idx: dict[int, np.ndarray] = field(default_factory=dict)
    val: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of texts."""
        return len(self.offsets) - 1

    @property
    def layers(self) -> list[int]:
        """Layers held, ascending."""
        return sorted(self.x)

    def save(self, path: Any) -> None:
        """One ``.npz`` (atomic rename)."""
        arrays: dict[str, np.ndarray] = {"offsets": self.offsets}
        for L in self.layers:
            arrays[f"x_{L}"], arrays[f"idx_{L}"], arrays[f"val_{L}"] = self.x[L], self.idx[L], self.val[L]
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Any) -> TokenBank:
        """Read a bank written by `save`."""
        with np.load(path) as z:
            bank = cls(z["offsets"])
            for key in z.files:
                if key.startswith("x_"):
                    L = int(key[2:])
                    bank.x[L], bank.idx[L], bank.val[L] = z[key], z[f"idx_{L}"], z[f"val_{L}"]
        return bank


def harvest_token_bank(loaded: Any, saes: dict[int, Any], points: Sequence[Any], convs: Sequence[list[dict[str, str]]],
                       *, max_tokens: int = 256, batch_size: int = 8, roles: Sequence[str] | None = None,
                       progress: Callable[[int], None] | None = None) -> TokenBank:
    """Run ``convs`` (chat message lists) through the model and keep, per content token, the hook activation and
    the SAE's TopK code at each point.

    Each conversation is rendered with the model's chat template and cut to ``max_tokens`` tokens; the kept
    tokens are the content of every message (the runtime guard's prompt scope; template scaffolding and a
    default system prompt are left out), or of the messages with one of ``roles`` (``["assistant"]`` for a
    reply). ``saes`` maps layer -> `TopKSAE` of the point at that layer;
    ``progress(n)`` is called after each batch with the number of texts it held (a ``tqdm.update``).
    """
    from safesail_guard.chat_template import encode_chat
    from safesail_guard.hooks import collect_padded

    encs = [encode_chat(loaded.tokenizer, c, max_length=max_tokens) for c in convs]
    masks = []
    for i, enc in enumerate(encs):
        m = enc.content_mask(roles)
        if not any(m):
            raise ValueError(f"text {i}: no content token left after rendering (empty message?)")
        masks.append(m)
    counts = np.array([sum(m) for m in masks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    layer_of = {p: p.layer for p in points}
    bank = TokenBank(offsets)
    for p in points:
        sae = saes[p.layer]
        idt = np.int16 if sae.n_latents < 32768 else np.int32
        bank.x[p.layer] = np.zeros((total, sae.d_in), dtype=np.float16)
        bank.idx[p.layer] = np.zeros((total, sae.k), dtype=idt)
        bank.val[p.layer] = np.zeros((total, sae.k), dtype=np.float16)
    order = sorted(range(len(convs)), key=lambda i: len(encs[i]))
    pad = loaded.tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        acts = collect_padded(loaded.model, list(points), [(encs[i], masks[i]) for i in ids], pad_id=pad)
        for p in points:
            L = layer_of[p]
            rows = torch.split(acts[p], [int(counts[i]) for i in ids])
            for i, x in zip(ids, rows):
                with torch.no_grad():
                    code = saes[L].encode(x.float())
                lo, hi = int(offsets[i]), int(offsets[i + 1])
                bank.x[L][lo:hi] = x.numpy()
                bank.idx[L][lo:hi] = code.indices.numpy()
                bank.val[L][lo:hi] = code.values.numpy()
        if progress is not None:
            progress(len(ids))
    return bank


def pooled_features(bank: TokenBank, saes: dict[int, Any]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Mean over each text's tokens of ``z`` (whole dictionary) and of ``e = x - W_dec^T z - b_dec``:
    ``{layer: (z̄ [n, n_latents], ē [n, d])}`` (float32)."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    counts = np.diff(bank.offsets)
    row = torch.from_numpy(np.repeat(np.arange(bank.n), counts))
    inv = torch.from_numpy(1.0 / np.maximum(counts, 1)).float().unsqueeze(1)
    for L in bank.layers:
        sae = saes[L]
        k = bank.idx[L].shape[1]
        Z = torch.zeros(bank.n, sae.n_latents)
        Z.index_put_((row.repeat_interleave(k), torch.from_numpy(bank.idx[L].astype(np.int64)).reshape(-1)),
                     torch.from_numpy(bank.val[L]).float().reshape(-1), accumulate=True)
        X = torch.zeros(bank.n, sae.d_in).index_add_(0, row, torch.from_numpy(bank.x[L]).float())
        Z, X = Z * inv, X * inv
        with torch.no_grad():
            E = X - Z @ sae.W_dec.float() - sae.b_dec.float()
        out[L] = (Z.numpy(), E.numpy())
    return out


# ------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where each layer's ``z`` and ``e`` columns sit in the concatenated feature matrix."""

    layers: tuple[int, ...]
    n_latents: tuple[int, ...]
    d: tuple[int, ...]

    @property
    def width(self) -> int:
        """Total columns."""
        return sum(self.n_latents) + sum(self.d)

    def blocks(self) -> list[tuple[int, slice, slice]]:
        """``(layer, z columns, e columns)`` per layer."""
        out, at = [], 0
        for L, m, d in zip(self.layers, self.n_latents, self.d):
            out.append((L, slice(at, at + m), slice(at + m, at + m + d)))
            at += m + d
        return out

    def z_mask(self) -> np.ndarray:
        """True for ``z`` columns."""
        mask = np.zeros(self.width, dtype=bool)
        for _, zs, _ in self.blocks():
            mask[zs] = True
        return mask


def stack_features(pooled: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, Layout]:
    """``[z̄_L1, ē_L1, z̄_L2, ē_L2, ...]`` as one ``[n, width]`` matrix and its `Layout`."""
    layers = tuple(sorted(pooled))
    mats = [m for L in layers for m in pooled[L]]
    layout = Layout(layers, tuple(pooled[L][0].shape[1] for L in layers), tuple(pooled[L][1].shape[1] for L in layers))
    return np.concatenate(mats, axis=1).astype(np.float32, copy=False), layout


# ---------------------------------------------------------------------------------------------------- fit


@dataclass
class HeadModel:
    """A fitted head in raw units: ``logit = bias + w . (s - mu)`` over the stacked features ``s``."""

    layout: Layout
    w: np.ndarray  # [width]
    mu: np.ndarray  # [width]
    bias: float
    lam1: float
    lam2: float
    iterations: int = 0

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits of ``X [n, width]``."""
        return (np.asarray(X, dtype=np.float64) - self.mu) @ self.w + self.bias

    def parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(named [n], remainder [n])`` logit parts (the bias is the rest)."""
        C = (np.asarray(X, dtype=np.float64) - self.mu) * self.w
        zm = self.layout.z_mask()
        return C[:, zm].sum(1), C[:, ~zm].sum(1)

    def named_share(self, X: np.ndarray) -> np.ndarray:
        """Per row, ``sum |c_named| / (sum |c_named| + |remainder|)`` (0 when both are 0)."""
        C = (np.asarray(X, dtype=np.float64) - self.mu) * self.w
        zm = self.layout.z_mask()
        named = np.abs(C[:, zm]).sum(1)
        rem = np.abs(C[:, ~zm].sum(1))
        den = named + rem
        return np.divide(named, den, out=np.zeros_like(den), where=den > 0)

    def nonzero_latents(self) -> dict[int, np.ndarray]:
        """Per layer, the latent ids with a non-zero weight."""
        return {L: np.nonzero(self.w[zs])[0] for L, zs, _ in self.layout.blocks()}


def fit_head(X: np.ndarray, y: np.ndarray, layout: Layout, lam1: float, lam2: float, *,
             max_iter: int = 400, tol: float = 1e-6) -> HeadModel:
    """FISTA on the class-balanced logistic loss with L1 on the ``z`` block and a ridge on the ``e`` block,
    over standardised columns; returns the head in raw units. ``X [n, width]``, ``y [n]`` in {0, 1}."""
    y = np.asarray(y, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        raise ValueError("fit_head needs both classes")
    Xt = torch.from_numpy(np.asarray(X, dtype=np.float32))
    mu = Xt.mean(0)
    sd = Xt.std(0)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    S = (Xt - mu) / sd
    n = S.shape[0]
    yt = torch.from_numpy(y).float()
    pos = float(y.sum())
    a = torch.where(yt > 0, n / (2 * pos), n / (2 * (n - pos))).float()
    zm = torch.from_numpy(layout.z_mask())
    # Lipschitz bound of the smooth part: 0.25 * max(a) * ||S||_2^2 / n + lam2 (power iteration)
    v = torch.randn(S.shape[1], generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        v = S.T @ (S @ v)
        v = v / v.norm()
    sig2 = float((S @ v).norm() ** 2)
    step = 1.0 / (0.25 * float(a.max()) * (sig2 + n) / n + lam2)  # +n: the intercept column
    w = torch.zeros(S.shape[1])
    b = torch.zeros(())
    w_prev, b_prev, t = w.clone(), b.clone(), 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        mom = (t - 1) / t_next
        wv = w + mom * (w - w_prev)
        bv = b + mom * (b - b_prev)
        r = a * (torch.sigmoid(S @ wv + bv) - yt) / n
        gw = S.T @ r + lam2 * torch.where(zm, torch.zeros(()), wv)
        gb = r.sum()
        w_new = wv - step * gw
        w_new = torch.where(zm, torch.sign(w_new) * torch.clamp(w_new.abs() - step * lam1, min=0), w_new)
        b_new = bv - step * gb
        w_prev, b_prev, t = w, b, t_next
        w, b = w_new, b_new
        if float((w - w_prev).abs().max()) < tol and it > 10:
            break
    w_raw = (w / sd).double().numpy()
    return HeadModel(layout, w_raw, mu.double().numpy(), float(b), lam1, lam2, it)


def platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of a class-balanced 1-D logistic fit ``P(unsafe) = sigmoid(a * score + b)`` (``a > 0``
    unless the scores rank backwards)."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000)
    m.fit(np.asarray(scores, dtype=np.float64).reshape(-1, 1), np.asarray(y, dtype=int))
    return float(m.coef_[0, 0]), float(m.intercept_[0])


@dataclass
class Selection:
    """What `select_lambdas` chose and why."""

    lam1: float
    lam2: float
    inner_auroc: dict[str, float]
    oof_scores: np.ndarray  # out-of-fold logits of the chosen setting (rows of the groups given)


def select_lambdas(X: np.ndarray, y: np.ndarray, groups: np.ndarray, layout: Layout, *,
                   lam1_grid: Sequence[float] = LAM1_GRID, lam2_grid: Sequence[float] = LAM2_GRID,
                   n_splits: int = 3, tolerance: float = 0.01, max_iter: int = 400) -> Selection:
    """Choose ``(lam1, lam2)`` by a group split of the rows given (training sources only): groups are dealt
    round-robin into ``n_splits`` folds, each fold predicted by a head fitted on the others, the pooled AUROC
    compared. Among settings within ``tolerance`` of the best, the largest ``lam2`` (more of the logit on named
    features) then the largest ``lam1`` (fewer features, each easier to explain) wins."""
    y = np.asarray(y, dtype=int)
    fold = group_folds(groups, n_splits)
    results: dict[tuple[float, float], tuple[float, np.ndarray]] = {}
    for lam1, lam2 in itertools.product(lam1_grid, lam2_grid):
        pred = np.full(len(y), np.nan)
        for f in sorted(set(fold.tolist())):
            tr, te = fold != f, fold == f
            if len(set(y[tr].tolist())) < 2:
                continue
            pred[te] = fit_head(X[tr], y[tr], layout, lam1, lam2, max_iter=max_iter).decision_function(X[te])
        ok = ~np.isnan(pred)
        results[(lam1, lam2)] = (auroc(pred[ok], y[ok]), pred)
    best = max(v[0] for v in results.values())
    near = [key for key, v in results.items() if v[0] >= best - tolerance]
    lam1, lam2 = max(near, key=lambda key: (key[1], key[0]))
    return Selection(lam1, lam2, {f"{a:g},{b:g}": round(v[0], 4) for (a, b), v in results.items()},
                     results[(lam1, lam2)][1])


# -------------------------------------------------------------------------------------- token aggregation


def token_logits(model: HeadModel, bank: TokenBank, saes: dict[int, Any]) -> list[np.ndarray]:
    """Per text, the head's logit at each token, ``s_t = bias + w . (s_t - mu)`` with ``s_t`` the token's own
    ``[z ; e]``; the mean of a text's token logits equals ``model.decision_function`` of its pooled features."""
    total = int(bank.offsets[-1])
    s = np.full(total, model.bias - float(model.mu @ model.w), dtype=np.float64)
    for L, zs, es in model.layout.blocks():
        sae = saes[L]
        w_z, w_e = model.w[zs], model.w[es]
        v = (sae.W_dec.detach().double().numpy() @ w_e)  # [n_latents]
        u = w_z - v
        idx = bank.idx[L].astype(np.int64)
        s += (u[idx] * bank.val[L].astype(np.float64)).sum(1)
        s += bank.x[L].astype(np.float64) @ w_e - float(sae.b_dec.detach().double().numpy() @ w_e)
    return [s[bank.offsets[i]:bank.offsets[i + 1]] for i in range(bank.n)]


def aggregate_token_logits(s: np.ndarray, kind: str, window: int = 1) -> float:
    """One logit from token logits ``s [T]``: ``mean``; ``last``; ``max``; ``rolling_max`` = the largest mean
    over ``window`` consecutive tokens (the plain mean when ``T <= window``)."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no tokens to aggregate")
    if kind == "mean":
        return float(s.mean())
    if kind == "last":
        return float(s[-1])
    if kind == "max":
        return float(s.max())
    if kind == "rolling_max":
        if s.size <= window:
            return float(s.mean())
        c = np.concatenate([[0.0], np.cumsum(s)])
        return float(((c[window:] - c[:-window]) / window).max())
    raise ValueError(f"unknown aggregation {kind!r}; use mean, last, max or rolling_max")
