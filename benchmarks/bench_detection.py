"""Detection quality of the guard's prompt score against a keyword list and a dense linear probe.

Evaluation set: ``benchmarks/data/guard_eval.jsonl`` (written for this project, kept apart from the concept
pairs; see its DATA_CARD). Only the *test* split is scored; the *train* split is used only to fit the
baselines and heads marked "(eval-train)".

Scorers, all on the same embedded model and the same prompts (chat template applied, user tokens only):

- ``guard``                 the shipped risk head: sparse non-negative logistic head over the database's
                            features, fitted on the concept pairs (never on this set);
- ``guard (eval-train)``    the same kind of head refitted on pairs + the eval train split;
- ``dense probe (pairs)``   logistic regression (L2, C by CV) on mean-pooled ``mlp_out`` activations of the
                            database's layers (3 x d_model), trained on the concept pairs;
- ``dense probe (eval-train)`` the same probe trained on the eval train split;
- ``keywords``              `keyword_baseline.py`.

Metrics on the test split: AUROC (unsafe vs every safe prompt), TPR at 1% and 5% FPR, per phrasing style,
and the false-positive rate on safe-but-edgy prompts at the threshold that gives 5% FPR on ordinary prompts.

    python benchmarks/bench_detection.py            # writes benchmarks/results/detection.{md,json,png}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model, git_commit  # noqa: E402
from keyword_baseline import keyword_score  # noqa: E402

from safesail_guard.hooks import HookPoint, collect_padded  # noqa: E402
from safesail_guard.runtime.guard import Guard  # noqa: E402
from safesail_guard.runtime.prompts import watched_mask  # noqa: E402
from safesail_guard.runtime.scoring import RiskHead  # noqa: E402
from safesail_training.corpus.pairs import load_pairs  # noqa: E402
from safesail_training.risk_head import pooled_matrix, select_and_fit  # noqa: E402

DATA = HERE / "data" / "guard_eval.jsonl"
RESULTS = HERE / "results"
STYLES = ("direct", "instruction", "roleplay", "indirect", "multilingual")


# ---------------------------------------------------------------- metrics
def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Mann-Whitney AUROC with ties counted half."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def threshold_at_fpr(neg_scores: Sequence[float], fpr: float) -> float:
    """Smallest threshold t such that the share of negatives with score > t is at most ``fpr``."""
    neg = np.sort(np.asarray(neg_scores, float))
    if len(neg) == 0:
        return float("inf")
    k = int(np.floor(fpr * len(neg)))  # negatives allowed above t
    return float(neg[len(neg) - k - 1]) if k < len(neg) else float("-inf")


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[int], fpr: float) -> float:
    """True-positive rate at the threshold giving at most ``fpr`` false positives (strictly above)."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    t = threshold_at_fpr(s[y == 0], fpr)
    return float((s[y == 1] > t).mean()) if (y == 1).any() else float("nan")


def report(scores: np.ndarray, rows: list[dict]) -> dict:
    """All metrics of one scorer on the test rows."""
    y = np.array([r["label"] for r in rows])
    kinds = np.array([r["kind"] for r in rows])
    styles = np.array([r["style"] for r in rows])
    out = {"auroc": auroc(scores, y), "tpr@1%fpr": tpr_at_fpr(scores, y, 0.01), "tpr@5%fpr": tpr_at_fpr(scores, y, 0.05)}
    t = threshold_at_fpr(scores[kinds == "benign"], 0.05)
    out["edgy_fpr@5%benign"] = float((scores[kinds == "edgy"] > t).mean())
    out["benign_fpr@5%benign"] = float((scores[kinds == "benign"] > t).mean())
    out["tpr@5%benign"] = float((scores[kinds == "unsafe"] > t).mean())
    out["per_style"] = {st: auroc(scores[styles == st], y[styles == st]) for st in STYLES}
    return out


# ---------------------------------------------------------------- features
def dense_features(guard: Guard, prompts: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """Mean over watched tokens of ``mlp_out`` at the guard's layers, concatenated: ``[n, L * d]``."""
    points = [HookPoint(ly, guard.site) for ly in guard.layers]
    out = np.zeros((len(prompts), len(points) * int(guard.model.config.hidden_size)), dtype=np.float32)
    encs = [guard.encode_prompt(p)[0] for p in prompts]
    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
    pad = guard.tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        masks = [watched_mask(encs[i]) for i in idx]
        acts = collect_padded(guard.model, points, [(encs[i], m) for i, m in zip(idx, masks)], pad_id=pad)
        counts = [sum(m) for m in masks]
        per_point = [torch.split(acts[p], counts) for p in points]
        for b, i in enumerate(idx):
            if counts[b]:
                out[i] = torch.cat([rows[b].mean(0) for rows in per_point]).numpy()
    return out


def fit_dense_probe(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """Standardised L2 logistic regression with C picked by 5-fold CV (AUROC)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=5, scoring="roc_auc",
                                                                 max_iter=2000, random_state=seed))
    return model.fit(X, y)


def fit_head(X: np.ndarray, y: np.ndarray, groups: list[str], ids: list[str], guard: Guard) -> RiskHead:
    """The guard's kind of head (non-negative, L1 by grouped CV) on the given rows."""
    w, b, best, _ = select_and_fit(X, y, groups)
    return RiskHead({ids[j]: float(w[j]) for j in np.nonzero(w)[0]}, b, guard.catalog, {"l1": best})


def head_scores(head: RiskHead, X: np.ndarray, ids: list[str]) -> np.ndarray:
    """Risk scores for pooled matrices (same formula as `RiskHead.score_pooled`)."""
    w = np.array([head.weights.get(f, 0.0) for f in ids])
    return 1 / (1 + np.exp(-(X @ w + head.bias)))


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, default=None, help="database (default: the shipped one)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N rows of each split (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    guard = Guard.from_db(args.db)
    pairs = load_pairs()
    pair_texts = [p.concept for p in pairs] + [p.deconcept for p in pairs]
    y_pairs = np.array([1] * len(pairs) + [0] * len(pairs))
    g_pairs = [p.id for p in pairs] * 2
    print(f"{guard!r}; {len(train)} train / {len(test)} test prompts, {len(pair_texts)} pair texts", flush=True)

    Xg_test, ids = pooled_matrix(guard, [r["text"] for r in test])
    Xg_train, _ = pooled_matrix(guard, [r["text"] for r in train])
    Xg_pairs, _ = pooled_matrix(guard, pair_texts)
    Xd_test = dense_features(guard, [r["text"] for r in test])
    Xd_train = dense_features(guard, [r["text"] for r in train])
    Xd_pairs = dense_features(guard, pair_texts)
    y_train = np.array([r["label"] for r in train])
    print(f"features extracted in {time.perf_counter() - t0:.0f} s", flush=True)

    scorers: dict[str, np.ndarray] = {}
    shipped = guard.risk_head
    if shipped is None:
        print("the database has no risk head; fitting one on the pairs now", flush=True)
        shipped = fit_head(Xg_pairs, y_pairs.astype(np.float32), g_pairs, ids, guard)
    scorers["guard"] = head_scores(shipped, Xg_test, ids)
    both_X = np.vstack([Xg_pairs, Xg_train])
    both_y = np.concatenate([y_pairs, y_train]).astype(np.float32)
    both_g = g_pairs + [r["id"] for r in train]
    head_eval = fit_head(both_X, both_y, both_g, ids, guard)
    scorers["guard (eval-train)"] = head_scores(head_eval, Xg_test, ids)
    scorers["dense probe (pairs)"] = fit_dense_probe(Xd_pairs, y_pairs).predict_proba(Xd_test)[:, 1]
    scorers["dense probe (eval-train)"] = fit_dense_probe(Xd_train, y_train).predict_proba(Xd_test)[:, 1]
    scorers["keywords"] = np.array([keyword_score(r["text"]) for r in test])

    results = {name: report(s, test) for name, s in scorers.items()}
    heads = {"guard": {"nonzero": len(shipped.weights), **{k: v for k, v in shipped.meta.items() if k != "cv_auroc"}},
             "guard (eval-train)": {"nonzero": len(head_eval.weights), **head_eval.meta}}
    out = {"machine": cpu_model(), "commit": git_commit(), "db": str(guard.db.path), "firing": guard.firing,
           "n_test": len(test), "n_train": len(train), "n_pairs": len(pairs), "results": results, "heads": heads,
           "seconds": round(time.perf_counter() - t0, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection.json").write_text(json.dumps(out, indent=1) + "\n")
    write_markdown(out, RESULTS / "detection.md")
    plot(scorers, test, RESULTS / "detection.png")
    print((RESULTS / "detection.md").read_text())


def write_markdown(out: dict, path: Path) -> None:
    """The results table as markdown."""
    res = out["results"]
    lines = [f"# Guard detection benchmark\n", f"`python benchmarks/bench_detection.py` at commit {out['commit']} on "
             f"{out['machine']}; firing rule `{out['firing']}`; {out['n_test']} test prompts "
             f"({out['n_train']} train prompts, {out['n_pairs']} concept pairs for fitting); {out['seconds']} s.\n",
             "| scorer | AUROC | TPR@1%FPR | TPR@5%FPR | edgy FPR @5% benign FPR | " +
             " | ".join(f"AUROC {s}" for s in STYLES) + " |",
             "|---|---|---|---|---|" + "---|" * len(STYLES)]
    for name, r in res.items():
        lines.append(f"| {name} | {r['auroc']:.3f} | {r['tpr@1%fpr']:.3f} | {r['tpr@5%fpr']:.3f} | "
                     f"{r['edgy_fpr@5%benign']:.3f} | " + " | ".join(f"{r['per_style'][s]:.3f}" for s in STYLES) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(scorers: dict[str, np.ndarray], rows: list[dict], path: Path) -> None:
    """ROC curves (left) and per-style AUROC (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([r["label"] for r in rows])
    styles = np.array([r["style"] for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, s in scorers.items():
        order = np.argsort(-s)
        tp = np.cumsum(y[order] == 1) / max((y == 1).sum(), 1)
        fp = np.cumsum(y[order] == 0) / max((y == 0).sum(), 1)
        a.plot(np.r_[0, fp], np.r_[0, tp], label=f"{name} ({auroc(s, y):.2f})")
    a.plot([0, 1], [0, 1], "k:", lw=0.8)
    a.set(xlabel="false-positive rate (safe prompts)", ylabel="true-positive rate (unsafe prompts)", title="ROC, test split")
    a.legend(fontsize=8)
    width = 0.8 / len(scorers)
    for i, (name, s) in enumerate(scorers.items()):
        vals = [auroc(s[styles == st], y[styles == st]) for st in STYLES]
        b.bar(np.arange(len(STYLES)) + i * width, vals, width, label=name)
    b.set_xticks(np.arange(len(STYLES)) + 0.4 - width / 2, STYLES)
    b.axhline(0.5, color="k", lw=0.8, ls=":")
    b.set(ylim=(0.3, 1.0), ylabel="AUROC", title="AUROC per phrasing style")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
