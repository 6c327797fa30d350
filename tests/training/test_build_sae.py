"""The end-to-end SAE build on a tiny random model: artefacts, report, caching, bad config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safesail_training.build_sae import BuildSAEConfig, recommend, run_build, selection_markdown
from safesail_training.corpus.pairs import load_pairs


@pytest.fixture()
def small_inputs(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"The weather {i} is sunny and the fox jumps over the dog {i}." for i in range(500)))
    pairs = tmp_path / "pairs.jsonl"
    picked = []
    for dom in ("violence", "weapons"):
        picked += [p for p in load_pairs(domains=[dom]) if p.lang == "en"][:6]
    pairs.write_text("\n".join(p.model_dump_json() for p in picked) + "\n")
    return corpus, pairs


def test_tiny_build_end_to_end(tiny_model_dirs, small_inputs, tmp_path: Path) -> None:
    corpus, pairs = small_inputs
    cfg = BuildSAEConfig(
        model=str(tiny_model_dirs["llama"]),
        out_dir=tmp_path / "out",
        points=["layers.1.mlp_out"],
        train_tokens=6000,
        eval_records=20,
        ntp_records=5,
        ks=[8, 4],
        expansion=2,
        batch_size=128,
        user_corpus=[corpus],
        replace_corpus=True,
        pairs=[pairs],
    )
    logs: list[str] = []
    report = run_build(cfg, log=logs.append, progress=False)
    assert [c["k"] for c in report["configs"]] == [4, 8]
    for c in report["configs"]:
        assert 0 <= c["fvu"] < 1.5 and 0 < c["r_alive"] <= 1 and c["mean_l0"] <= c["k"]
        assert set(c["domains"]) == {"violence", "weapons"} and c["domains"]["violence"]["n_pairs"] == 6
        sae_dir = tmp_path / "out" / "saes" / "layers.1.mlp_out" / f"k{c['k']}"
        assert (sae_dir / "cfg.json").is_file() and (sae_dir / "sae.safetensors").is_file()
        sae_cfg = json.loads((sae_dir / "cfg.json").read_text())
        assert sae_cfg["hook_point"] == "layers.1.mlp_out" and sae_cfg["model_id"].startswith("llama@sha256:")
    out = tmp_path / "out"
    assert (out / "selection.md").read_text().startswith("## SAE selection")
    assert json.loads((out / "selection.json").read_text())["recommended"]["k"] in (4, 8)
    assert (out / "selection.png").is_file()
    logs.clear()
    again = run_build(cfg, log=logs.append, progress=False)
    assert sum("cached" in line for line in logs) == 3  # harvest + two SAEs
    assert "pair_acts:layers.1.mlp_out" not in again["timings_s"]  # nothing recomputed


def test_recommend_prefers_more_concept_features() -> None:
    a = {"point": "p", "k": 16, "l0_t_total": 3, "i_cdf_mean": 0.1, "fvu": 0.3, "delta_ntp": 0.1}
    b = {"point": "p", "k": 64, "l0_t_total": 9, "i_cdf_mean": 0.05, "fvu": 0.2, "delta_ntp": 0.05}
    assert recommend([a, b])["k"] == 64
    with pytest.raises(ValueError, match="no SAE configs"):
        recommend([])


def test_bad_build_config() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        BuildSAEConfig(ks=[0, 16])
    with pytest.raises(ValueError, match="layers.<layer>.<site>"):
        BuildSAEConfig(points=["mlp"])
    with pytest.raises(ValueError, match="extra"):
        BuildSAEConfig(bogus=1)


def test_markdown_handles_empty() -> None:
    assert selection_markdown({"configs": [], "t": 0.25, "model": {"name": "x"}}) == "No configs.\n"


def test_train_only_build_skips_metrics_and_reuses_finished_saes(tiny_model_dirs, small_inputs, tmp_path: Path) -> None:
    corpus, pairs = small_inputs
    cfg = BuildSAEConfig(
        model=str(tiny_model_dirs["qwen2"]), out_dir=tmp_path / "out", points=["layers.1.mlp_out", "layers.2.mlp_out"],
        train_tokens=3000, eval_records=20, ks=[4], expansion=2, batch_size=128, user_corpus=[corpus], replace_corpus=True, pairs=[pairs],
    )
    logs: list[str] = []
    out = run_build(cfg, log=logs.append, progress=False, measure=False)
    assert set(out["timings_s"]) >= {"train:layers.1.mlp_out:k4", "train:layers.2.mlp_out:k4"}
    for p in cfg.points:
        assert (tmp_path / "out" / "saes" / p / "k4" / "sae.safetensors").is_file()
        assert not (tmp_path / "out" / "saes" / p / "k4" / "metrics.json").exists()
    again = run_build(cfg, log=logs.append, progress=False, measure=False)
    assert not any(k.startswith("train:") for k in again["timings_s"])  # finished SAEs are not retrained
