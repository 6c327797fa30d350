"""Metrics that need the model itself: site activations for short queries, and delta next-token loss.

- `query_site_acts` runs each query (as a user chat turn, or plain text) up to a hook point and returns the
  activations of its content tokens only, so the chat template's scaffolding never counts as "the query".
  Computed once per point and reused for every SAE in a sweep.
- `delta_ntp_loss` is the Safe-SAIL Table 1 column δL_NTP: mean next-token cross-entropy with the SAE's
  reconstruction spliced in at the hook point, minus the clean loss, over the same tokens.

How it connects: `safesail_training.build_sae` uses both (selection on the concept pairs, ΔNTP per SAE); the
``pairs`` and ``style`` stages of `safesail build-db` (`build_db_select`, `build_db_checks`) use
`query_sites_acts`. The hooks come from `safesail_guard.hooks`, the encoding and batching from
`safesail_training.harvest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from safesail_guard.chat_template import EncodedText, encode_chat, encode_text
from safesail_guard.hooks import HookPoint, attach_hooks
from safesail_guard.models import LoadedModel
from safesail_training.harvest import _batches, forward_collect


def encode_queries(loaded: LoadedModel, texts: Sequence[str], *, chat: bool = True, max_seq_len: int = 256) -> list[tuple[EncodedText, list[bool]]]:
    """Encode queries; the mask keeps only the query's own tokens (user content, no special tokens)."""
    out = []
    use_chat = chat and getattr(loaded.tokenizer, "chat_template", None) is not None
    for text in texts:
        if use_chat:
            enc = encode_chat(loaded.tokenizer, [{"role": "user", "content": text}], max_length=max_seq_len)
            mask = enc.content_mask(["user"])
        else:
            enc = encode_text(loaded.tokenizer, text)
            enc = EncodedText(enc.text, enc.input_ids[:max_seq_len], enc.offsets[:max_seq_len], enc.special[:max_seq_len], enc.roles[:max_seq_len])
            mask = [not s for s in enc.special]
        if not any(mask):
            mask = [True] * len(enc)  # e.g. a query the template swallowed: fall back to every token
        out.append((enc, mask))
    return out


def query_site_acts(
    loaded: LoadedModel,
    point: HookPoint | str,
    texts: Sequence[str],
    *,
    chat: bool = True,
    batch_tokens: int = 4096,
) -> list[torch.Tensor]:
    """Activations `[n_tokens_i, d_model]` at `point` for each query's content tokens, in input order."""
    point = HookPoint.parse(point)
    return query_sites_acts(loaded, [point], texts, chat=chat, batch_tokens=batch_tokens)[point.name]


def query_sites_acts(
    loaded: LoadedModel,
    points: Sequence[HookPoint | str],
    texts: Sequence[str],
    *,
    chat: bool = True,
    batch_tokens: int = 4096,
    progress: bool = False,
    desc: str = "queries",
) -> dict[str, list[torch.Tensor]]:
    """`query_site_acts` for several points from one forward pass per batch: ``{point name: [acts_i, ...]}``."""
    from tqdm import tqdm

    parsed = [HookPoint.parse(p) for p in points]
    seqs = encode_queries(loaded, texts, chat=chat)
    bar = tqdm(total=len(seqs), unit="query", desc=desc, disable=not progress, dynamic_ncols=True)
    result: dict[str, list[torch.Tensor | None]] = {p.name: [None] * len(texts) for p in parsed}
    for batch in _batches([(enc, mask, i) for i, (enc, mask) in enumerate(seqs)], batch_tokens):
        out = forward_collect(loaded, parsed, [(e, m) for e, m, _ in batch])
        for p in parsed:
            acts = out[p]
            start = 0
            for _, m, i in batch:
                n = sum(m)
                result[p.name][i] = acts[start : start + n]
                start += n
        bar.update(len(batch))
    bar.close()
    return {name: [r for r in rows if r is not None] for name, rows in result.items()}


@dataclass
class NTPLoss:
    """Clean and spliced next-token loss over the same predicted tokens."""

    clean: float
    spliced: float
    n_tokens: int

    @property
    def delta(self) -> float:
        """Spliced minus clean loss (δL_NTP)."""
        return self.spliced - self.clean


@torch.inference_mode()
def delta_ntp_loss(
    loaded: LoadedModel,
    sae: torch.nn.Module,
    point: HookPoint | str,
    records: Sequence[object],
    *,
    max_seq_len: int = 256,
    batch_tokens: int = 4096,
) -> NTPLoss:
    """Mean next-token CE with the SAE reconstruction spliced in at `point`, and without, on `records`.

    Targets are the non-special tokens (positions 1..n-1 predicted from their prefix). `sae` must provide
    `encode(x)` and `decode(code)` over `[..., d_model]`.
    """
    from safesail_training.harvest import encode_record, keep_mask

    point = HookPoint.parse(point)
    seqs = []
    for rec in records:
        for enc in encode_record(loaded.tokenizer, rec, max_seq_len):
            if len(enc) >= 2:
                seqs.append((enc, keep_mask(enc, True)))
    if not seqs:
        raise ValueError("delta_ntp_loss needs at least one record with two or more tokens")

    def splice(_p: HookPoint, act: torch.Tensor) -> torch.Tensor:
        x = act.float()
        return sae.decode(sae.encode(x)).to(act.dtype)

    totals = {"clean": 0.0, "spliced": 0.0}
    n_total = 0
    device = next(loaded.model.parameters()).device
    pad_id = loaded.tokenizer.pad_token_id or 0
    for batch in _batches(seqs, batch_tokens):
        width = max(len(e) for e, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        target_mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for r, (enc, mask) in enumerate(batch):
            ids[r, : len(enc)] = torch.tensor(enc.input_ids)
            attn[r, : len(enc)] = 1
            target_mask[r, : len(enc)] = torch.tensor(mask)
        ids, attn = ids.to(device), attn.to(device)
        labels_mask = target_mask[:, 1:].to(device)
        n = int(labels_mask.sum())
        if n == 0:
            continue
        for name in ("clean", "spliced"):
            if name == "clean":
                logits = loaded.model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            else:
                with attach_hooks(loaded.model, {point: splice}):
                    logits = loaded.model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
            totals[name] += float(ce[labels_mask].sum())
        n_total += n
    if n_total == 0:
        raise ValueError("delta_ntp_loss found no target tokens in the given records")
    clean, spliced = totals["clean"] / n_total, totals["spliced"] / n_total
    return NTPLoss(clean, spliced, n_total)
