"""Detection head vs dense probe, leave-one-source-out (issue 14): the numbers the head is judged by.

Data: the labelled safety set's prompts plus one jailbreak-wrapped copy of every single-turn prompt (benign,
edgy and unsafe alike), exactly the detection head's training texts (`safesail_training.build_db_head`). A
wrapped copy belongs to its request's source group (held out with it); it is *reported* under
``<source>+pyrit_templates``. Labels: ``unsafe`` = 1, ``benign`` / ``edgy`` = 0.

Features: per content token (every message, first ``--max-tokens`` tokens of the rendered chat), the hook
activation at ``mlp_out`` of layers 6, 14, 24 and the build's TopK SAEs' codes (``<work-dir>/saes``); the
head fits on mean-pooled ``[z ; e]`` (`safesail_training.detection_head`), the dense probe on mean-pooled
``x`` at the same layers (standardised L2 logistic, `safesail_training.detection_eval.fit_probe`), so the two
differ only in the head's split and penalties.

Protocol: for each held-out source group, hyper-parameters are chosen by a 3-fold group split of the *other*
groups only, the model is fitted on all of them (the head is then Platt-scaled on that split's out-of-fold
scores, as the shipped head is) and scores the held-out rows; held-out scores are pooled over folds. The head is scored per token and aggregated (mean, last, max, rolling_max over 8/16/32/64 tokens).
Extra columns: the test split of ``benchmarks/data/guard_eval.jsonl`` scored by models fitted on the whole set;
the response side (the prompt-fitted head streamed over the replies of the safety set's response rows:
harmful vs refused/harmless, never trained on); and a 20,000-character benign text (does the risk drift with
length?). Keywords (``keyword_baseline.py``) need no fitting.

    python benchmarks/bench_detection_head.py     # writes benchmarks/results/detection_head.{json,md,png}
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

from safesail_guard.hooks import HookPoint  # noqa: E402
from safesail_training.build_db_head import head_items  # noqa: E402
from safesail_training.corpus.safety import binary_label, load_safety_items, source_group  # noqa: E402
from safesail_training.detection_eval import (  # noqa: E402
    auroc,
    fit_probe,
    inner_select_c,
    summarise,
    threshold_at_fpr,
)
from safesail_training.detection_head import (  # noqa: E402
    LAM1_GRID,
    LAM2_GRID,
    TokenBank,
    aggregate_token_logits,
    fit_head,
    harvest_token_bank,
    platt,
    pooled_features,
    select_lambdas,
    stack_features,
    token_logits,
)

EVAL = HERE / "data" / "guard_eval.jsonl"
RESULTS = HERE / "results"
CACHE = Path(__import__("os").environ.get("SAFESAIL_BENCH_CACHE", ROOT / "runs" / "detection_head"))
POINTS = ("layers.6.mlp_out", "layers.14.mlp_out", "layers.24.mlp_out")
AGGS: list[tuple[str, int]] = [("mean", 1), ("last", 1), ("max", 1), ("rolling_max", 8), ("rolling_max", 16),
                               ("rolling_max", 32), ("rolling_max", 64)]


def agg_name(kind: str, window: int) -> str:
    """Column name of an aggregation."""
    return f"rolling_max{window}" if kind == "rolling_max" else kind


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v


def load_saes(work: Path) -> dict[int, Any]:
    """The build's SAEs per layer (``<work>/saes/<point>/k128``)."""
    from safesail_guard.sae import TopKSAE

    out = {}
    for p in POINTS:
        d = work / "saes" / p / "k128"
        if not (d / "sae.safetensors").is_file():
            sys.exit(f"no SAE at {d}: run `make db` (or `safesail build-db`) first")
        sae = TopKSAE.load(d)
        sae.eval()
        for prm in sae.parameters():
            prm.requires_grad_(False)
        out[HookPoint.parse(p).layer] = sae
    return out


def cached_bank(name: str, lm: Any, saes: dict[int, Any], convs: list[list[dict[str, str]]], *, max_tokens: int,
                roles: list[str] | None = None) -> TokenBank:
    """Harvest ``convs`` once; reuse ``runs/detection_head/<name>_<key>.npz`` afterwards."""
    h = hashlib.sha256(json.dumps([convs, max_tokens, roles], ensure_ascii=False).encode())
    for L in sorted(saes):
        h.update(saes[L].W_enc.detach().numpy()[:8].tobytes())
    path = CACHE / f"{name}_{h.hexdigest()[:16]}.npz"
    if path.is_file():
        return TokenBank.load(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(convs), desc=f"activations: {name}", unit="text") as bar:
        bank = harvest_token_bank(lm, saes, [HookPoint.parse(p) for p in POINTS], convs, max_tokens=max_tokens,
                                  roles=roles, progress=bar.update)
    bank.save(path)
    return bank


def build_bank(work: Path, items: list[Any], max_tokens: int) -> TokenBank | None:
    """The build's own token bank (``<work>/db/head/bank.npz``) when it was made from exactly these texts, SAEs
    and token limit, else None."""
    from safesail_training.build_db_head import bank_key, load_bank

    dirs = {p: work / "saes" / p / "k128" for p in POINTS}
    return load_bank(work / "db" / "head", bank_key(items, dirs, max_tokens))


def dense_pooled(bank: TokenBank) -> np.ndarray:
    """Mean-pooled hook activations, layers concatenated: ``[n, 3 d]``."""
    counts = np.diff(bank.offsets)
    row = np.repeat(np.arange(bank.n), counts)
    mats = []
    for L in bank.layers:
        acc = np.zeros((bank.n, bank.x[L].shape[1]))
        np.add.at(acc, row, bank.x[L].astype(np.float64))
        mats.append(acc / counts[:, None])
    return np.concatenate(mats, 1).astype(np.float32)


def aggregated(model: Any, bank: TokenBank, saes: dict[int, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Aggregated token logits of ``rows`` under every aggregation."""
    per_tok = token_logits(model, bank, saes)
    return {agg_name(k, w): np.array([aggregate_token_logits(per_tok[i], k, w) for i in rows]) for k, w in AGGS}


def old_head_scores(db_path: Path, convs: list[list[dict[str, str]]]) -> np.ndarray:
    """Scores of a database's old sparse risk head (fitted on concept pairs, so every text is held out)."""
    from safesail_guard.runtime.guard import Guard
    from safesail_training.risk_head import pooled_matrix

    guard = Guard.from_db(db_path)
    if guard.risk_head is None or not hasattr(guard.risk_head, "weights"):
        sys.exit(f"{db_path} has no old-style risk head")
    with tqdm(total=len(convs), desc="old risk head", unit="text") as bar:
        done = [0]

        def tick(n: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        Xg, ids = pooled_matrix(guard, convs, progress=tick)
    return np.array([guard.risk_head.score_pooled(dict(zip(ids, row.tolist()))).score for row in Xg])


def long_benign_text(n_chars: int = 20_000) -> str:
    """Ordinary prose from the general corpus (kind ``doc``), ``n_chars`` characters."""
    from safesail_training.corpus.general import benign_prose

    return benign_prose(n_chars)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "smollm2-135m-instruct")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="keep every k-th item only (smoke runs)")
    ap.add_argument("--lam1-grid", type=float, nargs="+", default=list(LAM1_GRID),
                    help="L1 strengths tried in each fold's inner split (default: the shipped build's grid)")
    ap.add_argument("--lam2-grid", type=float, nargs="+", default=list(LAM2_GRID),
                    help="ridge strengths tried in each fold's inner split (default: the shipped build's grid)")
    ap.add_argument("--old-db", type=Path, default=None,
                    help="also score every text with this database's old risk head (today's head; no fitting)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    items = head_items(0)
    if args.limit:
        items = items[:: args.limit]
    eval_rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    eval_test = [r for r in eval_rows if r["split"] == "test"]
    responses = load_safety_items("response")
    if args.limit:
        eval_test, responses = eval_test[:: args.limit], responses[:: args.limit]
    y = np.array([binary_label(i) for i in items])
    groups = np.array([source_group(i) for i in items])
    report_src = np.array([i.source for i in items])
    kinds = np.array([i.label + ("+jailbreak" if "+" in i.source else "") for i in items])
    styles = np.array([i.style for i in items])
    langs = np.array([i.lang for i in items])
    print(f"{len(items)} texts ({int(y.sum())} unsafe) in {len(set(groups.tolist()))} source groups; "
          f"{len(eval_test)} eval test prompts; {len(responses)} response rows", flush=True)

    from safesail_guard.models import load_model

    saes = load_saes(args.work_dir)
    lm = load_model("embedded")
    lm.model.eval()
    t_h = time.perf_counter()
    bank = build_bank(args.work_dir, items, args.max_tokens)
    if bank is None:
        bank = cached_bank("prompts", lm, saes, [i.messages() for i in items], max_tokens=args.max_tokens)
    bank_eval = cached_bank("eval_test", lm, saes, [[{"role": "user", "content": r["text"]}] for r in eval_test],
                            max_tokens=args.max_tokens)
    # the reply is what is scored: keep the request short enough (800 characters) that the reply is never cut away
    resp_convs = [[{"role": "user", "content": r.text[:800]}, {"role": "assistant", "content": r.response}]
                  for r in responses]
    bank_resp = cached_bank("responses", lm, saes, resp_convs, max_tokens=3 * args.max_tokens, roles=["assistant"])
    long_text = long_benign_text()
    bank_long = cached_bank("long_benign", lm, saes, [[{"role": "user", "content": "Summarise this."},
                                                       {"role": "assistant", "content": long_text}]],
                            max_tokens=8192, roles=["assistant"])
    harvest_s = time.perf_counter() - t_h
    print(f"activations ready in {harvest_s:.0f} s ({int(bank.offsets[-1])} prompt tokens)", flush=True)

    X, layout = stack_features(pooled_features(bank, saes))
    Xd = dense_pooled(bank)
    idx_all = np.arange(len(y))

    # ---------------------------------------------------------------- leave one source out
    t_f = time.perf_counter()
    head_scores = {agg_name(k, w): np.full(len(y), np.nan) for k, w in AGGS}
    head_pooled = np.full(len(y), np.nan)
    raw_pooled = np.full(len(y), np.nan)
    shares = np.full(len(y), np.nan)
    dense_scores = np.full(len(y), np.nan)
    folds: dict[str, Any] = {}
    for held in tqdm(sorted(set(groups.tolist())), desc="LOSO folds", unit="fold"):
        te, tr = groups == held, groups != held
        if len(set(y[tr].tolist())) < 2:
            continue
        sel = select_lambdas(X[tr], y[tr], groups[tr], layout, lam1_grid=args.lam1_grid, lam2_grid=args.lam2_grid)
        model = fit_head(X[tr], y[tr], layout, sel.lam1, sel.lam2)
        rows = idx_all[te]
        raw_pooled[rows] = model.decision_function(X[te])
        # the shipped procedure calibrates (Platt) on out-of-fold scores of the training groups only
        ok = ~np.isnan(sel.oof_scores)
        a, b = platt(sel.oof_scores[ok], y[tr][ok])
        if a > 0:
            model.w, model.bias = model.w * a, a * model.bias + b
        for name, v in aggregated(model, bank, saes, rows).items():
            head_scores[name][rows] = v
        head_pooled[rows] = model.decision_function(X[te])
        shares[rows] = model.named_share(X[te])
        C, _ = inner_select_c(Xd[tr], y[tr], groups[tr])
        dense_scores[rows] = fit_probe(Xd[tr], y[tr], C).decision_function(Xd[te])
        folds[held] = {"lam1": sel.lam1, "lam2": sel.lam2, "dense_C": C, "platt": [a, b],
                       "latents": int(sum(len(v) for v in model.nonzero_latents().values()))}
    fit_s = time.perf_counter() - t_f
    kw = np.array([keyword_score(i.text) for i in items])
    old = old_head_scores(args.old_db, [i.messages() for i in items]) if args.old_db else None

    results: dict[str, Any] = {}
    for name, s in head_scores.items():
        results[f"head / {name}"] = summarise(s, y, report_src, kinds)
    results["head / mean, uncalibrated"] = summarise(raw_pooled, y, report_src, kinds)
    results["dense probe / mean"] = summarise(dense_scores, y, report_src, kinds)
    results["keywords"] = summarise(kw, y, report_src, kinds)
    extra = []
    if old is not None:
        results["old risk head (pairs)"] = summarise(old, y, report_src, kinds)
        extra = [("old risk head (pairs)", old)]
    for r in results.values():
        r["per_source_group"] = None
    for name, s in [*((f"head / {k}", v) for k, v in head_scores.items()), ("dense probe / mean", dense_scores),
                    ("keywords", kw), *extra]:
        results[name]["per_source_group"] = summarise(s, y, groups, kinds)["per_group"]
        results[name]["per_style"] = {st: auroc(s[styles == st], y[styles == st]) for st in sorted(set(styles))}
        results[name]["per_lang"] = {lg: {"n": int((langs == lg).sum()), "auroc": auroc(s[langs == lg], y[langs == lg])}
                                     for lg in sorted(set(langs))}

    # named share on flagged prompts (held-out rows above the pooled 5% threshold of the pooled-mean score)
    t_flag = threshold_at_fpr(head_pooled[y == 0], 0.05)
    flagged = head_pooled > t_flag
    sh = shares[flagged]
    share_stats = {"flagged": int(flagged.sum()), "mean": float(sh.mean()) if sh.size else None,
                   "quantiles": {q: float(np.quantile(sh, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)} if sh.size else {},
                   "histogram": np.histogram(sh, bins=10, range=(0, 1))[0].tolist() if sh.size else []}

    # ---------------------------------------------------------------- whole set -> eval test, responses, long text
    sel_all = select_lambdas(X, y, groups, layout, lam1_grid=args.lam1_grid, lam2_grid=args.lam2_grid)
    final = fit_head(X, y, layout, sel_all.lam1, sel_all.lam2)
    ok = ~np.isnan(sel_all.oof_scores)
    a, b = platt(sel_all.oof_scores[ok], y[ok])
    if a > 0:
        final.w, final.bias = final.w * a, a * final.bias + b
    y_eval = np.array([int(r["label"]) for r in eval_test])
    kinds_eval = np.array([r["kind"] for r in eval_test])
    ev_aggs = aggregated(final, bank_eval, saes, np.arange(bank_eval.n))
    eval_res = {f"head / {k}": summarise(v, y_eval, kinds_eval, kinds_eval) for k, v in ev_aggs.items()}
    Xd_eval = dense_pooled(bank_eval)
    C_all, _ = inner_select_c(Xd, y, groups)
    eval_res["dense probe / mean"] = summarise(fit_probe(Xd, y, C_all).decision_function(Xd_eval), y_eval,
                                               kinds_eval, kinds_eval)
    eval_res["keywords"] = summarise(np.array([keyword_score(r["text"]) for r in eval_test]), y_eval, kinds_eval,
                                     kinds_eval)
    for r in eval_res.values():
        r.pop("per_group")
    resp_y = np.array([1 if r.label == "harmful" else 0 for r in responses])
    resp_src = np.array([r.source for r in responses])
    resp_aggs = aggregated(final, bank_resp, saes, np.arange(bank_resp.n))
    resp_res = {}
    for name, s in resp_aggs.items():
        resp_res[name] = {"auroc": auroc(s, resp_y),
                          "per_source": {src: auroc(s[resp_src == src], resp_y[resp_src == src])
                                         for src in sorted(set(resp_src))}}
    resp_res["keywords"] = {"auroc": auroc(np.array([keyword_score(r.response) for r in responses]), resp_y)}
    long_tok = token_logits(final, bank_long, saes)[0]
    drift = {}
    for n in (64, 256, 1024, 2048, len(long_tok)):
        n = min(n, len(long_tok))
        drift[str(n)] = {agg_name(k, w): float(1 / (1 + np.exp(-aggregate_token_logits(long_tok[:n], k, w))))
                         for k, w in AGGS if k in ("mean", "rolling_max") and w in (1, 32)}

    out = {
        "command": "python benchmarks/bench_detection_head.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": cpu_model(), "threads": args.threads, "commit": git_commit(),
        "n_items": len(items), "n_unsafe": int(y.sum()), "groups": sorted(set(groups.tolist())),
        "n_eval_test": len(eval_test), "n_responses": len(responses), "prompt_tokens": int(bank.offsets[-1]),
        "layout": {"layers": list(layout.layers), "n_latents": list(layout.n_latents), "d": list(layout.d)},
        "wall_s": round(time.perf_counter() - t0, 1), "harvest_s": round(harvest_s, 1), "fit_s": round(fit_s, 1),
        "lam1_grid": args.lam1_grid, "lam2_grid": args.lam2_grid, "folds": folds, "loso": results, "named_share_flagged": share_stats,
        "final": {"lam1": sel_all.lam1, "lam2": sel_all.lam2, "inner_auroc": sel_all.inner_auroc,
                  "latents": {str(L): int(len(v)) for L, v in final.nonzero_latents().items()}},
        "eval_test": eval_res, "responses": resp_res, "long_benign": {"chars": len(long_text),
                                                                      "tokens": len(long_tok), "risk": drift},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_head.json").write_text(json.dumps(_nan_to_none(out), indent=1, default=float) + "\n")
    write_markdown(out, RESULTS / "detection_head.md")
    plot(out, RESULTS / "detection_head.png")
    print((RESULTS / "detection_head.md").read_text())


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def write_markdown(out: dict, path: Path) -> None:
    """The results page."""
    L = ["# Detection head vs dense probe, leave-one-source-out (issue 14)", "",
         f"`{out['command']}` at commit {out['commit']} on {out['machine']} ({out['threads']} threads); "
         f"wall time {out['wall_s']} s (activations {out['harvest_s']} s, LOSO fits {out['fit_s']} s). Inner grid: "
         f"lam1 {out['lam1_grid']}, lam2 {out['lam2_grid']}.", "",
         f"{out['n_items']} texts ({out['n_unsafe']} unsafe; every single-turn prompt also wrapped once in a "
         f"jailbreak template), {len(out['groups'])} source groups, {out['prompt_tokens']} content tokens; SAE "
         f"dictionaries {out['layout']['n_latents']} at layers {out['layout']['layers']} (`mlp_out`). Held-out "
         "scores pooled over folds. TPR@5%FPR: threshold on all pooled negatives. edgy@5%benign: edgy prompts "
         "flagged at the threshold that flags 5% of plain benign prompts.", "",
         "| scorer | LOSO AUROC | TPR@5%FPR | TPR@5%benign | edgy@5%benign |", "|---|---:|---:|---:|---:|"]
    for name, r in out["loso"].items():
        L.append(f"| {name} | {_f(r['auroc'])} | {_f(r['tpr@5%fpr'])} | {_f(r['tpr@5%benign'])} | "
                 f"{_f(r['edgy_flag@5%benign'])} |")
    L += ["", "## Per held-out source group", "",
          "AUROC where the group holds both classes; otherwise TPR (unsafe-only) or FPR (safe-only) at the pooled "
          "5% threshold. Head: `rolling_max32`.", "",
          "| group | n | unsafe | head | dense | keywords |", "|---|---:|---:|---:|---:|---:|"]
    hg, dg, kg = (out["loso"][k]["per_source_group"] for k in ("head / rolling_max32", "dense probe / mean", "keywords"))
    for g in sorted(hg):
        def cell(r: dict) -> str:
            if r["auroc"] is not None and r["auroc"] == r["auroc"]:
                return f"AUROC {r['auroc']:.3f}"
            return f"TPR {_f(r['tpr'])}" if r["n_pos"] else f"FPR {_f(r['fpr'])}"
        L.append(f"| {g} | {hg[g]['n']} | {hg[g]['n_pos']} | {cell(hg[g])} | {cell(dg[g])} | {cell(kg[g])} |")
    L += ["", "## Per style and language (pooled LOSO AUROC)", "", "| slice | head rolling_max32 | dense | keywords |",
          "|---|---:|---:|---:|"]
    for st in out["loso"]["keywords"]["per_style"]:
        L.append(f"| style {st} | " + " | ".join(_f(out["loso"][k]["per_style"][st]) for k in
                                                ("head / rolling_max32", "dense probe / mean", "keywords")) + " |")
    for lg, r in out["loso"]["keywords"]["per_lang"].items():
        L.append(f"| lang {lg} (n={r['n']}) | " + " | ".join(_f(out["loso"][k]["per_lang"][lg]["auroc"]) for k in
                                                            ("head / rolling_max32", "dense probe / mean", "keywords")) + " |")
    s = out["named_share_flagged"]
    L += ["", "## Named share on flagged prompts", "",
          f"Held-out prompts above the pooled 5% FPR threshold: {s['flagged']}. Share of the logit carried by named "
          f"SAE features, `sum|c_named| / (sum|c_named| + |remainder|)` on pooled features: mean {_f(s['mean'])}; "
          f"quantiles {', '.join(f'{q}: {v:.2f}' for q, v in s['quantiles'].items())}; histogram over [0,1] in "
          f"tenths: {s['histogram']}.", "",
          "## Eval test split (fitted on the whole safety set)", "", "| scorer | AUROC | TPR@5%FPR | edgy@5%benign |",
          "|---|---:|---:|---:|"]
    for name, r in out["eval_test"].items():
        L.append(f"| {name} | {_f(r['auroc'])} | {_f(r['tpr@5%fpr'])} | {_f(r['edgy_flag@5%benign'])} |")
    L += ["", "## Response side (the prompt head over reply tokens; never trained on replies)", "",
          f"{out['n_responses']} rows: harmful vs refused/harmless.", "", "| aggregation | AUROC | per source |",
          "|---|---:|---|"]
    for name, r in out["responses"].items():
        per = r.get("per_source", {})
        L.append(f"| {name} | {_f(r['auroc'])} | {', '.join(f'{k} {_f(v)}' for k, v in per.items())} |")
    lb = out["long_benign"]
    L += ["", f"## A long benign reply ({lb['chars']} characters, {lb['tokens']} tokens)", "",
          "Risk after the first n reply tokens:", "", "| tokens | mean | rolling_max32 |", "|---:|---:|---:|"]
    for n, r in lb["risk"].items():
        L.append(f"| {n} | {_f(r.get('mean'))} | {_f(r.get('rolling_max32'))} |")
    L += ["", "## Folds", "", "| held out | lam1 | lam2 | latents | dense C |", "|---|---:|---:|---:|---:|"]
    for g, f in out["folds"].items():
        L.append(f"| {g} | {f['lam1']:g} | {f['lam2']:g} | {f['latents']} | {f['dense_C']:g} |")
    path.write_text("\n".join(L) + "\n")


def plot(out: dict, path: Path) -> None:
    """Per held-out group: head vs dense (AUROC where defined, else TPR/1-FPR at the pooled threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hg, dg = out["loso"]["head / rolling_max32"]["per_source_group"], out["loso"]["dense probe / mean"]["per_source_group"]

    def val(r: dict) -> float:
        if r["auroc"] is not None and r["auroc"] == r["auroc"]:
            return r["auroc"]
        return r["tpr"] if r["n_pos"] else 1 - r["fpr"]

    names = sorted(hg)
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(xs - 0.2, [val(hg[n]) for n in names], 0.4, label="head rolling_max32")
    ax.bar(xs + 0.2, [val(dg[n]) for n in names], 0.4, label="dense probe")
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (two-class) / TPR (unsafe-only) / 1-FPR (safe-only)")
    ax.set_title("Held-out source groups")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
