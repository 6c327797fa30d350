"""Grid of feature-rule thresholds on the evaluation set's *train* split, to calibrate the shipped policies.

For each (min_activation, min_tokens) the share of train prompts per kind on which at least ``min_tokens``
watched prompt tokens have a feature of the selected domains at or above ``min_activation``. The shipped
policies take their thresholds from this table (flag: at most ~5% of benign train prompts; block: at most
~1%); the test split is only used afterwards by `bench_policy.py`.

    python benchmarks/calibrate_policy.py [--domains terror weapons]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from safesail_guard.runtime.guard import Guard

HERE = Path(__file__).resolve().parent
GRID_ACT = (0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)
GRID_TOK = (1, 2, 3, 4, 6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", nargs="*", default=None, help="default: every domain")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in (HERE / "data" / "guard_eval.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    guard = Guard.from_db()
    doms = set(args.domains or guard.catalog.domains)
    watched = {f for f in guard.catalog if set(guard.catalog[f].domains) & doms}
    res = guard.scan_batch([r["text"] for r in train], batch_size=8)
    peaks = []  # per prompt: per watched token, the max normalized activation of a selected feature
    for g in res:
        peaks.append([max((h.normalized for h in t.hits if h.feature_id in watched), default=0.0)
                      for t in g.tokens if t.content and t.scope == "prompt"])
    print(f"domains: {' '.join(sorted(doms))}; {len(watched)} features; {len(train)} train prompts")
    print("min_act min_tok | " + " | ".join(f"{k:>6}" for k in ("unsafe", "edgy", "benign")))
    for a in GRID_ACT:
        for m in GRID_TOK:
            rate = {}
            for kind in ("unsafe", "edgy", "benign"):
                sel = [p for p, r in zip(peaks, train) if r["kind"] == kind]
                rate[kind] = sum(sum(v >= a for v in p) >= m for p in sel) / len(sel)
            print(f"{a:7.2f} {m:7d} | " + " | ".join(f"{rate[k]:6.2f}" for k in ("unsafe", "edgy", "benign")))


if __name__ == "__main__":
    main()
