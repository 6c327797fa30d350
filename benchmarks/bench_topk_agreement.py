"""How well the guard's runtime firing rules agree with exact TopK, and what each costs per token.

For each layer of a neuron database, on held-out activations that never reached SAE training
(``<work-dir>/acts/eval/<point>``, harvested by build-sae), compare exact fp32 TopK firing of the database's
features with:

- ``threshold``            per-feature thresholds shipped in the database;
- ``topk`` + competition   the k-th largest pre-activation computed from all encoder rows stored as fp32,
  bf16, fp16, int8 (per-row scale) or 12-bit (int8 + 4-bit residual, the shipped format), computed in fp16
  for the quantised ones; ``topk-shipped`` reads the database's own competition file.

Reports precision/recall/agreement (Jaccard) of "feature fires", the mean activation error over the union of
firings, and the encoder's cost per decoded token (batch 1) measured side by side in this run.

    python benchmarks/bench_topk_agreement.py [--work-dir runs/smollm2-135m-instruct] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit  # noqa: E402

from safesail_guard.runtime.encoder import Competition, LayerEncoder, measure_agreement  # noqa: E402
from safesail_guard.sae import TopKSAE  # noqa: E402
from safesail_neuron_db import NeuronDB  # noqa: E402
from safesail_neuron_db.competition import quantize_rows  # noqa: E402
from safesail_training.shards import open_shards  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _encoder(db: NeuronDB, layer: int) -> LayerEncoder:
    e = db.encoder(layer)
    ids = [f"{layer}_{int(i)}" for i in e["latents"].tolist()]
    max_act = torch.tensor([db.get(i).max_act for i in ids])
    return LayerEncoder(layer, ids, e["latents"].long(), e["W_enc"], e["b_enc"], e["b_dec"], e["threshold"],
                        max_act, e["W_dec"], firing="threshold")


def _per_token_ms(enc: LayerEncoder, x: torch.Tensor, repeats: int = 300) -> float:
    rows = x[:repeats]
    for i in range(20):
        enc.encode(rows[i:i + 1])
    t = time.perf_counter()
    for i in range(rows.shape[0]):
        enc.encode(rows[i:i + 1])
    return (time.perf_counter() - t) / rows.shape[0] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("runs/smollm2-135m-instruct"))
    ap.add_argument("--db", type=Path, default=None, help="database (default: the shipped one)")
    ap.add_argument("--max-tokens", type=int, default=32768)
    args = ap.parse_args()
    torch.set_num_threads(2)
    db = NeuronDB.open(args.db)
    rows, timing = [], []
    for layer in db.layers:
        point = f"layers.{layer}.{db.site}"
        sae = TopKSAE.load(args.work_dir / "saes" / point / f"k{db.manifest.sae[str(layer)]['k']}")
        x = open_shards(args.work_dir / "acts" / "eval" / point).load_all()[: args.max_tokens].float()
        W, b, k = sae.W_enc.detach().float(), sae.b_enc.detach().float(), sae.k
        base = _encoder(db, layer)
        variants = {"threshold": base}
        shipped = db.competition(layer)
        for name, comp_w in (("topk-fp32", W), ("topk-bf16", W.bfloat16()), ("topk-fp16", W.half()),
                             ("topk-int8", quantize_rows(W, residual=False).dequantize(torch.float16)),
                             ("topk-12bit", quantize_rows(W).dequantize(torch.float16)),
                             ("topk-shipped", shipped["W_enc"] if shipped else None)):
            if comp_w is None:
                continue
            variants[name] = base.with_firing("topk", Competition(comp_w, b, k))
        for name, enc in variants.items():
            agr = measure_agreement(x, enc, W, b, k).to_dict()
            agr["variant"] = name
            rows.append(agr)
            timing.append({"layer": layer, "variant": name, "ms_per_token": round(_per_token_ms(enc, x), 4)})
            print(json.dumps(agr), f"{timing[-1]['ms_per_token']:.3f} ms/token", flush=True)
    out = {"machine": cpu_model(), "commit": git_commit(), "threads": torch.get_num_threads(),
           "agreement": rows, "timing": timing}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "topk_agreement.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'topk_agreement.json'}")


if __name__ == "__main__":
    main()
