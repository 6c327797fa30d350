"""Offline pipeline commands: `build-sae`, `build-db`, `harvest`, `train`, `select`, and the `demo` tour.

These front the `safesail_training` package; every import of it happens inside a command, so the runtime CLI
never loads training code it does not use. Bad options, files and models go through `cli/common.py`
(`user_errors`, `fail`): red ``error:`` lines on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safesail_guard.cli.common import fail as _fail
from safesail_guard.cli.common import user_errors


def build_sae(
    out_dir: Annotated[Path, typer.Option("--out", help="Build directory (resumable; not committed).")] = Path("runs/smollm2-135m-instruct"),
    model: Annotated[str, typer.Option(help="'embedded', a HF model directory, a .gguf file, or a cached HF id.")] = "embedded",
    point: Annotated[list[str] | None, typer.Option("--point", help="Hook point(s), e.g. layers.14.mlp_out (repeatable).")] = None,
    k: Annotated[list[int] | None, typer.Option("--k", help="TopK values to sweep (repeatable). Default 16 32 64 128 256.")] = None,
    tokens: Annotated[int, typer.Option(help="Training activations to harvest per point.")] = 1_000_000,
    expansion: Annotated[int, typer.Option(help="Dictionary size as a multiple of d_model.")] = 10,
    corpus: Annotated[list[Path] | None, typer.Option("--corpus", help="Your own .jsonl/.txt corpus files (added to the built-in corpus).")] = None,
    replace_corpus: Annotated[bool, typer.Option(help="Train on --corpus files only.")] = False,
    pairs: Annotated[list[Path] | None, typer.Option("--pairs", help="Concept-pair JSONL files (default: the built-in pairs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for corpus order, init and training.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    harvest_only: Annotated[bool, typer.Option(help="Stop after harvesting activations (rerun without it to continue).")] = False,
) -> None:
    """Harvest activations, train a TopK SAE per k, measure FVU/R_alive/dNTP and select a config with L0,t and I_CDF."""
    from safesail_training.build_sae import BuildSAEConfig, run_build

    with user_errors():
        overrides: dict[str, Any] = {}
        if point:
            overrides["points"] = point
        if k:
            overrides["ks"] = k
        cfg = BuildSAEConfig(
            model=model,
            out_dir=out_dir,
            train_tokens=tokens,
            expansion=expansion,
            user_corpus=corpus or [],
            replace_corpus=replace_corpus,
            pairs=pairs or [],
            seed=seed,
            **overrides,
        )
        report = run_build(cfg, progress=not quiet, harvest_only=harvest_only)
    if harvest_only:
        print(f"Harvest done in {out_dir}; run `safesail build-sae` with the same options to train and select.")
        return
    from safesail_training.build_sae import selection_markdown

    print()
    print(selection_markdown(report))
    print(f"Report: {out_dir / 'selection.md'}" + (f"; plot: {report['plot']}" if report.get("plot") else ""))


def select(
    build_dir: Annotated[Path, typer.Argument(help="A build directory made by `safesail build-sae`.")] = Path("runs/smollm2-135m-instruct"),
) -> None:
    """Print the selection table (FVU, R_alive, dNTP, L0,t, I_CDF, probing) of a finished or partial build."""
    import json

    from safesail_training.build_sae import recommend, selection_markdown

    configs = []
    for metrics in sorted(build_dir.glob("saes/*/k*/metrics.json"), key=lambda p: (p.parent.parent.name, int(p.parent.name[1:]))):
        try:
            configs.append(json.loads(metrics.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            _fail(f"{metrics} is unreadable: {exc}")
    if not configs:
        _fail(f"no trained SAEs with metrics under {build_dir}/saes/; run `safesail build-sae --out {build_dir}` first")
    summary_path = build_dir / "selection.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    report = {"model": summary.get("model", {"name": build_dir.name}), "t": summary.get("t", 0.25), "configs": configs}
    report["recommended"] = recommend(configs)
    print(selection_markdown(report))


def harvest_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory for shards (one folder per point).")],
    model: Annotated[str, typer.Option(help="Model spec.")] = "embedded",
    point: Annotated[list[str] | None, typer.Option("--point", help="Hook point(s) (repeatable).")] = None,
    tokens: Annotated[int, typer.Option(help="Tokens to harvest.")] = 1_000_000,
    corpus: Annotated[list[Path] | None, typer.Option("--corpus", help=".jsonl/.txt files; default: the built-in corpus.")] = None,
    seed: Annotated[int, typer.Option(help="Corpus shuffle seed.")] = 0,
    dtype: Annotated[str, typer.Option(help="Shard dtype: float16 or bfloat16.")] = "float16",
    keep_special: Annotated[bool, typer.Option(help="Also store special-token activations.")] = False,
) -> None:
    """Stream a corpus through the model and store activations at hook points as resumable shards."""
    from safesail_guard.models import load_model
    from safesail_training.harvest import HarvestConfig, harvest

    with user_errors():
        cfg = HarvestConfig(points=point or ["layers.14.mlp_out"], max_tokens=tokens, dtype=dtype, exclude_special=not keep_special)  # type: ignore[arg-type]
        if corpus:
            from safesail_training.corpus.general import iter_user_texts

            records = list(iter_user_texts(corpus))
            corpus_id = "user:" + ",".join(str(c) for c in corpus)
        else:
            from safesail_training.corpus.general import iter_general

            records = list(iter_general(seed=seed, shuffle=True))
            corpus_id = f"builtin:seed{seed}"
        loaded = load_model(model)
        res = harvest(loaded, records, out_dir, cfg, corpus=corpus_id)
    print(f"{res.n_tokens:,} tokens at {', '.join(res.points)} in {out_dir}" + (f" ({res.tokens_per_s:,.0f} tok/s)" if res.tokens_per_s else ""))


def train_cmd(
    shards: Annotated[Path, typer.Argument(help="A shard folder of one hook point, e.g. runs/x/acts/train/layers.14.mlp_out.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the SAE (cfg.json + sae.safetensors).")],
    k: Annotated[int, typer.Option(help="Active latents per token.")] = 64,
    expansion: Annotated[int, typer.Option(help="Dictionary size / d_model.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Tokens per step.")] = 4096,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    no_resume: Annotated[bool, typer.Option(help="Ignore an existing checkpoint.")] = False,
) -> None:
    """Train one TopK SAE from activation shards (resumes from its checkpoint by default)."""
    from safesail_training.shards import open_shards
    from safesail_training.train import TrainConfig, train_sae

    with user_errors():
        reader = open_shards(shards)
        res = train_sae(reader, TrainConfig(k=k, expansion=expansion, batch_size=batch_size, seed=seed), out_dir, resume=not no_resume)
    print(f"trained on {res.tokens_seen:,} tokens in {res.seconds:.0f} s ({res.tokens_per_s:,.0f} tok/s); saved to {out_dir}")


def build_db(
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Build directory shared with build-sae (SAEs, caches; not committed).")] = Path("runs/smollm2-135m-instruct"),
    out: Annotated[Path | None, typer.Option("--out", help="Database directory to write. Default: <work-dir>/neuron_db.")] = None,
    model: Annotated[str, typer.Option(help="'embedded', a HF model directory, a .gguf file, or a cached HF id.")] = "embedded",
    point: Annotated[list[str] | None, typer.Option("--point", help="Hook points, one site (repeatable). Default layers 6, 14, 24 mlp_out.")] = None,
    k: Annotated[int, typer.Option(help="TopK of the SAEs to use (trained if missing).")] = 128,
    explainer: Annotated[str, typer.Option(help="offline (no LLM) or openai (SAFESAIL_LLM_BASE_URL / _MODEL / _API_KEY).")] = "offline",
    simulator: Annotated[str, typer.Option(help="embedding (offline, all-MiniLM-L6-v2) or openai.")] = "embedding",
    spscorer: Annotated[str, typer.Option(help="offline (labelled proxy) or openai.")] = "offline",
    max_features: Annotated[int, typer.Option(help="Cap of features per layer.")] = 400,
    scoring_features: Annotated[int, typer.Option(help="Also keep up to N latents a pair-fitted head over the whole dictionary weights most (scoring features; 0 = off).")] = 0,
    target_fdr: Annotated[float, typer.Option(help="Raise the recall bar until a side-swap null predicts at most this false-discovery rate; 1 keeps the paper's fixed 0.75/0.2 bars.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed (explanation set, examples, map).")] = 0,
    pairs: Annotated[list[Path] | None, typer.Option("--pairs", help="Concept-pair JSONL files (default: the built-in pairs).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Turn trained SAEs into a neuron database: filter, explain, simulate, score, map (resumable)."""
    from safesail_guard.llm_config import LLMError
    from safesail_training.build_db import run_build_db
    from safesail_training.build_db_config import BuildDBConfig

    with user_errors(LLMError):
        overrides: dict[str, Any] = {"points": point} if point else {}
        cfg = BuildDBConfig(
            model=model, work_dir=work_dir, out=out, k=k, explainer=explainer, simulator=simulator, spscorer=spscorer,  # type: ignore[arg-type]
            max_features_per_layer=max_features, scoring_features=scoring_features, seed=seed, pairs=pairs or [], target_fdr=None if target_fdr >= 1 else target_fdr, **overrides,
        )
        summary = run_build_db(cfg, progress=not quiet)
    print(f"{summary['features']} features -> {summary['db']}; inspect with `safesail db info --db {summary['db']}`")


def register(app: typer.Typer) -> None:
    """Attach pipeline commands to the main app."""
    app.command("build-sae")(build_sae)
    app.command("build-db")(build_db)
    app.command("select")(select)
    app.command("harvest")(harvest_cmd)
    app.command("train")(train_cmd)

    @app.command("demo")
    def demo(query: Annotated[str, typer.Option(help="Words to search the shipped database for.")] = "knife attack") -> None:
        """A quick offline tour of the shipped neuron database (no model load): its summary, a search, one feature."""
        from safesail_guard.cli import db as db_cli

        print("safesail demo: the shipped neuron database of SmolLM2-135M-Instruct safety features")
        print("(rebuild it with `make db`; train SAE sweeps with `make build-sae`).\n")
        db_cli.info(db=None, as_json=False)
        print(f"\n$ safesail db search {query!r} --limit 5")
        db_cli.search(query, limit=5, layer=None, domain=None, db=None, as_json=False)
        from safesail_neuron_db import NeuronDB

        with NeuronDB.open(verify=False) as handle:
            hits = handle.search(query, limit=1)
        if hits:
            print(f"\n$ safesail db show {hits[0].id}")
            db_cli.show(hits[0].id, examples=3, db=None, as_json=False)
