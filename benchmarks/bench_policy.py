"""What the shipped policies decide on the evaluation set: decision rates per prompt kind and style.

For each shipped policy (default, monitor, strict), every prompt of the evaluation set's test split is scanned
with the guard (prompt only, no generation) and the decision counted. A useful policy flags or blocks unsafe
prompts often and safe-but-edgy and benign prompts rarely; these rates are what a policy author tunes.

    python benchmarks/bench_policy.py   # writes benchmarks/results/policy.{json,md}
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model, git_commit  # noqa: E402

from safesail_guard.runtime.guard import Guard  # noqa: E402

POLICIES = ("default", "monitor", "strict")
KINDS = ("unsafe", "edgy", "benign")


def main() -> None:
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in (HERE / "data" / "guard_eval.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    guard = Guard.from_db()
    out: dict = {"machine": cpu_model(), "commit": git_commit(), "n": len(test), "policies": {}}
    lines = ["# Shipped policies on the evaluation set (test split, prompts only)\n",
             f"`python benchmarks/bench_policy.py` (commit {out['commit']}); {len(test)} prompts. Share of prompts "
             "per decision; \"flag+\" = flag or block.\n",
             "| policy | prompts | allow | log | flag | block | flag+ |", "|---|---|---|---|---|---|---|"]
    for name in POLICIES:
        res = guard.scan_batch([r["text"] for r in test], policy=name, batch_size=8)
        per_kind: dict[str, Counter] = {k: Counter() for k in KINDS}
        rules: Counter = Counter()
        for r, g in zip(test, res):
            per_kind[r["kind"]][g.decision.action] += 1
            rules.update(m.rule for m in g.decision.matches)
        out["policies"][name] = {"per_kind": {k: dict(v) for k, v in per_kind.items()}, "rules": dict(rules)}
        for k in KINDS:
            c, n = per_kind[k], sum(per_kind[k].values())
            share = {a: c.get(a, 0) / n for a in ("allow", "log", "flag", "block")}
            lines.append(f"| {name} | {k} ({n}) | {share['allow']:.2f} | {share['log']:.2f} | {share['flag']:.2f} | "
                         f"{share['block']:.2f} | {share['flag'] + share['block']:.2f} |")
    (HERE / "results" / "policy.json").write_text(json.dumps(out, indent=1) + "\n")
    (HERE / "results" / "policy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
