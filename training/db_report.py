"""The results page of a neuron database build: markdown plus matplotlib PNGs, from the database itself and the
build's summary (``<work_dir>/db/summary.json``). Every number on the page is read from those two sources.

How it connects: `safesail db report` (`safesail_guard.cli.db`) calls `write_report` after `safesail build-db`
(`safesail_training.build_db`) has written the database and its summary; the database is read with
`safesail_neuron_db.NeuronDB` and the map is drawn with `safesail_training.feature_map.plot_map`.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from safesail_neuron_db import NeuronDB


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _context(ex: Any, before: int = 14, after: int = 6) -> str:
    """One example as text with its max-activating token in bold."""
    if not ex.acts:
        return ""
    peak = max(range(len(ex.acts)), key=lambda i: ex.acts[i])
    lo, hi = max(0, peak - before), min(len(ex.tokens), peak + after + 1)
    parts = []
    for i in range(lo, hi):
        tok = ex.tokens[i].replace("\n", "⏎").replace("|", "\\|")
        parts.append(f"**{tok.strip() or tok}**" if i == peak and tok.strip() else tok)
    return ("…" if lo > 0 else "") + "".join(parts).strip() + ("…" if hi < len(ex.tokens) else "")


def write_report(db_path: Path, work_dir: Path, out_md: Path, *, title: str = "Neuron database") -> Path:
    """Write ``out_md`` and its PNGs (``<stem>_*.png`` beside it); returns the markdown path."""
    summary_path = work_dir / "db" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    out_md.parent.mkdir(parents=True, exist_ok=True)
    stem = out_md.stem
    with NeuronDB.open(db_path) as db:
        info = db.info()
        feats = list(db.iter_features())
        manifest = db.manifest
    layers = list(info["layers"])
    domains = sorted({c.level0 for f in feats for c in f.concepts} | set(_taxonomy_domains()))
    lines: list[str] = [f"# {title}", ""]
    lines += [
        f"Model `{info['model']['name']}` (fingerprint `{info['model']['fingerprint'][:12]}…`), site `{info['site']}`, "
        f"layers {', '.join(map(str, layers))}; {len(feats)} features. Built by `safesail build-db` "
        f"(explainer `{manifest.build.get('explainer')}`, simulator `{manifest.build.get('simulator')}`, "
        f"SpScore `{manifest.build.get('spscorer')}`, map `{info['map_method']}`, seed {info['seed']}).",
        "",
    ]
    sizes = {name: meta["bytes"] for name, meta in info["files"].items()}
    total = sum(sizes.values()) + (db_path / "manifest.json").stat().st_size
    lines += [f"Size on disk: {total / 1e6:.1f} MB ({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sorted(sizes.items()))}).", ""]
    computed = summary.get("stage_seconds_when_computed") or {}
    if computed or summary.get("timings_s"):
        this_run = summary.get("timings_s", {})
        lines += ["## Build time (this 2-core CPU)", "",
                  "Seconds each stage took when it last really ran (stages are cached, so a rerun skips finished ones), and "
                  "in the latest run:", "", "| stage | when computed | latest run |", "|---|---:|---:|"]
        for k in ["pairs", "records", "explain", "simulate", "spscore", "map", "style", "write"]:
            if k in computed or k in this_run:
                lines.append(f"| {k} | {_f(computed.get(k), 0)} | {_f(this_run.get(k), 0)} |")
        if computed:
            lines.append(f"| **sum** | **{sum(computed.values()) / 60:.1f} min** | {this_run.get('total', 0) / 60:.1f} min |")
        lines += ["", "These are the stages from trained SAEs to the database; training the SAEs (`safesail build-sae`) is not included.", ""]

    # -- features per domain and layer
    lines += ["## Features per domain and layer", ""]
    if summary.get("filter"):
        lines += ["| point | precision bar | recall bar | estimated false discoveries | pass | kept |", "|---|---:|---:|---:|---:|---:|"]
        for k, v in summary["filter"].items():
            cal = v.get("calibration") or {}
            lines.append(f"| {k} | {v.get('min_precision', '-')} | {v.get('min_recall', '-')} | {_f(cal.get('estimated_fdr'))} | {v['passed']} | {v['kept']} |")
        sweeps = {k: v["calibration"]["sweep"] for k, v in summary["filter"].items() if v.get("calibration")}
        if sweeps:
            lines += ["", "The recall bar starts at the paper's 0.2 and rises until a null - the same filter with each pair's two sides "
                      "swapped at random, so the concept label means nothing - passes at most 10% as many features as the real "
                      "data (the estimated false-discovery rate). With 16-23 pairs per concept the paper's bars alone would keep "
                      "mostly chance features:", "", "| point | recall bar: passed / null passed |", "|---|---|"]
            for k, sw in sweeps.items():
                lines.append(f"| {k} | " + "; ".join(f"{x['min_recall']}: {x['passed']} / {x['null_passed']:.0f}" for x in sw) + " |")
        lines += [""]
    spec = summary.get("specificity") or {}
    if spec.get("before"):
        lines += [f"Specificity check: a feature is kept only if at least {spec['min_top_risky']:.0%} of its top-activating explanation "
                  f"windows come from safety-rich text (base rate of such text in the explanation set: about 30% of tokens). "
                  f"{spec['kept']} of {spec['before']} filtered features pass "
                  f"({', '.join(f'{k}: {v}' for k, v in spec.get('per_layer', {}).items())}).", ""]
    table: dict[str, Counter[int]] = defaultdict(Counter)
    for f in feats:
        for d in f.domains:
            table[d][f.layer] += 1
    lines += ["| domain | " + " | ".join(f"layer {layer}" for layer in layers) + " | total |", "|---|" + "---:|" * (len(layers) + 1)]
    for d in domains:
        row = [table[d][layer] for layer in layers]
        lines.append(f"| {d} | " + " | ".join(str(x) for x in row) + f" | {sum(row)} |")
    empty = [d for d in domains if sum(table[d].values()) == 0]
    lines += ["", f"A feature counts under every domain it passed the filter for. Domains with no feature: {', '.join(empty) if empty else 'none'}.", ""]
    png = _plot_domains(out_md.parent / f"{stem}_domains.png", table, domains, layers)
    if png:
        lines += [f"![features per domain and layer]({png.name})", ""]

    # -- languages
    if summary.get("languages"):
        lines += ["## Languages", "",
                  "AUROC of each domain's detector (max activation over the features selected for the domain) on concept queries "
                  "against their de-concept twins, per language. 0.5 = the twin looks the same as the concept. English pairs are "
                  "the ones the filter selected on, so English is in-sample; the other languages have 3 pairs per domain, so "
                  "their cells are coarse.", ""]
        langs = summary["languages"]
        lines += ["| domain | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs)]
        for d in domains:
            cells = []
            for lang in langs:
                c = langs[lang].get(d)
                cells.append("-" if c is None else f"{_f(c.get('auroc'))} (n={c['pairs']})")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        weak = [f"{lang}/{d}" for lang, per in langs.items() for d, c in per.items() if c.get("auroc") is None or c["auroc"] <= 0.6]
        lines += ["", f"Language/domain cells at or below AUROC 0.6 (no useful detector): {', '.join(weak) if weak else 'none'}.", ""]

    # -- thresholds
    if summary.get("threshold_agreement"):
        lines += ["## Guard thresholds vs TopK", "",
                  "By default the guard fires a feature by exact TopK, using the database's competition file (all encoder rows, "
                  "12-bit) when it has one; see `docs/results/guard.md` for its agreement with fp32 TopK. The per-feature "
                  "thresholds below are the fallback rule (`firing=\"threshold\"`, and databases without a competition file): "
                  "best F1 against TopK firing on the explanation set. Their agreement with TopK, median over features:", "",
                  "| point | precision | recall |", "|---|---:|---:|"]
        for p, v in summary["threshold_agreement"].items():
            if v.get("features", 1):
                lines.append(f"| {p} | {v['median_precision']:.3f} | {v['median_recall']:.3f} |")
        lines += [""]

    # -- CorrScore
    lines += ["## Simulation scores", ""]
    by_sim: dict[tuple[str, str], list[float]] = defaultdict(list)
    cost: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    pairs_tok_seg: dict[str, dict[str, float]] = defaultdict(dict)
    statuses: Counter[tuple[str, str, str]] = Counter()
    for f in feats:
        for s in f.simulation_scores:
            statuses[(s.simulator, s.method, s.status)] += 1
            c = cost[(s.simulator, s.method)]
            c[0] += s.prompt_tokens
            c[1] += s.generated_tokens
            c[2] += 1
            if s.status == "ok" and s.corr is not None:
                by_sim[(s.simulator, s.method)].append(s.corr)
                pairs_tok_seg[f.id][f"{s.simulator}|{s.method}"] = s.corr
    lines += ["| simulator | method | features scored | median CorrScore | mean | share > 0.3 |", "|---|---|---:|---:|---:|---:|"]
    for (sim, method), vals in sorted(by_sim.items()):
        lines.append(f"| {sim} | {method} | {len(vals)} | {statistics.median(vals):.3f} | {statistics.fmean(vals):.3f} | {sum(v > 0.3 for v in vals) / len(vals):.0%} |")
    other = {k: v for k, v in statuses.items() if k[2] != "ok"}
    if other:
        lines += ["", "Not scored: " + "; ".join(f"{sim} {m} {st}: {n}" for (sim, m, st), n in sorted(other.items()))]
    lines += [""]
    png = _plot_corr(out_md.parent / f"{stem}_corrscore.png", by_sim)
    if png:
        lines += [f"![CorrScore distribution]({png.name})", ""]
    for sim in sorted({k[0] for k in by_sim}):
        xs, ys = [], []
        for per in pairs_tok_seg.values():
            if f"{sim}|token" in per and f"{sim}|segment" in per:
                xs.append(per[f"{sim}|token"])
                ys.append(per[f"{sim}|segment"])
        r = _pearson(xs, ys)
        tok_cost, seg_cost = cost.get((sim, "token")), cost.get((sim, "segment"))
        lines += [f"### Segment-level vs token-level ({sim})", ""]
        lines += [f"Pearson r between the two CorrScores over the {len(xs)} features scored both ways: **{_f(r)}** (the paper reports 0.8 with an LLM simulator)."]
        if tok_cost and seg_cost and tok_cost[1] > 0:
            gen_saving = 1 - seg_cost[1] / tok_cost[1]
            all_saving = 1 - (seg_cost[0] + seg_cost[1]) / max(tok_cost[0] + tok_cost[1], 1)
            est = " (estimated: the size of the prompts and replies an LLM simulator would need, counted with the model's tokenizer)" if sim.startswith("embedding") else ""
            lines += [
                "",
                "| method | prompt tokens | generated tokens |",
                "|---|---:|---:|",
                f"| token-level | {tok_cost[0]:,} | {tok_cost[1]:,} |",
                f"| segment-level | {seg_cost[0]:,} | {seg_cost[1]:,} |",
                "",
                f"Segment-level needs {gen_saving:.0%} fewer generated tokens and {all_saving:.0%} fewer tokens in total{est}. The paper reports about 55% lower cost.",
            ]
        png = _plot_scatter(out_md.parent / f"{stem}_seg_vs_token_{_slug(sim)}.png", xs, ys, sim)
        if png:
            lines += ["", f"![segment vs token CorrScore]({png.name})"]
        lines += [""]

    # -- SpScore
    sp = [f.superposition for f in feats if f.superposition is not None and f.superposition.value is not None]
    if sp:
        methods = sorted({s.method for s in sp})
        lines += ["## Superposition score", "", f"Method: {', '.join(f'`{m}`' for m in methods)}. " + (
            "This is an offline proxy (10 x mean cosine distance between the feature's top contexts), not the paper's LLM judgement. " if any(m.startswith("offline-proxy") for m in methods) else "")
            + "Per layer, median (0 = one concept, 10 = many unrelated ones):", "", "| layer | median SpScore | features |", "|---|---:|---:|"]
        for layer in layers:
            vals = [f.superposition.value for f in feats if f.layer == layer and f.superposition is not None and f.superposition.value is not None]
            if vals:
                lines.append(f"| {layer} | {statistics.median(vals):.2f} | {len(vals)} |")
        lines += [""]

    # -- map
    from safesail_training.feature_map import plot_map

    mapped = [f for f in feats if f.map_x is not None and f.map_y is not None]
    if mapped:
        import numpy as np

        png = plot_map(np.array([[f.map_x, f.map_y] for f in mapped]), [f.domain or "none" for f in mapped], out_md.parent / f"{stem}_map.png", title=f"Neuron map ({info['map_method']}), coloured by domain")
        if png:
            note = (" The offline explainer writes the concept tags into each explanation, so part of the grouping by domain is by construction; with an LLM explainer the map reflects the explanations alone."
                    if manifest.build.get("explainer") == "offline" else "")
            lines += ["## Neuron map", "", f"Explanations embedded with all-MiniLM-L6-v2 and projected with {info['map_method']}; nearby points have similar explanations.{note}", "", f"![neuron map]({png.name})", ""]

    # -- style check
    style = work_dir / "db" / "style_check.json"
    if style.is_file():
        lines += ["## Style generalisation", "", "The selected features on 300 handwritten texts in four styles the concept pairs never use "
                  "(evaluation only). Detector score of a text = max activation over the features selected for the domain.", ""]
        lines += [json.loads(style.read_text())["markdown"].replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]

    # -- examples
    lines += ["## Example features", ""]
    for d in domains:
        cands = [f for f in feats if f.domain == d and f.explanation_status == "ok"]
        if not cands:
            continue
        best = max(cands, key=lambda f: (f.segment_corr if f.segment_corr is not None else -2, f.token_corr or -2, f.id))
        concepts = ", ".join(f"{c.level0}/{c.level1} (P {c.precision:.2f}, R {c.recall:.2f})" for c in best.concepts[:3])
        lines += [f"### `{best.id}` - {d}", "", f"*{best.explanation}*", "",
                  f"Concepts: {concepts}. CorrScore token {_f(best.token_corr)}, segment {_f(best.segment_corr)}; "
                  f"SpScore {_f(best.sp_score, 1)}; fires on {best.fire_rate:.2%} of explanation tokens; threshold {best.threshold:.3f}.", ""]
        for ex in best.top[:3]:
            lines.append(f"- (max {ex.max_act:.2f}) {_context(ex)}")
        lines += [""]
    lines += ["---", "", f"Regenerate with `safesail db report --db {db_path} --work-dir {work_dir} --out {out_md}`.", ""]
    out_md.write_text("\n".join(lines))
    return out_md


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s).strip("-").lower()


def _taxonomy_domains() -> list[str]:
    try:
        from safesail_training.corpus.pairs import load_taxonomy

        return list(load_taxonomy().level0s)
    except Exception:  # noqa: BLE001 - the report still works without the taxonomy
        return []


def _plot_domains(path: Path, table: dict[str, Counter[int]], domains: list[str], layers: list[int]) -> Path | None:
    try:
        fig = _figure(8, 4)
    except ImportError:
        return None
    ax = fig.subplots()
    bottom = [0] * len(domains)
    for layer in layers:
        vals = [table[d][layer] for d in domains]
        ax.bar(domains, vals, bottom=bottom, label=f"layer {layer}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("features")
    ax.set_title("Safety features per domain and layer")
    ax.tick_params(axis="x", rotation=35)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_corr(path: Path, by_sim: dict[tuple[str, str], list[float]]) -> Path | None:
    if not by_sim:
        return None
    try:
        fig = _figure(7, 3.6)
    except ImportError:
        return None
    ax = fig.subplots()
    bins = [i / 20 for i in range(-20, 21)]
    for (sim, method), vals in sorted(by_sim.items()):
        ax.hist(vals, bins=bins, alpha=0.55, label=f"{method} ({sim})")
    ax.set_xlabel("CorrScore (Pearson r, simulated vs true activations)")
    ax.set_ylabel("features")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_scatter(path: Path, xs: list[float], ys: list[float], sim: str) -> Path | None:
    if len(xs) < 3:
        return None
    try:
        fig = _figure(4.5, 4.5)
    except ImportError:
        return None
    ax = fig.subplots()
    ax.scatter(xs, ys, s=8, alpha=0.5)
    ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8)
    ax.set_xlabel("token-level CorrScore")
    ax.set_ylabel("segment-level CorrScore")
    ax.set_title(sim, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path
