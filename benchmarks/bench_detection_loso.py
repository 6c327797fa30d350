"""Leave-one-source-out detection bar: dense logistic probes on the embedded model's activations (issue 14).

Data: the labelled safety set's prompt items (`safesail_training.corpus.safety`; label ``unsafe`` = 1,
``benign`` / ``edgy`` = 0, edgy kept apart for the edgy metric) plus one jailbreak-template-wrapped copy of a
deterministic subset of them (``--n-wrapped``, default 400: the items with the smallest sha256 of their id). A
wrapped copy belongs to the source group of its request (the loader's `source_group`), so it is always held out
with it; it is *reported* under its own source ``<source>+pyrit_templates``.

Features: each prompt is rendered with the chat template as one user message (multi-turn items as their turns)
and truncated to its first ``--max-tokens`` tokens (default 256, system header included); the content tokens
(role ``user``) are pooled (last, mean, max, rolling = EMA with an 8-token half-life then max) at the residual
stream after decoder layers 6, 14 and 24 (``resid_post``) and at ``mlp_out`` of layer 14, plus the three
residual layers concatenated. Pooled vectors are cached under ``runs/detection_loso/`` (git-ignored), keyed by
the item's text, so a rerun reuses them.

Evaluation (`safesail_training.detection_eval`): per held-out source group, a standardised L2 logistic
regression fitted on the other groups, ``C`` chosen by a 3-fold group split of those training groups only;
held-out scores pooled over folds give AUROC, TPR at 5% FPR (threshold on all pooled negatives), and the flag
rate of edgy items at the threshold that flags 5% of plain benign items. Extra held-out column: the probe fitted
on the whole safety set (``C`` by the same group split) scores the *test* split of
``benchmarks/data/guard_eval.jsonl`` (never used for fitting or choosing ``C``). The keyword list of
``keyword_baseline.py`` is scored on the same items.

    python benchmarks/bench_detection_loso.py        # writes benchmarks/results/detection_loso.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model, git_commit  # noqa: E402
from keyword_baseline import keyword_score  # noqa: E402

from safesail_guard.chat_template import encode_chat  # noqa: E402
from safesail_guard.hooks import HookPoint, collect_padded  # noqa: E402
from safesail_training.corpus.safety import (  # noqa: E402
    SafetyItem,
    binary_label,
    load_safety_items,
    load_templates,
    source_group,
    wrap_in_templates,
)
from safesail_training.detection_eval import (  # noqa: E402
    auroc,
    C_GRID,
    DEFAULT_HALF_LIFE,
    POOLS,
    fit_probe,
    inner_select_c,
    leave_pair_out,
    loso_predict,
    pool_rolling,
    summarise,
)

EVAL = HERE / "data" / "guard_eval.jsonl"
RESULTS = HERE / "results"
CACHE = ROOT / "runs" / "detection_loso"
POINTS = (HookPoint(6, "resid_post"), HookPoint(14, "resid_post"), HookPoint(24, "resid_post"),
          HookPoint(14, "mlp_out"))
CONCAT = "resid 6+14+24"
POOL_NAMES = tuple(POOLS)  # last, mean, max, rolling


# ------------------------------------------------------------------------------------------------- items



def _no_nan(value: Any) -> Any:
    """``value`` with every float NaN (a metric that does not exist, e.g. AUROC on a one-class source) as None,
    so the results file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return _no_nan(value.item())
    return value

def pick_wrapped(items: list[SafetyItem], n: int, seed: int = 0) -> list[SafetyItem]:
    """One wrapped copy for each of the ``n`` wrappable items with the smallest sha256 of their id."""
    wrapped = wrap_in_templates(items, load_templates(), n_per_item=1, seed=seed)
    wrapped.sort(key=lambda w: hashlib.sha256(w.id.split("~", 1)[0].encode()).hexdigest())
    return wrapped[:n] if n >= 0 else wrapped


def item_key(messages: list[dict[str, str]]) -> str:
    """Cache key of one rendered prompt."""
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------ features


class FeatureCache:
    """Pooled vectors ``[len(POINTS), len(POOL_NAMES), d]`` per prompt key, in one ``.npz`` per configuration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as z:
                for k, v in zip(z["keys"].tolist(), z["feats"]):
                    self.rows[str(k)] = v

    def save(self) -> None:
        """Write atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rows)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), feats=np.stack([self.rows[k] for k in keys]))
        tmp.replace(self.path)


def harvest(lm, convs: list[list[dict[str, str]]], cache: FeatureCache, *, max_tokens: int, batch_size: int,
            half_life: float) -> np.ndarray:
    """Pooled features for every conversation: ``[n, len(POINTS), len(POOL_NAMES), d]`` (float32)."""
    keys = [item_key(c) for c in convs]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache.rows:
            first.setdefault(k, i)
    todo = list(first.values())  # one pass per distinct uncached prompt
    encs = {i: encode_chat(lm.tokenizer, convs[i], max_length=max_tokens) for i in todo}
    masks = {}
    for i, enc in encs.items():
        m = enc.content_mask(["user"])
        if not any(m):  # nothing of the user's left (cannot happen with 256 tokens; guard anyway)
            m = [not s for s in enc.special]
        masks[i] = m
    order = sorted(todo, key=lambda i: len(encs[i]))
    pad = lm.tokenizer.pad_token_id or 0
    since_save = 0
    for start in tqdm(range(0, len(order), batch_size), desc="activations", unit="batch"):
        idx = order[start:start + batch_size]
        acts = collect_padded(lm.model, list(POINTS), [(encs[i], masks[i]) for i in idx], pad_id=pad)
        counts = [sum(masks[i]) for i in idx]
        per_point = [torch.split(acts[p], counts) for p in POINTS]
        for b, i in enumerate(idx):
            feats = np.stack([
                np.stack([pool_rolling(rows[b].numpy(), half_life) if name == "rolling" else
                          POOLS[name](rows[b].numpy()) for name in POOL_NAMES])
                for rows in per_point
            ]).astype(np.float32)
            cache.rows[keys[i]] = feats
        since_save += len(idx)
        if since_save >= 400:
            cache.save()
            since_save = 0
    if todo:
        cache.save()
    return np.stack([cache.rows[k] for k in keys])


def feature_sets(F: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """``{(point name, pool): X [n, d]}`` plus the concatenated residual layers per pool."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for p, point in enumerate(POINTS):
        for q, name in enumerate(POOL_NAMES):
            out[(point.name, name)] = F[:, p, q, :]
    resid = [p for p, point in enumerate(POINTS) if point.site == "resid_post"]
    for q, name in enumerate(POOL_NAMES):
        out[(CONCAT, name)] = np.concatenate([F[:, p, q, :] for p in resid], axis=1)
    return out


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-wrapped", type=int, default=400, help="wrapped copies (deterministic subset; -1: all)")
    ap.add_argument("--max-tokens", type=int, default=256, help="truncate each rendered prompt to this many tokens")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="keep every k-th item only (smoke runs; 0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe-pools", default="last,mean,rolling",
                    help="comma-separated pools to fit probes on (all are harvested and cached)")
    ap.add_argument("--no-concat", action="store_true", help="skip the concatenated residual layers")
    ap.add_argument("--pair-top", type=int, default=3,
                    help="leave-pair-out AUROCs for this many probes (best pooled LOSO AUROC first)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    plain = load_safety_items("prompt")
    wrapped = pick_wrapped(plain, args.n_wrapped)
    items = plain + wrapped
    if args.limit:
        items = items[:: args.limit]
    eval_rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    eval_test = [r for r in eval_rows if r["split"] == "test"]
    if args.limit:
        eval_test = eval_test[:: args.limit]
    y = np.array([binary_label(i) for i in items])
    groups = np.array([source_group(i) for i in items])
    report_src = np.array([i.source for i in items])
    # wrapped copies get their own kind, so "plain benign" (threshold), edgy and unsafe mean un-wrapped prompts
    kinds = np.array([i.label + ("+jailbreak" if "+" in i.source else "") for i in items])
    y_eval = np.array([int(r["label"]) for r in eval_test])
    kinds_eval = np.array([r["kind"] for r in eval_test])
    print(f"{len(items)} safety prompts ({len(wrapped)} wrapped), {len(eval_test)} eval test prompts", flush=True)

    from safesail_guard.models import load_model

    lm = load_model("embedded")
    lm.model.eval()
    config = {"model": getattr(lm.identity, "fingerprint", str(lm.identity)), "max_tokens": args.max_tokens,
              "points": [p.name for p in POINTS], "pools": list(POOL_NAMES), "half_life": DEFAULT_HALF_LIFE,
              "system": "chat template default"}
    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    cache = FeatureCache(CACHE / f"pooled_{tag}.npz")
    n_cached = len(cache.rows)
    t_h = time.perf_counter()
    convs = [i.messages() for i in items] + [[{"role": "user", "content": r["text"]}] for r in eval_test]
    F_all = harvest(lm, convs, cache, max_tokens=args.max_tokens, batch_size=args.batch_size,
                    half_life=DEFAULT_HALF_LIFE)
    harvest_s = time.perf_counter() - t_h
    F, F_eval = F_all[: len(items)], F_all[len(items):]
    print(f"features: {F_all.shape} in {harvest_s:.0f} s ({n_cached} cached before)", flush=True)

    sets, sets_eval = feature_sets(F), feature_sets(F_eval)
    results: dict[str, dict] = {}
    scores_by: dict[str, np.ndarray] = {}
    t_f = time.perf_counter()
    wanted = set(args.probe_pools.split(","))
    sets = {k: v for k, v in sets.items() if k[1] in wanted and not (args.no_concat and k[0] == CONCAT)}
    for (point, pool_name), X in tqdm(sets.items(), desc="LOSO probes", unit="probe"):
        name = f"{point} / {pool_name}"
        res = loso_predict(X, y, groups)
        loso = summarise(res.scores, y, report_src, kinds)
        loso["per_source_group"] = summarise(res.scores, y, groups, kinds)["per_group"]
        C, inner = inner_select_c(X, y, groups)
        model = fit_probe(X, y, C)
        s_eval = np.asarray(model.decision_function(sets_eval[(point, pool_name)]), dtype=np.float64)
        ev = summarise(s_eval, y_eval, kinds_eval, kinds_eval)
        ev.pop("per_group")
        results[name] = {"kind": "dense probe", "point": point, "pool": pool_name, "loso": loso,
                         "fold_C": res.fold_c, "eval_test": ev, "eval_C": C}
        scores_by[name] = res.scores
        (CACHE / "partial_results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    fit_s = time.perf_counter() - t_f
    np.savez(CACHE / "loso_scores.npz", names=np.array(list(scores_by)), scores=np.stack(list(scores_by.values())),
             ids=np.array([i.id for i in items]), y=y)

    kw = np.array([keyword_score(i.text) for i in items])
    kw_eval = np.array([keyword_score(r["text"]) for r in eval_test])
    loso = summarise(kw, y, report_src, kinds)
    loso["per_source_group"] = summarise(kw, y, groups, kinds)["per_group"]
    ev = summarise(kw_eval, y_eval, kinds_eval, kinds_eval)
    ev.pop("per_group")
    results["keywords"] = {"kind": "keyword list (no fitting)", "loso": loso, "eval_test": ev}

    dense = [k for k in results if results[k]["kind"] == "dense probe"]
    best = max(dense, key=lambda k: results[k]["loso"]["auroc"])
    t_p = time.perf_counter()
    ranked = sorted(dense, key=lambda k: -results[k]["loso"]["auroc"])[: args.pair_top]
    for name in tqdm(ranked, desc="leave-pair-out", unit="probe"):
        r = results[name]
        pairs = leave_pair_out(sets[(r["point"], r["pool"])], y, groups)
        r["pairs"] = {f"{p} vs {n}": v for (p, n), v in pairs.items()}
    kw_pairs = {}
    for p_src in sorted(set(groups[y == 1].tolist())):
        for n_src in sorted(set(groups[y == 0].tolist())):
            if p_src != n_src:
                m = ((groups == p_src) & (y == 1)) | ((groups == n_src) & (y == 0))
                kw_pairs[f"{p_src} vs {n_src}"] = auroc(kw[m], y[m])
    results["keywords"]["pairs"] = kw_pairs
    pair_s = time.perf_counter() - t_p
    counts = {s: {"n": int((report_src == s).sum()), "unsafe": int(((report_src == s) & (y == 1)).sum())}
              for s in sorted(set(report_src.tolist()))}
    out = {
        "command": "python benchmarks/bench_detection_loso.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": cpu_model(), "threads": args.threads, "commit": git_commit(), "config": config,
        "n_items": len(items), "n_wrapped": len(wrapped), "n_eval_test": len(eval_test), "sources": counts,
        "wall_s": round(time.perf_counter() - t0, 1), "harvest_s": round(harvest_s, 1), "fit_s": round(fit_s, 1),
        "pair_s": round(pair_s, 1),
        "c_grid": list(C_GRID), "probe_pools": sorted(wanted),
        "cached_before": n_cached, "best": best, "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_loso.json").write_text(json.dumps(_no_nan(out), indent=1, default=float,
                                                            allow_nan=False) + "\n")
    write_markdown(out, RESULTS / "detection_loso.md")
    print((RESULTS / "detection_loso.md").read_text())


def _f(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def write_markdown(out: dict, path: Path) -> None:
    """The results page: the probe table, the per-source table of the best probe and the keywords, the setup."""
    res = out["results"]
    best = out["best"]
    lines = [
        "# Detection bar: dense probes, leave-one-source-out (issue 14)\n",
        f"`{out['command']}` at commit {out['commit']} on {out['machine']} ({out['threads']} threads); "
        f"wall time {out['wall_s']} s (activations {out['harvest_s']} s, {out['cached_before']} prompts cached "
        f"before; probe fitting {out['fit_s']} s; leave-pair-out {out['pair_s']} s).\n",
        f"{out['n_items']} safety-set prompts ({out['n_wrapped']} of them jailbreak-template-wrapped copies) and "
        f"{out['n_eval_test']} `guard_eval.jsonl` test prompts. Each prompt is one user message in SmolLM2's chat "
        f"template (default system header), **truncated to its first {out['config']['max_tokens']} tokens**; "
        "features pool the user's content tokens. `rolling` = bias-corrected EMA over tokens (half-life "
        f"{out['config']['half_life']:g} tokens), then max. Probe: standardised L2 logistic regression; for each "
        "held-out source group, class-balanced, C in {" + ", ".join(f"{c:g}" for c in out["c_grid"]) + "} chosen by "
        "a 3-fold group split of the *training* groups only (pooled inner AUROC). Probes are fitted on pools "
        + ", ".join(out["probe_pools"]) + " (max is harvested and cached too). Held-out scores are pooled over "
        "the folds. TPR@5%FPR: threshold on all pooled negatives "
        "(benign + edgy, wrapped copies included). edgy@5%benign: share of un-wrapped edgy prompts flagged at the "
        "threshold that flags 5% of plain (un-wrapped) benign prompts; TPR@5%benign: un-wrapped unsafe prompts at "
        "that threshold. eval: fitted on the whole safety set (C by the same group split), scored on the eval test "
        "split (never used to fit or choose).\n",
        "| scorer | LOSO AUROC | TPR@5%FPR | TPR@5%benign | edgy@5%benign | eval AUROC | eval TPR@5%FPR | "
        "eval edgy@5%benign |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res.items():
        lo, ev = r["loso"], r["eval_test"]
        mark = "**" if name == best else ""
        lines.append(f"| {mark}{name}{mark} | {_f(lo['auroc'])} | {_f(lo['tpr@5%fpr'])} | {_f(lo['tpr@5%benign'])} | "
                     f"{_f(lo['edgy_flag@5%benign'])} | {_f(ev['auroc'])} | {_f(ev['tpr@5%fpr'])} | "
                     f"{_f(ev['edgy_flag@5%benign'])} |")
    lines += ["", f"Best dense probe by pooled LOSO AUROC: **{best}**.\n",
              "## Per source (held out), best probe vs keywords\n",
              "TPR / FPR at the pooled all-negatives 5% threshold; AUROC only where the source holds both classes.\n",
              "| source | n | unsafe | probe AUROC | probe TPR | probe FPR | kw AUROC | kw TPR | kw FPR |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pb, kw = res[best]["loso"]["per_group"], res["keywords"]["loso"]["per_group"]
    for s in pb:
        a, b = pb[s], kw[s]
        lines.append(f"| {s} | {a['n']} | {a['n_pos']} | {_f(a['auroc'])} | {_f(a['tpr'])} | {_f(a['fpr'])} | "
                     f"{_f(b['auroc'])} | {_f(b['tpr'])} | {_f(b['fpr'])} |")
    paired = [k for k in res if "pairs" in res[k]]
    if paired:
        lines += ["", "## Leave-pair-out: one model per (unsafe source, safe source) pair\n",
                  "Pooling LOSO scores compares different fold models, so an offset between folds lowers the pooled "
                  "AUROC even when each model ranks well. Here both sources of a pair are held out, the probe is "
                  "fitted on the rest (C by the same inner group split), and the AUROC compares the pair's unsafe "
                  "rows against its safe rows under that one model. Keywords need no fitting.\n",
                  "| scorer | mean pair AUROC | min | min pair |", "|---|---:|---:|---|"]
        for k in paired:
            vals = {p: v for p, v in res[k]["pairs"].items() if not np.isnan(v)}
            worst = min(vals, key=vals.get)
            lines.append(f"| {k} | {_f(float(np.mean(list(vals.values()))))} | {_f(vals[worst])} | {worst} |")
        top = next(k for k in paired if k != "keywords")
        pos = sorted({p.split(" vs ")[0] for p in res[top]["pairs"]})
        neg = sorted({p.split(" vs ")[1] for p in res[top]["pairs"]})
        lines += ["", f"AUROC per pair, {top} (keywords in brackets); rows: unsafe source, columns: safe source.\n",
                  "| unsafe \\ safe | " + " | ".join(neg) + " |", "|---|" + "---:|" * len(neg)]
        for p in pos:
            cells = []
            for n in neg:
                key = f"{p} vs {n}"
                cells.append(f"{_f(res[top]['pairs'][key])} ({_f(res['keywords']['pairs'][key])})"
                             if key in res[top]["pairs"] else "")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", "## Held-out C per fold (best probe)\n",
              ", ".join(f"{k}: {v:g}" for k, v in res[best]["fold_C"].items()) + "\n"]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
