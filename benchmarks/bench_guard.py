"""Guard overhead: guarded vs unguarded decoding (same loop, same run), per-token guard cost, scoring throughput.

- **Decoding.** `GuardedModel.stream` with the guard's hooks and a policy (exact TopK decided every token,
  exact TopK micro-batched in batches growing up to 8 and up to 16 tokens (``lag=8``, ``lag=16``: the
  default), and the threshold rule) vs the identical loop with ``hooks=False``; greedy, fixed length
  (``ignore_eos``), KV cache,
  batch 1. The sides run in rotating order prompt by prompt so drift in machine load hits all of them; the
  ratio is guarded / unguarded tokens per second.
  HF ``model.generate`` on the same prompts is reported for reference.
- **Per-token cost.** The encoder alone (all guarded layers, one token) for each firing rule, timed in a loop.
- **Scoring.** `Guard.scan_batch` prompts per second on the evaluation prompts at several batch sizes.

    python benchmarks/bench_guard.py [--tokens 48] [--rounds 3]    # docs/results/guard.md uses --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model, git_commit  # noqa: E402

from safesail_guard.runtime.generation import GuardedModel  # noqa: E402
from safesail_guard.runtime.guard import Guard  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how photosynthesis works to a twelve-year-old.",
    "Give me three tips for learning to play the guitar as an adult.",
    "Describe the water cycle in a few paragraphs.",
]


def _time_stream(gm: GuardedModel, prompt: str, n: int, hooks: bool = True, lag: int = 0) -> tuple[float, int]:
    t = time.perf_counter()
    gen = gm.generate(prompt, max_new_tokens=n, ignore_eos=True, hooks=hooks, lag=lag)
    return time.perf_counter() - t, gen.completion_tokens


def _time_hf(guard: Guard, prompt: str, n: int) -> tuple[float, int]:
    ids = torch.tensor([guard.encode_prompt(prompt)[0].input_ids])
    t = time.perf_counter()
    with torch.no_grad():
        out = guard.model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return time.perf_counter() - t, int(out.shape[1] - ids.shape[1])


def decoding(guard: Guard, n_tokens: int, rounds: int, policy: str) -> dict:
    gm = GuardedModel(guard, policy)
    # a database with a detection head needs exact TopK: the threshold rule cannot score it, so it is not run
    with_threshold = getattr(guard, "detection_head", None) is None
    gm_thr = None
    if with_threshold:
        thr = Guard(guard.model, guard.tokenizer, guard.db, model_fingerprint=guard.db.fingerprint, firing="threshold")
        gm_thr = GuardedModel(thr, policy)
    gm.generate(PROMPTS[0], max_new_tokens=4)  # warm-up
    tot = {"guarded": [0.0, 0], "guarded_lag8": [0.0, 0], "guarded_lag16": [0.0, 0], "guarded_threshold": [0.0, 0],
           "unguarded": [0.0, 0], "hf_generate": [0.0, 0]}
    sides = ["guarded", "unguarded", "guarded_lag8", "guarded_threshold", "guarded_lag16"]
    if not with_threshold:
        sides.remove("guarded_threshold")
        tot["guarded_threshold"] = [float("nan"), 0]
    lags = {"guarded_lag8": 8, "guarded_lag16": 16}
    for r in range(rounds):
        for i, p in enumerate(PROMPTS):
            shift = (r * len(PROMPTS) + i) % len(sides)
            for side in sides[shift:] + sides[:shift]:  # rotate the order so load drift hits every side
                model = gm_thr if side == "guarded_threshold" else gm
                dt, n = _time_stream(model, p, n_tokens, hooks=side != "unguarded",
                                     lag=lags.get(side, 0))
                tot[side][0] += dt
                tot[side][1] += n
            dt, n = _time_hf(guard, p, n_tokens)
            tot["hf_generate"][0] += dt
            tot["hf_generate"][1] += n
    tps = {k: (v[1] / v[0] if v[1] else float("nan")) for k, v in tot.items()}
    return {"tokens_per_s": {k: round(v, 2) for k, v in tps.items()},
            "guarded_over_unguarded": round(tps["guarded"] / tps["unguarded"], 4),
            "threshold_guarded_over_unguarded": round(tps["guarded_threshold"] / tps["unguarded"], 4),
            "lag8_guarded_over_unguarded": round(tps["guarded_lag8"] / tps["unguarded"], 4),
            "lag16_guarded_over_unguarded": round(tps["guarded_lag16"] / tps["unguarded"], 4),
            "per_token_ms": {k: round(v[0] / v[1] * 1e3, 3) for k, v in tot.items() if v[1]},
            "guard_ms_per_token": round((tot["guarded"][0] / tot["guarded"][1] - tot["unguarded"][0] / tot["unguarded"][1]) * 1e3, 3),
            "tokens": {k: v[1] for k, v in tot.items()}, "rounds": rounds, "prompts": len(PROMPTS),
            "new_tokens": n_tokens, "policy": policy}


def encoder_cost(guard: Guard, repeats: int = 500) -> dict:
    x = {ly: torch.randn(1, int(guard.model.config.hidden_size)) * 0.5 for ly in guard.layers}
    out = {}
    for firing in ("topk", "threshold"):
        if firing == "topk" and not guard.competition:
            continue
        encs = {ly: e.with_firing(firing) for ly, e in guard.encoders.items()}  # type: ignore[arg-type]
        for _ in range(20):
            for ly, e in encs.items():
                e.encode(x[ly])
        t = time.perf_counter()
        for _ in range(repeats):
            for ly, e in encs.items():
                e.encode(x[ly])
        out[firing] = round((time.perf_counter() - t) / repeats * 1e3, 4)
    return {"ms_per_token_all_layers": out}


def scoring(guard: Guard, policy: str, n: int) -> dict:
    rows = [json.loads(line) for line in (HERE / "data" / "guard_eval.jsonl").read_text().splitlines()][:n]
    prompts = [r["text"] for r in rows]
    compiled = guard.compile(policy)
    out = {}
    for bs in (1, 8, 16):
        t = time.perf_counter()
        guard.scan_batch(prompts, policy=compiled, batch_size=bs)
        out[str(bs)] = round(len(prompts) / (time.perf_counter() - t), 2)
    return {"prompts_per_s_by_batch_size": out, "prompts": len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--score-prompts", type=int, default=160)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--db", type=Path, default=None, help="database (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    guard = Guard.from_db(args.db)
    load0 = os.getloadavg()[0]
    res = {"machine": cpu_model(), "commit": git_commit(), "firing": guard.firing, "torch_threads": 2,
           "decoding": decoding(guard, args.tokens, args.rounds, args.policy),
           "encoder": encoder_cost(guard), "scoring": scoring(guard, args.policy, args.score_prompts),
           "load_avg_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    out = HERE / "results" / "guard_overhead.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    d = res["decoding"]
    print(json.dumps(res, indent=1))
    print(f"guarded/unguarded decoding: {d['guarded_over_unguarded']:.3f} ({d['tokens_per_s']}); wrote {out}")


if __name__ == "__main__":
    main()
