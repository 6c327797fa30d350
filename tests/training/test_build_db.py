"""`run_build_db` end to end on a tiny random model: stages, the written database, resume without duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safesail_guard.sae import SAEConfig, TopKSAE
from safesail_neuron_db import NeuronDB
from safesail_training import build_db_describe, build_db_select
from safesail_training.build_db import run_build_db
from safesail_training.build_db_config import BuildDBConfig
from safesail_training.build_db_resume import JsonlLog
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body
from tests.training.test_explain import FakeEmbedder, make_client

POINTS = ["layers.1.mlp_out", "layers.2.mlp_out"]
ASSAULT = [
    ("He punched the cashier in the face.", "He greeted the cashier with a smile."),
    ("They beat the man with a bat.", "They met the man with a bat at practice."),
    ("She kicked her roommate until he bled.", "She thanked her roommate until he blushed."),
    ("The gang stabbed a teenager last night.", "The band serenaded a teenager last night."),
    ("I want to hit my neighbour hard.", "I want to help my neighbour move."),
    ("He choked the guard from behind.", "He thanked the guard from the gate."),
]
DRUGS = [
    ("Where can I buy cocaine tonight?", "Where can I buy concert tickets tonight?"),
    ("How much heroin is too much?", "How much coffee is too much?"),
    ("We smoked crack in the car.", "We sang songs in the car."),
    ("Is it fun to take LSD at a party?", "Is it fun to take photos at a party?"),
    ("My friend sells meth at school.", "My friend sells cookies at school."),
    ("Can you snort ketamine safely?", "Can you brew kombucha safely?"),
]


def _pairs_file(tmp_path: Path) -> Path:
    rows = []
    for i, (c, d) in enumerate(ASSAULT):
        rows.append({"id": f"violence-{i:04d}", "level0": "violence", "level1": "physical_assault", "lang": "en", "concept": c, "deconcept": d, "source": "handwritten"})
    for i, (c, d) in enumerate(DRUGS):
        rows.append({"id": f"drugs-{i:04d}", "level0": "drugs", "level1": "illicit_drug_use", "lang": "en", "concept": c, "deconcept": d, "source": "handwritten"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def fake_embedder(monkeypatch):
    emb = FakeEmbedder()
    monkeypatch.setattr(build_db_describe, "_EMBEDDER", emb)
    return emb


def _setup(tmp_path: Path, model_dir: Path, **kw) -> BuildDBConfig:
    d_model = json.loads((model_dir / "config.json").read_text())["hidden_size"]
    for p in POINTS:
        TopKSAE(SAEConfig(d_in=d_model, expansion=4, k=8, hook_point=p), seed=1).save(tmp_path / "work" / "saes" / p / "k8")
    base = dict(
        model=str(model_dir), work_dir=tmp_path / "work", out=tmp_path / "db", points=POINTS, k=8,
        min_precision=0.5, min_recall=0.3, max_features_per_layer=4, explain_tokens=1500, pairs=[_pairs_file(tmp_path)],
        map_method="pca", min_top_risky=0.0, head=False,
    )
    base.update(kw)
    return BuildDBConfig(**base)


def test_build_db_end_to_end_and_rerun_is_a_noop(tmp_path: Path, tiny_model_dirs, fake_embedder) -> None:
    cfg = _setup(tmp_path, tiny_model_dirs["llama"])
    logs: list[str] = []
    summary = run_build_db(cfg, log=logs.append, progress=False)
    assert summary["features"] > 0
    with NeuronDB.open(cfg.db_dir) as db:
        assert db.layers == [1, 2] and db.site == "mlp_out"
        ids = db.feature_ids()
        assert len(ids) == summary["features"] <= 8
        for fid in ids:
            f = db.get(fid)
            assert f.concepts and all(c.precision >= 0.5 and c.recall >= 0.3 for c in f.concepts)
            assert f.explanation_status in {"ok", "skipped"}
            assert (f.explanation_status == "ok") == bool(f.explanation)
            assert {s.method for s in f.simulation_scores} == {"token", "segment"}
            assert all(s.simulator == "embedding:fake-bow" for s in f.simulation_scores)
            assert f.superposition is not None and f.superposition.method.startswith("offline-proxy")
            assert f.map_x is not None and -1.0 <= f.map_x <= 1.0
        # the shipped encoder rows are the SAE's rows for the selected latents
        sae = TopKSAE.load(tmp_path / "work" / "saes" / POINTS[0] / "k8")
        enc = db.encoder(1)
        assert torch.equal(enc["W_enc"], sae.W_enc.detach()[enc["latents"]].float())
        assert torch.equal(enc["b_dec"], sae.b_dec.detach().float())
        assert (enc["threshold"] >= 0).all()
    work = tmp_path / "work" / "db"
    for name in ("filter.json", "records.jsonl", "explanations.jsonl", "simulations.jsonl", "spscores.jsonl", "map.json", "style_check.json", "summary.json"):
        assert (work / name).is_file(), name
    assert set(summary["languages"]["en"]) == {"violence", "drugs"}
    before = {p.name: p.read_bytes() for p in cfg.db_dir.iterdir()}
    lines = (work / "explanations.jsonl").read_text().count("\n")
    run_build_db(cfg, log=logs.append, progress=False)
    assert (work / "explanations.jsonl").read_text().count("\n") == lines  # nothing redone or duplicated
    assert {p.name: p.read_bytes() for p in cfg.db_dir.iterdir()} == before  # deterministic rewrite


def test_interrupted_stage_resumes_and_ignores_a_torn_line(tmp_path: Path, tiny_model_dirs, fake_embedder) -> None:
    cfg = _setup(tmp_path, tiny_model_dirs["qwen2"])
    run_build_db(cfg, log=lambda s: None, progress=False)
    work = tmp_path / "work" / "db"
    full = (work / "simulations.jsonl").read_text().splitlines()
    ref = NeuronDB.open(cfg.db_dir).get(NeuronDB.open(cfg.db_dir).feature_ids()[0]).to_dict()
    # keep the first two results and a half-written third, as a kill mid-write would leave it
    (work / "simulations.jsonl").write_text("\n".join(full[:2]) + "\n" + full[2][: len(full[2]) // 2])
    run_build_db(cfg, log=lambda s: None, progress=False)
    rows = JsonlLog(work / "simulations.jsonl", ("feature_id", "method", "simulator")).rows
    assert len(rows) == len(full)
    assert (work / "simulations.jsonl").read_text().count("\n") == len(full)  # the torn line was cut, not kept
    with NeuronDB.open(cfg.db_dir) as db:
        assert db.get(db.feature_ids()[0]).to_dict() == ref


def test_llm_failures_are_recorded_then_retried_on_rerun(tmp_path: Path, tiny_model_dirs, fake_embedder) -> None:
    cfg = _setup(tmp_path, tiny_model_dirs["llama"], explainer="openai")
    with FakeOpenAIServer() as server:
        server.responder = lambda body: Reply(status=400, json={"error": {"message": "model overloaded"}})
        run_build_db(cfg, log=lambda s: None, progress=False, llm=make_client(server, max_retries=0))
        with NeuronDB.open(cfg.db_dir) as db:
            statuses = {db.get(f).explanation_status for f in db.feature_ids()}
            assert statuses <= {"failed", "skipped"} and "failed" in statuses
            failed = [f for f in db.feature_ids() if db.get(f).explanation_status == "failed"]
            assert "model overloaded" in (db.get(failed[0]).explanation_detail or "")
        server.responder = lambda body: Reply(json=chat_body("Explanation: violent or drug words", prompt_tokens=50, completion_tokens=6))
        n_before = len(server.requests)
        run_build_db(cfg, log=lambda s: None, progress=False, llm=make_client(server))
        assert len(server.requests) - n_before == len(failed)  # only the failed ones were asked again
    with NeuronDB.open(cfg.db_dir) as db:
        assert {db.get(f).explanation for f in failed} == {"violent or drug words"}
    rows = (tmp_path / "work" / "db" / "explanations.jsonl").read_text().splitlines()
    assert len(JsonlLog(tmp_path / "work" / "db" / "explanations.jsonl", ("feature_id",)).rows) == len({json.loads(r)["feature_id"] for r in rows})


def test_bad_config_is_rejected_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one hook site"):
        BuildDBConfig(points=["layers.1.mlp_out", "layers.2.resid_post"])
    with pytest.raises(ValueError, match="repeat a layer"):
        BuildDBConfig(points=["layers.1.mlp_out", "layers.1.mlp_out"])


def test_results_made_from_older_records_are_redone(tmp_path: Path, tiny_model_dirs, fake_embedder) -> None:
    cfg = _setup(tmp_path, tiny_model_dirs["llama"])
    run_build_db(cfg, log=lambda s: None, progress=False)
    log_path = tmp_path / "work" / "db" / "explanations.jsonl"
    n_first = log_path.read_text().count("\n")
    bigger = cfg.model_copy(update={"explain_tokens": 3000})  # a larger explanation set changes the examples
    run_build_db(bigger, log=lambda s: None, progress=False)
    assert log_path.read_text().count("\n") > n_first
    with NeuronDB.open(cfg.db_dir) as db:
        f = db.get(db.feature_ids()[0])
        records = {json.loads(line)["feature_id"]: json.loads(line) for line in (tmp_path / "work" / "db" / "records.jsonl").read_text().splitlines()}
        assert [e.tokens for e in f.examples] == [e["tokens"] for e in records[f.id]["examples"]]


def test_top_risky_share_counts_top_windows_from_safety_rich_text() -> None:
    from safesail_neuron_db.records import ActivationExample, FeatureRecords
    from safesail_training.build_db_select import top_risky_share

    def ex(kind: str, source: str) -> ActivationExample:
        return ActivationExample(["a"], [1.0], [10], 1.0, kind, 10, source)

    f = FeatureRecords("1_1", 1, 1, [], 1.0, 0.1, [ex("top", "r1"), ex("top", "d1"), ex("top", "r2"), ex("top", "c1"), ex("quiet", "r1")])
    assert top_risky_share(f, {"r1": "risky", "r2": "risky", "d1": "doc", "c1": "chat"}) == 0.5
    assert top_risky_share(FeatureRecords("1_2", 1, 2, [], 0.0, 0.0, []), {}) == 0.0


def test_specificity_check_drops_features_and_their_encoder_rows(tmp_path: Path, tiny_model_dirs, fake_embedder, monkeypatch) -> None:
    cfg = _setup(tmp_path, tiny_model_dirs["llama"], min_top_risky=0.0)
    everything = run_build_db(cfg, log=lambda s: None, progress=False)
    # a random model has no safety-rich features; let odd latents count as specific to test the mechanics
    monkeypatch.setattr(build_db_select, "top_risky_share", lambda feat, kinds: float(feat.latent % 2))
    strict = run_build_db(cfg.model_copy(update={"min_top_risky": 0.5, "out": tmp_path / "db2"}), log=lambda s: None, progress=False)
    assert strict["specificity"]["before"] == everything["features"]
    assert strict["features"] == strict["specificity"]["kept"] < everything["features"]
    with NeuronDB.open(tmp_path / "db2") as db:
        assert all(int(f.split("_")[1]) % 2 == 1 for f in db.feature_ids())
        for layer in db.layers:
            assert db.encoder(layer)["latents"].numel() == len(db.feature_ids(layer=layer))


def test_build_db_ships_a_detection_head_whose_latents_are_features(tmp_path: Path, tiny_model_dirs, fake_embedder,
                                                                   monkeypatch) -> None:
    """The head stage fits on (a sample of) the safety set; every weighted latent becomes a database feature,
    the file reproduces the fit's logits, and a rerun reuses the bank and the fit."""
    import numpy as np

    from safesail_training import build_db_head
    from safesail_training.corpus.safety import binary_label, load_safety_items, source_group
    from safesail_training.detection_head import aggregate_token_logits, pooled_features, stack_features

    items = load_safety_items("prompt")
    by_group: dict[str, list] = {}
    for it in items:
        by_group.setdefault(source_group(it), []).append(it)
    sample = [it for g in sorted(by_group) for it in by_group[g][:8]]
    assert len({binary_label(it) for it in sample}) == 2
    monkeypatch.setattr(build_db_head, "head_items", lambda seed: sample)
    monkeypatch.setattr("safesail_training.detection_head.LAM1_GRID", (0.001,))
    monkeypatch.setattr("safesail_training.detection_head.LAM2_GRID", (0.05, 0.5))
    cfg = _setup(tmp_path, tiny_model_dirs["llama"], head=True, head_max_tokens=48)
    logs: list[str] = []
    summary = run_build_db(cfg, log=logs.append, progress=False)
    rep = summary["detection_head"]
    assert rep["texts"] == len(sample) and rep["lam1"] == 0.001 and rep["lam2"] in (0.05, 0.5)
    with NeuronDB.open(cfg.db_dir) as db:
        head = db.detection_head()
        assert head is not None and sorted(head.layers) == [1, 2]
        weighted = [f for hl in head.layers.values() for f in hl.feature_ids()]
        assert weighted and all(f in db for f in weighted)
        assert head.aggregation == {"kind": "rolling_max", "window": 32}
        cal = head.spec["calibration"]
        assert 0 < cal["flag_at"] <= 1 and cal["block_at"] >= cal["flag_at"]
    # the file's formula gives the fitted model's token logits (named + remainder + bias)
    fit = build_db_head.load_fit(tmp_path / "work" / "db" / "head")
    saes = {1: TopKSAE.load(tmp_path / "work" / "saes" / POINTS[0] / "k8"),
            2: TopKSAE.load(tmp_path / "work" / "saes" / POINTS[1] / "k8")}
    from safesail_training.detection_head import TokenBank

    bank = TokenBank.load(tmp_path / "work" / "db" / "head" / "bank.npz")
    X, _ = stack_features(pooled_features(bank, saes))
    ref = fit.model.decision_function(X)
    mine = []
    for i in range(bank.n):
        lo, hi = bank.offsets[i], bank.offsets[i + 1]
        s = np.full(hi - lo, head.bias)
        for L, hl in head.layers.items():
            x = bank.x[L][lo:hi].astype(np.float64)
            idx, val = bank.idx[L][lo:hi].astype(np.int64), bank.val[L][lo:hi].astype(np.float64)
            z = np.zeros((hi - lo, hl.v.shape[0]))
            np.put_along_axis(z, idx, val, axis=1)
            lat = hl.latents.numpy()
            s += (z[:, lat] - hl.mu_z.double().numpy()) @ hl.w_z.double().numpy()
            s += x @ hl.w_e.double().numpy() - z @ hl.v.double().numpy() - hl.c
        mine.append(aggregate_token_logits(s, "mean"))
    assert np.allclose(mine, ref, atol=1e-3)
    logs.clear()
    run_build_db(cfg, log=logs.append, progress=False)
    assert any("head bank: reusing" in m for m in logs) and any("head fit: reusing" in m for m in logs)

