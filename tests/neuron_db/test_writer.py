"""DatabaseWriter: every field round-trips, validation errors are clear, builds are deterministic and atomic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safesail_neuron_db import DatabaseWriter, NeuronDB, load_manifest
from safesail_neuron_db import publish as publish_mod
from safesail_neuron_db import writer as writer_mod
from safesail_neuron_db.records import ActivationExample, Explanation, SimulationScore
from tests.neuron_db.factory import FINGERPRINT, make_db, make_inputs, write_db, writer_for


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_roundtrip_every_field(tmp_path: Path) -> None:
    inputs = make_inputs(n_layers=3, n_features=14)
    path = write_db(tmp_path / "db", inputs)
    with NeuronDB.open(path) as db:
        assert db.feature_ids() == [f.rec.feature_id for f in sorted(inputs.features, key=lambda f: (f.rec.layer, f.rec.latent))]
        for f in inputs.features:
            v = db.get(f.rec.feature_id)
            assert v.records() == f.rec
            assert v.explanation_record() == f.explanation
            assert v.simulation_scores == f.scores
            assert v.superposition == f.sp
            assert v.threshold == f.threshold
            assert (v.map_x, v.map_y) == (f.map_xy if f.map_xy else (None, None))
            best = max(f.rec.concepts, key=lambda c: (c.precision, c.recall))
            assert v.domain == best.level0
            ok_token = [s for s in f.scores if s.method == "token" and s.status == "ok"]
            assert v.token_corr == (ok_token[0].corr if ok_token else None)
            assert v.segment_corr == next(s.corr for s in f.scores if s.method == "segment")
            headline = {s.simulator for s in [*ok_token[:1], f.scores[1]]}
            assert v.simulator == "; ".join(sorted(headline))
            assert v.sp_score == (f.sp.value if f.sp else None)
            assert v.sp_method == (f.sp.method if f.sp else None)
            if f.explanation is None:
                assert (v.explanation, v.explanation_status, v.explainer) == (None, "skipped", None)
            else:
                assert (v.explanation, v.explanation_status) == (f.explanation.text, f.explanation.status)
        for layer, enc in inputs.encoders.items():
            got = db.encoder(layer)
            assert set(got) == set(enc)
            for name, t in enc.items():
                assert torch.equal(got[name], t.to(got[name].dtype)), (layer, name)


def test_activations_are_rounded_to_4_decimals(tmp_path: Path) -> None:
    inputs = make_inputs(n_layers=1, n_features=2)
    ex = inputs.features[0].rec.examples[0]
    inputs.features[0].rec.examples[0] = ActivationExample(ex.tokens, [0.123456789] + ex.acts[1:], ex.levels,
                                                           ex.max_act, ex.kind, ex.level, ex.source)
    path = write_db(tmp_path / "db", inputs)
    with NeuronDB.open(path) as db:
        assert db.get(inputs.features[0].rec.feature_id).examples[0].acts[0] == 0.1235


def test_encoder_rows_are_sorted_by_latent_and_readable_by_safetensors(tmp_path: Path) -> None:
    inputs = make_inputs(n_layers=1, n_features=5)
    enc = inputs.encoders[3]
    perm = torch.tensor([3, 0, 4, 2, 1])
    w = DatabaseWriter(tmp_path / "db", model=inputs.model, site="mlp_out", sae_configs=inputs.sae_configs,
                       build={}, seed=0)
    w.add_encoder(3, **{k: (v if k == "b_dec" else v[perm]) for k, v in enc.items()})
    for f in inputs.features:
        w.add_feature(f.rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=f.map_xy, threshold=f.threshold)
    path = w.finish()
    raw = load_file(str(path / "encoders.safetensors"))
    assert raw["layers.3.latents"].tolist() == sorted(enc["latents"].tolist())
    assert torch.equal(raw["layers.3.W_enc"], enc["W_enc"])  # factory rows are already in latent order
    assert raw["layers.3.latents"].dtype == torch.int64 and raw["layers.3.W_dec"].dtype == torch.float32
    from safetensors import safe_open

    with safe_open(str(path / "encoders.safetensors"), framework="pt") as f:
        assert f.metadata()["schema_version"] == "1"
        assert f.metadata()["model_fingerprint"] == FINGERPRINT


def test_manifest_content_and_no_paths_or_timestamps(tmp_path: Path) -> None:
    path = make_db(tmp_path)
    text = (path / "manifest.json").read_text()
    doc = json.loads(text)
    assert str(tmp_path) not in text and "/abs/ignored" not in text  # the model's `path` is dropped
    assert doc["model"] == {"name": "tiny-test-model", "source": "directory", "fingerprint": FINGERPRINT}
    assert doc["schema_version"] == 1 and doc["site"] == "mlp_out" and doc["layers"] == [3, 7]
    assert doc["created_by"].startswith("safesail-guard ")
    assert not any("time" in k or "date" in k or k == "created_at" for k in doc)
    assert set(doc["sae"]) == {"3", "7"} and doc["sae"]["3"]["hook"] == "layers.3.mlp_out"
    assert doc["counts"]["features"] == 12 and doc["counts"]["per_layer"] == {"3": 6, "7": 6}
    assert doc["counts"]["per_domain"]["sexual"] == 4  # 2 primary + 2 secondary
    for name in ("features.sqlite", "encoders.safetensors"):
        assert doc["files"][name] == {"sha256": _sha(path / name), "bytes": (path / name).stat().st_size}
    assert load_manifest(path).map_method == "umap-test"


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    a = make_db(tmp_path, name="a")
    b = make_db(tmp_path, name="b")
    c = make_db(tmp_path, name="c", seed=1)
    for name in ("manifest.json", "features.sqlite", "encoders.safetensors"):
        assert _sha(a / name) == _sha(b / name), name
        assert _sha(a / name) != _sha(c / name), name  # different content must show


def test_finish_failure_keeps_old_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_db(tmp_path)
    before = {n: _sha(path / n) for n in ("manifest.json", "features.sqlite", "encoders.safetensors")}
    w = writer_for(path, make_inputs(n_features=5, seed=1))

    def boom(target: Path, encoders: object, model_fingerprint: str) -> None:
        target.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(writer_mod, "write_encoders", boom)
    with pytest.raises(OSError, match="disk full"):
        w.finish()
    assert {n: _sha(path / n) for n in before} == before
    assert _leftovers(tmp_path) == []
    with NeuronDB.open(path) as db:
        assert len(db) == 12


def test_failed_swap_keeps_old_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_db(tmp_path)
    w = writer_for(path, make_inputs(n_features=5, seed=1))
    monkeypatch.setattr(publish_mod, "_swap_into_place", lambda new, target: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        w.finish()
    assert _leftovers(tmp_path) == []
    with NeuronDB.open(path) as db:
        assert len(db) == 12


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_existing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    used: list[bool] = []
    real = publish_mod._rename_exchange

    def spy(a: Path, b: Path) -> bool:
        used.append(real(a, b) if exchange else False)
        return used[-1]

    monkeypatch.setattr(publish_mod, "_rename_exchange", spy)
    path = make_db(tmp_path)
    (path / "stale.txt").write_text("from the old build")
    write_db(path, make_inputs(n_features=5, seed=1))
    assert not (path / "stale.txt").exists()
    assert _leftovers(tmp_path) == []
    with NeuronDB.open(path) as db:
        assert len(db) == 5
    if exchange and used == [False]:
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported on this filesystem")
    assert used == [exchange]  # the swap path under test was really taken


def test_refuses_to_replace_unrelated_directory(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing to replace"):
        write_db(target, make_inputs(n_features=3))
    assert (target / "notes.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_db(empty, make_inputs(n_features=3))
    assert (empty / "manifest.json").is_file()


def _writer(tmp_path: Path, n_features: int = 4) -> tuple[DatabaseWriter, object]:
    inputs = make_inputs(n_layers=1, n_features=n_features)
    w = DatabaseWriter(tmp_path / "db", model=inputs.model, site="mlp_out", sae_configs=inputs.sae_configs,
                       build={}, seed=0)
    return w, inputs


def test_finish_refuses_incomplete_content(tmp_path: Path) -> None:
    w, inputs = _writer(tmp_path)
    with pytest.raises(ValueError, match="no features"):
        w.finish()
    f = inputs.features[0]
    w.add_feature(f.rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=f.map_xy, threshold=f.threshold)
    with pytest.raises(ValueError, match="duplicate feature id"):
        w.add_feature(f.rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=None, threshold=f.threshold)
    with pytest.raises(ValueError, match="no encoder"):
        w.finish()
    w.add_encoder(3, **inputs.encoders[3])  # has rows for all 4 features, only 1 added
    with pytest.raises(ValueError, match="rows without a feature record"):
        w.finish()
    assert not (tmp_path / "db").exists() and _leftovers(tmp_path) == []


def test_threshold_must_match_encoder(tmp_path: Path) -> None:
    w, inputs = _writer(tmp_path, n_features=1)
    w.add_encoder(3, **inputs.encoders[3])
    f = inputs.features[0]
    w.add_feature(f.rec, explanation=f.explanation, scores=f.scores, sp=f.sp, map_xy=f.map_xy, threshold=f.threshold + 1)
    with pytest.raises(ValueError, match="threshold"):
        w.finish()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"W_enc": torch.zeros(4, 5)}, "W_dec must have shape"),
        ({"b_enc": torch.zeros(3)}, "b_enc must have shape"),
        ({"b_dec": torch.zeros(17)}, "b_dec must have shape"),
        ({"latents": torch.tensor([5, 5, 6, 7])}, "duplicate latents"),
        ({"latents": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "integer tensor"),
        ({"threshold": torch.full((4,), float("nan"))}, "NaN"),
        ({"W_dec": torch.zeros(4, 16, dtype=torch.int32)}, "floating-point"),
    ],
)
def test_add_encoder_validates_shapes(tmp_path: Path, change: dict, message: str) -> None:
    w, inputs = _writer(tmp_path)
    with pytest.raises(ValueError, match=message):
        w.add_encoder(3, **{**inputs.encoders[3], **change})


def test_add_encoder_rejects_unknown_layer_and_repeats(tmp_path: Path) -> None:
    w, inputs = _writer(tmp_path)
    with pytest.raises(ValueError, match="no SAE config"):
        w.add_encoder(9, **inputs.encoders[3])
    w.add_encoder(3, **inputs.encoders[3])
    with pytest.raises(ValueError, match="added twice"):
        w.add_encoder(3, **inputs.encoders[3])


def test_add_feature_validates_records(tmp_path: Path) -> None:
    w, inputs = _writer(tmp_path)
    f = inputs.features[0]
    fid = f.rec.feature_id
    kw = dict(scores=f.scores, sp=f.sp, map_xy=f.map_xy, threshold=f.threshold)
    with pytest.raises(ValueError, match="must have text None"):
        w.add_feature(f.rec, explanation=Explanation(fid, "made up", "failed", "offline"), **kw)
    with pytest.raises(ValueError, match="is for feature"):
        w.add_feature(f.rec, explanation=Explanation("3_999", "x", "ok", "offline"), **kw)
    bad = SimulationScore(fid, "token", "sim", float("nan"), "ok")
    with pytest.raises(ValueError, match="finite"):
        w.add_feature(f.rec, explanation=f.explanation, scores=[bad], sp=None, map_xy=None, threshold=0.1)
    with pytest.raises(ValueError, match="finite"):
        w.add_feature(f.rec, explanation=f.explanation, scores=[], sp=None, map_xy=(0.0, float("inf")), threshold=0.1)
    f.rec.feature_id = "3_1"
    with pytest.raises(ValueError, match="does not match"):
        w.add_feature(f.rec, explanation=None, scores=[], sp=None, map_xy=None, threshold=0.1)


def test_constructor_validates_model_and_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        DatabaseWriter(tmp_path, model={"name": "m", "source": "x"}, site="mlp_out", sae_configs={}, build={}, seed=0)
    with pytest.raises(ValueError, match="JSON-serializable"):
        DatabaseWriter(tmp_path, model={"name": "m", "source": "x", "fingerprint": "f"}, site="mlp_out",
                       sae_configs={}, build={"out": Path("/x")}, seed=0)
    with pytest.raises(ValueError, match="absolute path"):
        DatabaseWriter(tmp_path, model={"name": "m", "source": "x", "fingerprint": "f"}, site="mlp_out",
                       sae_configs={}, build={"runs": ["ok", {"dir": "/home/me/run"}]}, seed=0)
    with pytest.raises(ValueError, match="absolute path"):
        DatabaseWriter(tmp_path, model={"name": "m", "source": "x", "fingerprint": "f"}, site="mlp_out",
                       sae_configs={3: {"ckpt": "C:\\saes\\l3"}}, build={}, seed=0)
    DatabaseWriter(tmp_path, model={"name": "m", "source": "x", "fingerprint": "f"}, site="mlp_out",
                   sae_configs={3: {"ckpt": "saes/l3", "hook": "layers.3.mlp_out"}}, build={"note": "a/b"}, seed=0)
