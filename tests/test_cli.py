"""The `safesail` CLI: help, and user errors as one line on stderr with exit code 1 (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("build-sae", "build-db", "harvest", "train", "select", "demo", "model", "pairs", "db"):
        assert cmd in res.output


def test_model_check_passes_on_installed_wheel() -> None:
    res = runner.invoke(app, ["model", "check"])
    assert res.exit_code == 0 and "embedded model OK" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["build-sae", "--k", "0"], "positive integers"),
        (["build-sae", "--point", "layers.3.attn"], "valid sites"),
        (["harvest", "--out", "x", "--point", "nonsense"], "layers.<layer>.<site>"),
        (["model", "info", "/definitely/not/here"], "does not exist"),
        (["build-db", "--point", "layers.1.mlp_out", "--point", "layers.2.resid_post"], "one hook site"),
        (["build-db", "--explainer", "gpt"], "explainer"),
    ],
)
def test_user_errors_exit_1_with_message(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output


def test_select_without_build(tmp_path: Path) -> None:
    res = runner.invoke(app, ["select", str(tmp_path)])
    assert res.exit_code == 1 and "run `safesail build-sae" in res.output


def test_train_on_corrupt_shards(tmp_path: Path) -> None:
    shard_dir = tmp_path / "layers.1.mlp_out"
    shard_dir.mkdir()
    (shard_dir / "index.json").write_text("{not json")
    res = runner.invoke(app, ["train", str(shard_dir), "--out", str(tmp_path / "sae")])
    assert res.exit_code == 1 and "index.json" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "sae" / "sae.safetensors").exists()
