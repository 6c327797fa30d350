"""Stream text through a model with hooks and store activations at chosen hook points as shards.

Input is any iterable of text records (the built-in corpus from `safesail_training.corpus.general`, or the
user's own JSONL/text files). Each record is encoded with `safesail_guard.chat_template` (chat records get the chat
template), documents are grouped into windows, sorted by length inside a window and batched with little
padding, and the forward pass stops right after the deepest hooked module (`stop_after`), so the layers above
it and the LM head are never run. Activations at kept positions (not padding, and not special tokens unless
configured) go to one `ShardWriter` per hook point.

Resumable: shards are committed at window boundaries together with a cursor (the index of the last record of
the window), so an interrupted harvest restarts after the last committed window and yields the same shards as
an uninterrupted one. Memory is bounded by one window of activations plus one shard buffer.

How it connects: `safesail_training.build_sae` and `safesail harvest` write training and held-out shards
with it (`safesail_training.shards`); `act_records` and `model_metrics` reuse its hooks and batching.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from safesail_guard.chat_template import EncodedText, encode_chat, encode_text
from safesail_guard.hooks import HookPoint, collect_padded, resolve_points
from safesail_guard.models import LoadedModel
from safesail_training.shards import ShardError, ShardWriter


class HarvestError(ValueError):
    """Harvesting cannot start or continue; the message says why and what to change."""


class HarvestConfig(BaseModel):
    """How to harvest activations."""

    model_config = ConfigDict(extra="forbid")

    points: list[str] = Field(default=["layers.14.mlp_out"], description="Hook points, e.g. 'layers.14.mlp_out'.")
    max_tokens: int = Field(default=1_100_000, gt=0, description="Stop after this many kept tokens.")
    max_seq_len: int = Field(default=256, ge=8, description="Plain documents are cut into chunks of this many tokens; chats are truncated.")
    batch_tokens: int = Field(default=4096, ge=64, description="Upper bound on padded tokens per forward batch.")
    window_docs: int = Field(default=128, ge=1, description="Records per sorted window; shards are committed at window boundaries.")
    dtype: Literal["float16", "bfloat16"] = Field(default="float16", description="Storage dtype of the shards.")
    shard_tokens: int = Field(default=65536, ge=256, description="Tokens per shard file (approximately).")
    exclude_special: bool = Field(default=True, description="Drop special tokens (BOS, <|im_start|>, ...) from the stored activations.")
    min_doc_tokens: int = Field(default=4, ge=1, description="Skip documents with fewer kept tokens than this.")

    @field_validator("points")
    @classmethod
    def _points_parse(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("points must name at least one hook point, e.g. 'layers.14.mlp_out'")
        return [HookPoint.parse(p).name for p in v]


@dataclass
class HarvestResult:
    """What a harvest produced."""

    out_dir: Path
    points: list[str]
    n_tokens: int
    n_records: int
    seconds: float
    resumed_from_tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Kept tokens harvested per second in this run (0 when everything was already done)."""
        new = self.n_tokens - self.resumed_from_tokens
        return new / self.seconds if self.seconds > 0 and new > 0 else 0.0


def record_text_and_kind(record: Any) -> tuple[str, str, list[dict[str, str]] | None]:
    """Pull (text, kind, messages) out of a corpus record, a dict, or a plain string."""
    if isinstance(record, str):
        return record, "doc", None
    get = record.get if isinstance(record, dict) else lambda k, d=None: getattr(record, k, d)
    messages = get("messages", None)
    return get("text", "") or "", get("kind", "doc") or "doc", messages


def encode_record(tokenizer: Any, record: Any, max_seq_len: int) -> list[EncodedText]:
    """Encode one record into one or more sequences (plain text is chunked, chats are truncated)."""
    text, kind, messages = record_text_and_kind(record)
    if messages or kind == "chat":
        msgs = messages or [{"role": "user", "content": text}]
        if getattr(tokenizer, "chat_template", None):
            return [encode_chat(tokenizer, msgs, max_length=max_seq_len)]
        text = "\n".join(m["content"] for m in msgs)
    if not text.strip():
        return []
    enc = encode_text(tokenizer, text)
    if len(enc) <= max_seq_len:
        return [enc]
    chunks = []
    for start in range(0, len(enc), max_seq_len):
        sl = slice(start, start + max_seq_len)
        chunks.append(EncodedText(enc.text, enc.input_ids[sl], enc.offsets[sl], enc.special[sl], enc.roles[sl]))
    return chunks


def keep_mask(enc: EncodedText, exclude_special: bool) -> list[bool]:
    """Positions whose activations are stored."""
    return [not s for s in enc.special] if exclude_special else [True] * len(enc)


_Seq = TypeVar("_Seq", bound=tuple)


def _batches(seqs: list[_Seq], batch_tokens: int) -> Iterator[list[_Seq]]:
    """Length-sorted batches whose padded size stays under `batch_tokens`. Items are tuples whose first element
    is the `EncodedText` (e.g. ``(enc, mask)``, or ``(enc, mask, index)`` to keep track of the input order)."""
    ordered = sorted(seqs, key=lambda s: len(s[0]))
    batch: list[_Seq] = []
    for item in ordered:
        longest = max([len(item[0])] + [len(b[0]) for b in batch])
        if batch and longest * (len(batch) + 1) > batch_tokens:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def forward_collect(
    loaded: LoadedModel, points: list[HookPoint], batch: list[tuple[EncodedText, list[bool]]]
) -> dict[HookPoint, torch.Tensor]:
    """Run one padded batch up to the deepest point; return kept activations per point `[n_kept, d_model]`."""
    return collect_padded(loaded.model, points, batch, pad_id=loaded.tokenizer.pad_token_id or 0)


def _meta(loaded: LoadedModel, cfg: HarvestConfig, corpus: str, point: HookPoint) -> dict[str, Any]:
    """Provenance stored with one point's shards. It names that point only, so a later harvest that adds
    other points to the same directory still recognises (and skips) the finished ones."""
    config = cfg.model_dump(exclude={"max_tokens", "points"})
    config["point"] = point.name
    return {"model": loaded.identity.to_dict(), "config": config, "corpus": corpus}


def harvest(
    loaded: LoadedModel,
    records: Iterable[Any],
    out_dir: Path,
    cfg: HarvestConfig | None = None,
    *,
    corpus: str = "custom",
    progress: bool = True,
) -> HarvestResult:
    """Harvest activations at `cfg.points` from `records` into `out_dir/<point>/` shards; resumable.

    `records` must be deterministic (same order on every call) for resume to be exact. `corpus` is a short
    description stored in the shard metadata; a resume with a different model, config or corpus is refused.
    """
    cfg = cfg or HarvestConfig()
    points = resolve_points(loaded.model, cfg.points)
    out_dir = Path(out_dir)
    writers: dict[HookPoint, ShardWriter] = {}
    for p in points:
        meta = _meta(loaded, cfg, corpus, p)
        pdir = out_dir / p.name
        existing = pdir / "index.json"
        if existing.is_file():
            try:
                old_meta = json.loads(existing.read_text()).get("meta", {})
            except (OSError, json.JSONDecodeError) as exc:
                raise HarvestError(f"{existing} is unreadable ({exc}); delete {pdir} to start over") from None
            if old_meta != meta:
                raise HarvestError(
                    f"{pdir} holds activations made with a different model, config or corpus; "
                    "choose another output directory or delete it to start over"
                )
        try:
            writers[p] = ShardWriter(pdir, loaded.d_model, dtype=cfg.dtype, shard_tokens=cfg.shard_tokens, meta=meta)
        except ShardError as exc:
            raise HarvestError(str(exc)) from None

    start_tokens = min(w.n_tokens for w in writers.values())
    if all(w.complete for w in writers.values()):
        return HarvestResult(out_dir, [p.name for p in points], start_tokens, 0, 0.0, start_tokens)
    # finished points are left alone; only the others share the forward passes below
    all_points, points = points, [p for p in points if not writers[p].complete]
    writers = {p: writers[p] for p in points}
    cursor = min(w.resume_cursor for w in writers.values())
    for w in writers.values():
        w.truncate_to_cursor(cursor)
    total = min(w.n_tokens for w in writers.values())
    resumed_from = total

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_tokens, initial=total, unit="tok", desc="harvest", dynamic_ncols=True)
    t0 = time.perf_counter()
    n_records = 0
    stream = enumerate(records)
    if cursor >= 0:
        stream = itertools.islice(stream, cursor + 1, None)
    try:
        while total < cfg.max_tokens:
            window = list(itertools.islice(stream, cfg.window_docs))
            if not window:
                break
            seqs = []
            for _, rec in window:
                for enc in encode_record(loaded.tokenizer, rec, cfg.max_seq_len):
                    mask = keep_mask(enc, cfg.exclude_special)
                    if sum(mask) >= cfg.min_doc_tokens:
                        seqs.append((enc, mask))
            collected: dict[HookPoint, list[torch.Tensor]] = {p: [] for p in points}
            for batch in _batches(seqs, cfg.batch_tokens):
                for p, acts in forward_collect(loaded, points, batch).items():
                    collected[p].append(acts)
            n_new = sum(a.shape[0] for a in collected[points[0]])
            n_new = min(n_new, cfg.max_tokens - total)
            last_index = window[-1][0]
            for p in points:
                if collected[p]:
                    writers[p].add(torch.cat(collected[p])[:n_new], cursor=last_index)
            total += n_new
            n_records += len(window)
            if bar is not None:
                bar.update(n_new)
                bar.set_postfix(tok_s=f"{(total - resumed_from) / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        if bar is not None:
            bar.close()
    if total == 0:
        raise HarvestError("the corpus produced no tokens to harvest (empty, or every document too short)")
    for w in writers.values():
        w.close(complete=True)
    return HarvestResult(out_dir, [p.name for p in all_points], total, n_records, time.perf_counter() - t0, resumed_from)
