"""End-to-end SAE build: harvest -> train a k sweep -> metrics -> selection on concept pairs -> report.

Every stage writes its output under `out_dir` and is skipped when that output is already complete, so an
interrupted build resumes where it stopped and a finished one replays its report in seconds:

    out_dir/acts/train/<point>/    activation shards for SAE training (ShardWriter format)
    out_dir/acts/eval/<point>/     held-out activations (records never used for training)
    out_dir/saes/<point>/k<k>/     one trained TopK SAE per k (cfg.json + sae.safetensors + train_log.jsonl)
    out_dir/saes/<point>/k<k>/metrics.json   FVU, MSE, L0, R_alive, delta NTP loss, selection metrics
    out_dir/selection.{md,json,png}          the paper-style table, the recommendation, the CDF plot
    out_dir/build.json                       timings of each stage and the configuration used

How it connects: `safesail build-sae` (`safesail_guard.cli.pipeline`) runs `run_build`; `safesail build-db`
(`safesail_training.build_db_select`) runs it for missing SAEs and reads the same corpus order through
`corpus_records`. The stages use `harvest`, `shards`, `train`, `metrics`, `model_metrics` and `select`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safesail_guard.hooks import HookPoint

Log = Callable[[str], None]


class BuildSAEConfig(BaseModel):
    """Settings of `safesail build-sae`; the defaults are the shipped build for the embedded model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="embedded", description="Model spec: 'embedded', a HF directory, a .gguf file or a cached HF id.")
    out_dir: Path = Field(default=Path("runs/smollm2-135m-instruct"), description="Build directory (not committed).")
    points: list[str] = Field(default=["layers.14.mlp_out"], description="Hook points to train SAEs at.")
    train_tokens: int = Field(default=1_000_000, gt=0, description="Activations harvested for SAE training, per point.")
    eval_records: int = Field(default=300, ge=10, description="Corpus records held out for reconstruction metrics.")
    ntp_records: int = Field(default=60, ge=1, description="Held-out records used for delta next-token loss.")
    ks: list[int] = Field(default=[16, 32, 64, 128, 256], description="TopK sparsities to sweep.")
    expansion: int = Field(default=10, ge=1, description="Dictionary size / d_model (the paper uses 10).")
    batch_size: int = Field(default=4096, ge=64, description="SAE training batch size (tokens).")
    t: float = Field(default=0.25, gt=0, lt=1, description="Threshold t of L0,t.")
    seed: int = Field(default=0, description="Seed for corpus order, SAE init and training.")
    user_corpus: list[Path] = Field(default_factory=list, description="Extra or replacement corpus files (.jsonl/.txt).")
    replace_corpus: bool = Field(default=False, description="Use only user_corpus, not the built-in corpus.")
    pairs: list[Path] = Field(default_factory=list, description="Concept-pair JSONL files (default: the built-in pairs).")
    safety_mix: int = Field(default=3, ge=0, description="Interleave the chat-formatted safety set (prompts, wrapped copies, replies) into the built-in corpus, one safety record after every N general records (0 = off).")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("ks must be a non-empty list of positive integers, e.g. [16, 32, 64, 128]")
        return sorted(set(v))

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[str]) -> list[str]:
        return [HookPoint.parse(p).name for p in v]


def corpus_records(cfg: BuildSAEConfig) -> list[Any]:
    """The SAE build's corpus, in build order: the built-in general text (shuffled with ``cfg.seed``, unless
    ``cfg.replace_corpus``) followed by the user's ``--corpus`` files. The first ``cfg.eval_records`` are held
    out for evaluation; `safesail_training.build_db` reads the same list to find text training never saw."""
    from safesail_training.corpus import general

    recs: list[Any] = []
    if not cfg.replace_corpus:
        recs.extend(general.iter_general(seed=cfg.seed, shuffle=True))
        if cfg.safety_mix:
            recs = _interleave(recs, cfg.safety_mix, cfg.seed)
    if cfg.user_corpus:
        recs.extend(general.iter_user_texts(list(cfg.user_corpus)))
    if not recs:
        raise ValueError("the corpus is empty: give --corpus files or drop --replace-corpus")
    return recs


def _interleave(general_recs: list[Any], every: int, seed: int) -> list[Any]:
    """One safety-mix record (shuffled with ``seed``) after every ``every`` general records; the rest of the
    mix follows the general corpus, so no record is dropped."""
    import random

    from safesail_training.corpus.safety.sae_mix import safety_mix_records

    mix = safety_mix_records(seed=seed)
    random.Random(seed + 1).shuffle(mix)
    out: list[Any] = []
    for i, rec in enumerate(general_recs):
        out.append(rec)
        if (i + 1) % every == 0 and mix:
            out.append(mix.pop())
    out.extend(reversed(mix))
    return out


def _write_json(path: Path, obj: Any) -> None:
    from safesail_neuron_db.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def run_build(cfg: BuildSAEConfig, *, log: Log = print, progress: bool = True, harvest_only: bool = False, measure: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole build; returns the selection report as a dict (empty with `harvest_only`).

    ``measure=False`` trains the SAEs and stops there: no FVU/dNTP/selection metrics and no report (what
    `build-db` needs when it has to train missing SAEs; it measures the pairs itself in one pass)."""
    import torch

    from safesail_guard.models import load_model
    from safesail_guard.sae import TopKSAE
    from safesail_training.corpus.pairs import load_pairs
    from safesail_training.harvest import HarvestConfig, harvest
    from safesail_training.metrics import reconstruction_metrics
    from safesail_training.model_metrics import delta_ntp_loss, query_site_acts
    from safesail_training.select import delta_freq, domain_scores, feature_max
    from safesail_training.shards import open_shards
    from safesail_training.train import TrainConfig, train_sae

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    loaded = load_model(cfg.model)
    timings["load_model"] = time.perf_counter() - t0
    log(f"model {loaded.identity.name}: {loaded.n_layers} layers, d_model {loaded.d_model}, loaded in {loaded.load_seconds:.1f} s")

    records = corpus_records(cfg)
    eval_recs, train_recs = records[: cfg.eval_records], records[cfg.eval_records :]
    corpus_id = f"{'user' if cfg.replace_corpus else 'builtin'}+{len(cfg.user_corpus)}user:seed{cfg.seed}:mix{cfg.safety_mix}:n{len(records)}"
    log(f"corpus: {len(records)} records ({len(eval_recs)} held out for evaluation)")

    t0 = time.perf_counter()
    hcfg = HarvestConfig(points=cfg.points, max_tokens=cfg.train_tokens)
    h = harvest(loaded, train_recs, out / "acts" / "train", hcfg, corpus=corpus_id, progress=progress)
    timings["harvest_train"] = time.perf_counter() - t0
    log(f"harvest: {h.n_tokens:,} tokens at {', '.join(h.points)}" + (f" ({h.tokens_per_s:,.0f} tok/s)" if h.tokens_per_s else " (cached)"))
    t0 = time.perf_counter()
    ecfg = HarvestConfig(points=cfg.points, max_tokens=10_000_000)
    he = harvest(loaded, eval_recs, out / "acts" / "eval", ecfg, corpus=corpus_id + ":eval", progress=progress)
    timings["harvest_eval"] = time.perf_counter() - t0
    log(f"held-out activations: {he.n_tokens:,} tokens")
    if harvest_only:
        return {}
    if not measure:
        for point_name in cfg.points:
            train_shards = open_shards(out / "acts" / "train" / point_name)
            for k in cfg.ks:
                sae_dir = out / "saes" / point_name / f"k{k}"
                if (sae_dir / "sae.safetensors").is_file() and (sae_dir / "cfg.json").is_file():
                    continue
                t0 = time.perf_counter()
                tcfg = TrainConfig(k=k, expansion=cfg.expansion, batch_size=cfg.batch_size, seed=cfg.seed, val_fraction=0.0)
                train_sae(train_shards, tcfg, sae_dir, progress=progress)
                timings[f"train:{point_name}:k{k}"] = time.perf_counter() - t0
                log(f"[{point_name} k={k}] trained in {timings[f'train:{point_name}:k{k}']:.0f} s")
        return {"timings_s": {k: round(v, 1) for k, v in timings.items()}}

    pairs = load_pairs(list(cfg.pairs) or None)
    domains = [p.level0 for p in pairs]
    log(f"concept pairs: {len(pairs)} over {len(set(domains))} domains")
    domain_index = {dom: [i for i, d in enumerate(domains) if d == dom] for dom in sorted(set(domains))}

    report: dict[str, Any] = {"model": loaded.identity.to_dict(), "t": cfg.t, "configs": []}
    for point_name in cfg.points:
        point = HookPoint.parse(point_name)
        train_shards = open_shards(out / "acts" / "train" / point.name)
        eval_acts = open_shards(out / "acts" / "eval" / point.name).load_all()
        pair_acts: dict[str, list[torch.Tensor]] = {}  # computed once per point, only if some k needs it

        def get_pair_acts(side: str) -> list[torch.Tensor]:
            if side not in pair_acts:
                t_pa = time.perf_counter()
                pair_acts[side] = query_site_acts(loaded, point, [getattr(p, side) for p in pairs])
                timings[f"pair_acts:{point.name}"] = timings.get(f"pair_acts:{point.name}", 0.0) + time.perf_counter() - t_pa
            return pair_acts[side]

        for k in cfg.ks:
            sae_dir = out / "saes" / point.name / f"k{k}"
            metrics_path = sae_dir / "metrics.json"
            if metrics_path.is_file():
                entry = json.loads(metrics_path.read_text())
                log(f"[{point.name} k={k}] cached")
                report["configs"].append(entry)
                continue
            t0 = time.perf_counter()
            # the held-out eval records give validation metrics, so every harvested token trains
            tcfg = TrainConfig(k=k, expansion=cfg.expansion, batch_size=cfg.batch_size, seed=cfg.seed, val_fraction=0.0)
            result = train_sae(train_shards, tcfg, sae_dir, progress=progress)
            train_s = time.perf_counter() - t0
            sae = TopKSAE.load(sae_dir)
            t0 = time.perf_counter()
            rec = reconstruction_metrics(sae, eval_acts)
            ntp = delta_ntp_loss(loaded, sae, point, eval_recs[: cfg.ntp_records])
            cmax = feature_max(sae, get_pair_acts("concept"), sae.n_latents)
            dmax = feature_max(sae, get_pair_acts("deconcept"), sae.n_latents)
            scores = domain_scores(cmax, dmax, domains, t=cfg.t, seed=cfg.seed)
            freq_all = {dom: delta_freq(cmax[idx], dmax[idx]).tolist() for dom, idx in domain_index.items()}
            entry = {
                "point": point.name,
                "k": k,
                "n_latents": sae.n_latents,
                "train_tokens": result.tokens_seen,
                "train_seconds": round(train_s, 1),
                "train_tokens_per_s": round(result.tokens_per_s, 1),
                "peak_rss_mb": round(getattr(result, "peak_rss_mb", 0.0) or 0.0, 1),
                "mse": rec.mse,
                "fvu": rec.fvu,
                "mean_l0": rec.mean_l0,
                "r_alive": rec.r_alive,
                "ntp_clean": ntp.clean,
                "ntp_spliced": ntp.spliced,
                "delta_ntp": ntp.delta,
                "domains": {d: {"n_pairs": s.n_pairs, "l0_t": s.l0_t, "i_cdf": s.i_cdf, "probe": {str(kk): v for kk, v in s.probe.items()}} for d, s in scores.items()},
                "l0_t_total": sum(s.l0_t for s in scores.values()),
                "i_cdf_mean": sum(s.i_cdf for s in scores.values()) / len(scores),
                "metrics_seconds": round(time.perf_counter() - t0, 1),
            }
            _write_json(sae_dir / "freq.json", freq_all)
            _write_json(metrics_path, entry)
            report["configs"].append(entry)
            log(
                f"[{point.name} k={k}] FVU {rec.fvu:.3f}  R_alive {rec.r_alive:.1%}  dNTP {ntp.delta:+.3f}  "
                f"L0,t {entry['l0_t_total']}  I_CDF {entry['i_cdf_mean']:.4f}  ({train_s:.0f} s train)"
            )
            del sae

    report["recommended"] = recommend(report["configs"])
    timings["total"] = time.perf_counter() - t_all
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    _write_json(out / "selection.json", report)
    (out / "selection.md").write_text(selection_markdown(report))
    plot_path = plot_cdf(out, report)
    if plot_path:
        report["plot"] = str(plot_path)
    _write_json(out / "build.json", {"config": cfg.model_dump(mode="json"), "timings_s": report["timings_s"]})
    return report


def recommend(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pick the config with the most concept-distinguishing features (sum of L0,t over domains), ties by I_CDF.

    This is the paper's criterion: L0,t and I_CDF track the number of concept-specific features that survive
    explanation, which reconstruction metrics alone do not predict.
    """
    if not configs:
        raise ValueError("no SAE configs to recommend from")
    best = max(configs, key=lambda c: (c["l0_t_total"], c["i_cdf_mean"]))
    return {
        "point": best["point"],
        "k": best["k"],
        "why": f"highest total L0,t ({best['l0_t_total']}) over domains"
        + f", I_CDF {best['i_cdf_mean']:.4f}; FVU {best['fvu']:.3f}, dNTP {best['delta_ntp']:+.3f}",
    }


def selection_markdown(report: dict[str, Any]) -> str:
    """The paper-style table (Table 1 columns plus per-domain L0,t and I_CDF) as markdown."""
    configs = report["configs"]
    if not configs:
        return "No configs.\n"
    domains = sorted(configs[0]["domains"])
    t = report["t"]
    lines = [
        f"## SAE selection for {report['model']['name']}",
        "",
        "| point | k | FVU | MSE | R_alive | mean L0 | dNTP loss | "
        + f"L0,t={t} (sum) | I_CDF (mean) | probe acc k=1/5 (mean) | train tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        p1 = sum(d["probe"].get("1", 0) for d in c["domains"].values()) / len(c["domains"])
        p5 = sum(d["probe"].get("5", 0) for d in c["domains"].values()) / len(c["domains"])
        lines.append(
            f"| {c['point']} | {c['k']} | {c['fvu']:.3f} | {c['mse']:.4g} | {c['r_alive']:.1%} | {c['mean_l0']:.1f} | "
            f"{c['delta_ntp']:+.3f} | {c['l0_t_total']} | {c['i_cdf_mean']:.4f} | {p1:.2f} / {p5:.2f} | {c['train_tokens_per_s']:,.0f} |"
        )
    lines += ["", f"### L0,t={t} per domain", "", "| point | k | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
    for c in configs:
        lines.append(f"| {c['point']} | {c['k']} | " + " | ".join(str(c["domains"][d]["l0_t"]) for d in domains) + " |")
    lines += ["", "### I_CDF per domain", "", "| point | k | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
    for c in configs:
        lines.append(f"| {c['point']} | {c['k']} | " + " | ".join(f"{c['domains'][d]['i_cdf']:.4f}" for d in domains) + " |")
    rec = report.get("recommended")
    if rec:
        lines += ["", f"**Recommended:** {rec['point']} k={rec['k']} — {rec['why']}."]
    if "timings_s" in report:
        lines += ["", "Stage timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items())]
    return "\n".join(lines) + "\n"


def plot_cdf(out: Path, report: dict[str, Any]) -> Path | None:
    """CDF of delta frequency per k (all domains pooled), like the paper's Figure 3; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch
    except ImportError:
        return None
    from safesail_training.select import cdf_curve

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in report["configs"]:
        freq_path = out / "saes" / c["point"] / f"k{c['k']}" / "freq.json"
        if not freq_path.is_file():
            continue
        freqs = json.loads(freq_path.read_text())
        pooled = torch.tensor([sum(v) / len(freqs) for v in zip(*freqs.values())])
        xs, cdf = cdf_curve(pooled)
        ax.plot(xs.numpy(), cdf.numpy(), label=f"{c['point']} k={c['k']} (I_CDF {c['i_cdf_mean']:.3f})")
    ax.set_xlabel("delta frequency (concept fires, de-concept twin does not)")
    ax.set_ylabel("share of features with freq <= x")
    ax.set_ylim(0.9, 1.001)
    ax.set_title("CDF of concept delta frequency per SAE config")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "selection.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
