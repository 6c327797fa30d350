"""Harvest throughput vs a bare forward pass of the same model on the same text, measured side by side.

Question: what does harvesting cost relative to just running the model? The harvester stops the forward pass
after the deepest hooked module, so harvesting a middle layer should be *faster* than a full forward.

Runs on the embedded SmolLM2-135M-Instruct with the built-in corpus. Writes benchmarks/results/harvest.md.
Usage: python benchmarks/bench_harvest.py [--tokens 30000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model  # benchmarks/_machine.py (scripts run from this folder)

from safesail_guard.models import load_model
from safesail_training.corpus.general import iter_general
from safesail_training.harvest import HarvestConfig, _batches, encode_record, harvest, keep_mask

RESULTS = Path(__file__).parent / "results" / "harvest.md"


def take_records(loaded, records, max_tokens: int, cfg: HarvestConfig) -> list:
    """The shortest prefix of `records` holding at least `max_tokens` kept tokens."""
    total = 0
    for i, rec in enumerate(records):
        total += sum(sum(keep_mask(e, cfg.exclude_special)) for e in encode_record(loaded.tokenizer, rec, cfg.max_seq_len))
        if total >= max_tokens:
            return records[: i + 1]
    return records


@torch.inference_mode()
def bare_forward(loaded, records, cfg: HarvestConfig) -> tuple[int, float]:
    """Full forward (all layers + LM head) over the same length-sorted batches the harvester builds.

    Returns (kept tokens, seconds); encoding time is excluded here but included in the harvest figure.
    """
    seqs = []
    total = 0
    for rec in records:
        for enc in encode_record(loaded.tokenizer, rec, cfg.max_seq_len):
            m = keep_mask(enc, cfg.exclude_special)
            seqs.append((enc, m))
            total += sum(m)
    pad = loaded.tokenizer.pad_token_id or 0
    t0 = time.perf_counter()
    for batch in _batches(seqs, cfg.batch_tokens):
        width = max(len(e) for e, _ in batch)
        ids = torch.full((len(batch), width), pad)
        attn = torch.zeros_like(ids)
        for r, (e, _) in enumerate(batch):
            ids[r, : len(e)] = torch.tensor(e.input_ids)
            attn[r, : len(e)] = 1
        loaded.model(input_ids=ids, attention_mask=attn, use_cache=False)
    return total, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    loaded = load_model("embedded")
    records = list(iter_general(seed=123, shuffle=True))[:3000]
    rows = []
    for name, points in [("harvest layers.14.mlp_out", ["layers.14.mlp_out"]), ("harvest layers.29.resid_post", ["layers.29.resid_post"])]:
        cfg = HarvestConfig(points=points, max_tokens=10**9)
        subset = take_records(loaded, records, args.tokens, cfg)
        best_h, best_f = 0.0, 0.0
        for _ in range(args.repeats):
            total_f, secs_f = bare_forward(loaded, subset, cfg)
            best_f = max(best_f, total_f / secs_f)
            with tempfile.TemporaryDirectory() as tmp:
                res = harvest(loaded, subset, Path(tmp), cfg, progress=False)
            best_h = max(best_h, res.tokens_per_s)
        rows.append((name, best_h, best_f, best_h / best_f))
        print(f"{name}: {best_h:,.0f} tok/s vs bare forward {best_f:,.0f} tok/s -> ratio {best_h / best_f:.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# Harvest throughput vs bare forward",
        "",
        f"Measured {dt.date.today()} on {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"model {loaded.identity.name}; {args.tokens:,} kept tokens of the built-in corpus per run, best of {args.repeats}; "
        "the bare forward runs the same length-sorted padded batches through all layers and the LM head.",
        "",
        "| what | harvest tok/s | bare forward tok/s | ratio (harvest / forward) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {h:,.0f} | {f:,.0f} | {r:.2f} |" for n, h, f, r in rows]
    lines += ["", f"Peak RSS of the benchmark process: {rss:,.0f} MB.", "", "Command: `python benchmarks/bench_harvest.py`"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
