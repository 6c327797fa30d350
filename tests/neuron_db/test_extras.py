"""Optional database files: the competition (exact TopK firing) and the risk head."""

from __future__ import annotations

import json

import pytest
import torch

from safesail_neuron_db import ChecksumError, ManifestError, NeuronDB
from safesail_neuron_db.competition import competition_bytes, quantize_rows
from safesail_neuron_db.publish import add_files
from tests.neuron_db.factory import FINGERPRINT, make_db


def test_add_files_updates_manifest_and_keeps_data(tmp_path):
    path = make_db(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "manifest.json"}
    W = torch.randn(160, 16)
    add_files(path, {"competition.safetensors": competition_bytes({3: (W, torch.randn(160), 32)}, FINGERPRINT),
                     "risk_head.json": b'{"schema": 1}\n'})
    for name, data in before.items():
        assert (path / name).read_bytes() == data
    with NeuronDB.open(path) as db:
        assert db.has_file("competition.safetensors") and db.extra_text("risk_head.json") == '{"schema": 1}\n'
        comp = db.competition(3)
        assert comp["k"] == 32 and comp["W_enc"].dtype == torch.float16
        step = W.abs().amax(1, keepdim=True) / 127
        assert ((comp["W_enc"].float() - W).abs() <= step / 28 + 2e-3 * W.abs()).all()  # 12-bit code + fp16
        with pytest.raises(ValueError, match="optional"):
            db.extra_text("features.sqlite")


def test_database_without_extras_reports_none(tmp_path):
    with NeuronDB.open(make_db(tmp_path)) as db:
        assert db.extra_text("risk_head.json") is None and db.competition(3) is None


def test_tampered_extra_file_fails_the_checksum(tmp_path):
    path = make_db(tmp_path)
    add_files(path, {"risk_head.json": b'{"schema": 1}\n'})
    (path / "risk_head.json").write_bytes(b'{"schema": 2}\n')
    with pytest.raises(ChecksumError, match="risk_head.json"):
        NeuronDB.open(path)


def test_unknown_files_are_rejected(tmp_path):
    path = make_db(tmp_path)
    with pytest.raises(ValueError, match="optional database files"):
        add_files(path, {"notes.txt": b"x"})
    m = json.loads((path / "manifest.json").read_text())
    m["files"]["notes.txt"] = m["files"]["features.sqlite"]
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="unknown files"):
        NeuronDB.open(path)


@pytest.mark.parametrize("d", [40, 41])
def test_12bit_rows_round_trip_within_a_28th_of_a_step(d):
    W = torch.randn(50, d) * torch.linspace(0.01, 10, 50).unsqueeze(-1)
    W[3] = 0
    step = (W.abs().amax(1) / 127).unsqueeze(-1)
    q8 = quantize_rows(W, residual=False)
    assert ((q8.dequantize(torch.float32) - W).abs() <= step / 2 + 1e-6).all()
    q = quantize_rows(W)
    back = q.dequantize(torch.float32)
    assert ((back - W).abs() <= step / 28 + 1e-6).all()
    assert (back[3] == 0).all() and q.r_packed.shape == (50, (d + 1) // 2)
    assert ((back - W).abs().mean() < (q8.dequantize(torch.float32) - W).abs().mean() / 8)
