"""Activation records of selected SAE features over an explanation set, and encoder thresholds for the guard.

`collect_acts` streams the explanation texts through the model once (up to the deepest hook point), encodes
each point's activations with its TopK SAE and keeps, for the *selected* latents only, a dense
``[n_tokens, n_selected]`` matrix of TopK activations plus the raw pre-activations. From those:

- `feature_records` picks, per feature, the top-activating windows, windows sampled per quantized level
  (0-10, linear in the feature's max activation - the paper's binning) and a few quiet windows;
- `fit_thresholds` gives each selected latent a threshold ``theta`` such that ``pre > theta`` reproduces
  TopK firing as closely as possible (best F1). The runtime guard only ships the selected encoder rows, so
  it cannot rank all latents per token; the threshold stands in for the TopK competition. Its agreement
  with TopK on the explanation set is measured and stored.

How it connects: the ``records`` stage of `safesail build-db` (`safesail_training.build_db_select`) calls all
three; the records are `safesail_neuron_db.records.FeatureRecords` and go on to the explainer, the simulators
and the database writer, and the thresholds into the database's encoder file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from safesail_guard.hooks import HookPoint
from safesail_guard.models import LoadedModel
from safesail_guard.sae import TopKSAE
from safesail_neuron_db.records import ActivationExample, ConceptHit, FeatureRecords, feature_id, quantize
from safesail_training.harvest import _batches, encode_record, forward_collect, keep_mask, record_text_and_kind


@dataclass(frozen=True)
class RecordsConfig:
    """How many examples of which kind to keep per feature, and the window around each."""

    n_top: int = 10
    per_level: int = 2
    n_quiet: int = 3
    before: int = 24  # tokens kept before the max-activating token
    after: int = 8  # and after it
    max_seq_len: int = 256
    batch_tokens: int = 4096


@dataclass
class ExplanationActs:
    """Selected-latent activations over the explanation set, token-aligned across layers."""

    pieces: list[list[str]]  # per sequence, the text piece of each kept token
    sources: list[str]  # per sequence, where its text came from
    starts: torch.Tensor  # [n_seqs + 1] token offsets of each sequence in the flat matrices
    latents: dict[str, torch.Tensor]  # point -> [S] selected latent indices (ascending)
    acts: dict[str, torch.Tensor] = field(default_factory=dict)  # point -> [N, S] float16 TopK activations
    pre: dict[str, torch.Tensor] = field(default_factory=dict)  # point -> [N, S] float16 pre-activations

    @property
    def n_tokens(self) -> int:
        return int(self.starts[-1])


def _pieces_of(enc: Any, mask: list[bool]) -> list[str]:
    return [p for p, keep in zip(enc.tokens, mask, strict=True) if keep]


def collect_acts(
    loaded: LoadedModel,
    saes: dict[str, TopKSAE],
    latents: dict[str, torch.Tensor],
    records: Sequence[Any],
    cfg: RecordsConfig | None = None,
    *,
    progress: bool = True,
) -> ExplanationActs:
    """Run `records` through the model once and keep the selected latents' activations at every point."""
    cfg = cfg or RecordsConfig()
    if not records:
        raise ValueError("the explanation set is empty: nothing to collect activation records from")
    points = [HookPoint.parse(p) for p in saes]
    seqs: list[tuple[Any, list[bool], int, str]] = []
    for rec in records:
        _, kind, _ = record_text_and_kind(rec)
        source = getattr(rec, "source", None) or (rec.get("source") if isinstance(rec, dict) else None) or kind
        for enc in encode_record(loaded.tokenizer, rec, cfg.max_seq_len):
            mask = keep_mask(enc, exclude_special=True)
            if sum(mask) >= 2:
                seqs.append((enc, mask, len(seqs), str(source)))
    if not seqs:
        raise ValueError("the explanation set produced no tokens (every text empty or too short)")
    col_maps: dict[str, torch.Tensor] = {}
    for name, sae in saes.items():
        lat = latents[name]
        m = torch.full((sae.n_latents,), -1, dtype=torch.long)
        m[lat] = torch.arange(lat.numel())
        col_maps[name] = m
    per_seq: dict[str, list[tuple[torch.Tensor, torch.Tensor] | None]] = {p.name: [None] * len(seqs) for p in points}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(sum(m) for _, m, _, _ in seqs), unit="tok", desc="explanation set", dynamic_ncols=True)
    try:
        for batch in _batches(seqs, cfg.batch_tokens):
            out = forward_collect(loaded, points, [(e, m) for e, m, _, _ in batch])
            lengths = [sum(m) for _, m, _, _ in batch]
            for p in points:
                sae = saes[p.name]
                lat = latents[p.name]
                x = out[p]
                with torch.inference_mode():
                    code = sae.encode(x)
                    cols = col_maps[p.name][code.indices]
                    dense = torch.zeros((x.shape[0], lat.numel()))
                    keep = cols >= 0
                    rows = torch.arange(x.shape[0]).unsqueeze(1).expand_as(cols)
                    dense[rows[keep], cols[keep]] = code.values[keep].float().clamp_min(0)
                    pre = torch.nn.functional.linear(x - sae.b_dec, sae.W_enc[lat], sae.b_enc[lat])
                a_parts = dense.split(lengths)
                p_parts = pre.split(lengths)
                for (_, _, i, _), a, pr in zip(batch, a_parts, p_parts, strict=True):
                    per_seq[p.name][i] = (a.half(), pr.half())
            if bar is not None:
                bar.update(sum(lengths))
    finally:
        if bar is not None:
            bar.close()
    lengths_all = torch.tensor([sum(m) for _, m, _, _ in seqs])
    starts = torch.zeros(len(seqs) + 1, dtype=torch.long)
    starts[1:] = lengths_all.cumsum(0)
    result = ExplanationActs(
        pieces=[_pieces_of(e, m) for e, m, _, _ in seqs],
        sources=[s for _, _, _, s in seqs],
        starts=starts,
        latents={k: v.clone() for k, v in latents.items()},
    )
    for name, parts in per_seq.items():
        result.acts[name] = torch.cat([p[0] for p in parts if p is not None])
        result.pre[name] = torch.cat([p[1] for p in parts if p is not None])
    return result


@dataclass
class ThresholdFit:
    """Per selected latent: threshold on the pre-activation and its agreement with TopK firing."""

    threshold: torch.Tensor  # [S]
    precision: torch.Tensor  # [S] share of thresholded firings that TopK also fired
    recall: torch.Tensor  # [S] share of TopK firings the threshold keeps
    n_fired: torch.Tensor  # [S] TopK firings in the explanation set


def fit_thresholds(pre: torch.Tensor, acts: torch.Tensor) -> ThresholdFit:
    """Best-F1 thresholds so that ``pre > threshold`` reproduces ``acts > 0`` (TopK firing) per column."""
    if pre.shape != acts.shape or pre.dim() != 2:
        raise ValueError(f"pre and acts must be [N, S] of one shape, got {tuple(pre.shape)} and {tuple(acts.shape)}")
    n_features = pre.shape[1]
    thr = torch.zeros(n_features)
    prec = torch.zeros(n_features)
    rec = torch.zeros(n_features)
    n_fired = (acts > 0).sum(0)
    for j in range(n_features):
        s = pre[:, j].float()
        y = acts[:, j] > 0
        n_pos = int(y.sum())
        if n_pos == 0:
            thr[j] = max(float(s.max()) + 1.0, 0.0) if s.numel() else 1.0
            continue
        order = torch.argsort(s, descending=True)
        ys = y[order].float()
        tp = ys.cumsum(0)
        fp = (1 - ys).cumsum(0)
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
        best = int(torch.argmax(f1))
        s_sorted = s[order]
        lower = float(s_sorted[best + 1]) if best + 1 < s_sorted.numel() else float(s_sorted[best]) - 1.0
        thr[j] = max((float(s_sorted[best]) + lower) / 2, 0.0)
        fires = s > thr[j]
        tp_final = int((fires & y).sum())
        prec[j] = tp_final / max(int(fires.sum()), 1)
        rec[j] = tp_final / n_pos
    return ThresholdFit(thr, prec, rec, n_fired)


def _doc_maxima(acts: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence and column: max activation and the (sequence-relative) position of the max."""
    n = starts.numel() - 1
    vals = torch.zeros((n, acts.shape[1]))
    pos = torch.zeros((n, acts.shape[1]), dtype=torch.long)
    for d in range(n):
        a = acts[int(starts[d]) : int(starts[d + 1])].float()
        v, p = a.max(0)
        vals[d], pos[d] = v, p
    return vals, pos


def _example(ex: ExplanationActs, acts_col: torch.Tensor, d: int, center: int, kind: str, max_act: float, cfg: RecordsConfig) -> ActivationExample:
    s, e = int(ex.starts[d]), int(ex.starts[d + 1])
    lo = max(0, center - cfg.before)
    hi = min(e - s, center + cfg.after + 1)
    window = [round(float(v), 4) for v in acts_col[s + lo : s + hi]]
    mx = max(window) if window else 0.0
    return ActivationExample(
        tokens=ex.pieces[d][lo:hi],
        acts=window,
        levels=quantize(window, max_act),
        max_act=mx,
        kind=kind,
        level=quantize([mx], max_act)[0],
        source=ex.sources[d],
    )


def feature_records(
    ex: ExplanationActs,
    point: str,
    layer: int,
    hits: dict[int, list[ConceptHit]],
    cfg: RecordsConfig | None = None,
    *,
    seed: int = 0,
) -> list[FeatureRecords]:
    """FeatureRecords for every selected latent at `point` (deterministic for a given seed)."""
    cfg = cfg or RecordsConfig()
    acts = ex.acts[point]
    lat = ex.latents[point]
    maxima, argpos = _doc_maxima(acts, ex.starts)
    n_tok = max(ex.n_tokens, 1)
    out: list[FeatureRecords] = []
    for j, latent in enumerate(lat.tolist()):
        col = acts[:, j]
        m = maxima[:, j]
        max_act = float(m.max()) if m.numel() else 0.0
        rec = FeatureRecords(
            feature_id=feature_id(layer, latent),
            layer=layer,
            latent=latent,
            concepts=hits.get(latent, []),
            max_act=round(max_act, 4),
            fire_rate=round(float((col > 0).sum()) / n_tok, 6),
        )
        gen = torch.Generator().manual_seed(seed * 1_000_003 + layer * 100_003 + latent)
        firing = (m > 0).nonzero().flatten()
        top = firing[torch.argsort(m[firing], descending=True, stable=True)][: cfg.n_top].tolist()
        for d in top:
            rec.examples.append(_example(ex, col, d, int(argpos[d, j]), "top", max_act, cfg))
        taken = set(top)
        if max_act > 0:
            levels = torch.tensor(quantize(m.tolist(), max_act))
            for level in range(1, 11):
                cand = [d for d in (levels == level).nonzero().flatten().tolist() if d not in taken]
                if not cand:
                    continue
                pick = torch.randperm(len(cand), generator=gen)[: cfg.per_level].tolist()
                for i in sorted(pick):
                    d = cand[i]
                    taken.add(d)
                    rec.examples.append(_example(ex, col, d, int(argpos[d, j]), "level", max_act, cfg))
        quiet = (m <= 0).nonzero().flatten().tolist()
        if quiet:
            for i in sorted(torch.randperm(len(quiet), generator=gen)[: cfg.n_quiet].tolist()):
                d = quiet[i]
                length = int(ex.starts[d + 1] - ex.starts[d])
                rec.examples.append(_example(ex, col, d, min(cfg.before, length - 1), "quiet", max_act, cfg))
        out.append(rec)
    return out
