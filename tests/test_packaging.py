"""The wheel installs exactly our four distinctive top-level packages, with the corpus data, database and policies."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_top_level_names_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("safesail_guard-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"safesail_guard", "safesail_training", "safesail_neuron_db", "safesail_policies"}
    assert "training" not in top and "neuron_db" not in top and "policies" not in top
    assert any(n.startswith("safesail_training/corpus/data/pairs/") and n.endswith(".jsonl") for n in names)
    assert any(n.startswith("safesail_training/corpus/data/general/") for n in names)
    assert "safesail_training/corpus/data/taxonomy.json" in names
    assert "safesail_training/corpus/data/style_probe.jsonl" in names
    for f in ("default.yaml", "monitor.yaml", "strict.yaml", "README.md", "examples/cases.yaml"):
        assert f"safesail_policies/{f}" in names, f
    for f in ("manifest.json", "features.sqlite", "encoders.safetensors", "competition.safetensors",
              "detection_head.safetensors"):
        assert f"safesail_neuron_db/data/smollm2-135m-instruct/{f}" in names, f
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "safesail = safesail_guard.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()
