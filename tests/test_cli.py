"""The `safesail` CLI: help, and one convention for user errors in every command: red ``error:`` lines on
stderr, exit status 2 (`EXIT_USAGE`, as for an unknown option), no traceback (`cli/common.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.cli import app
from safesail_guard.cli.common import EXIT_USAGE

runner = CliRunner()


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("build-sae", "build-db", "harvest", "train", "select", "demo", "model", "pairs", "db", "policy",
                "audit", "score", "inspect", "chat", "serve"):
        assert cmd in res.output


def test_help_ends_with_the_exit_statuses_and_no_stale_text() -> None:
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "Exit status: 0 done" in text and f"{EXIT_USAGE} bad input" in text
    assert "until the guard proxy lands" not in text


def test_unknown_option_and_bad_input_share_one_exit_status() -> None:
    assert runner.invoke(app, ["db", "show", "--no-such-option"]).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["model", "info", "/definitely/not/here"]).exit_code == EXIT_USAGE


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
def test_user_errors_exit_2_with_message_on_stderr(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == EXIT_USAGE, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert res.stderr.startswith("error: ") and res.stdout == ""


def test_select_without_build(tmp_path: Path) -> None:
    res = runner.invoke(app, ["select", str(tmp_path)])
    assert res.exit_code == EXIT_USAGE and "run `safesail build-sae" in res.stderr


def test_train_on_corrupt_shards(tmp_path: Path) -> None:
    shard_dir = tmp_path / "layers.1.mlp_out"
    shard_dir.mkdir()
    (shard_dir / "index.json").write_text("{not json")
    res = runner.invoke(app, ["train", str(shard_dir), "--out", str(tmp_path / "sae")])
    assert res.exit_code == EXIT_USAGE and "index.json" in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "sae" / "sae.safetensors").exists()


# -- `safesail serve` with a bad OTEL_* variable: one red line naming it, no traceback, no server -------------------
BAD_OTEL = [
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_METRICS_EXPORTER": "prometheus"}, "OTEL_METRICS_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "x-team=a,Bearer abc"},
     "OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
     "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_BSP_MAX_QUEUE_SIZE": "10"},
     "OTEL_BSP_MAX_QUEUE_SIZE"),
]


@pytest.mark.parametrize("env, variable", BAD_OTEL, ids=[v for _, v in BAD_OTEL])
def test_serve_bad_otel_variable_is_one_line_error(env: dict[str, str], variable: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def no_server(*_a: object, **_kw: object) -> None:
        raise AssertionError("the server started despite a bad OTEL_* variable")

    monkeypatch.setattr(uvicorn, "run", no_server)
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    res = runner.invoke(app, ["serve", "--audit-db", str(tmp_path / "audit.sqlite")], env=env)
    assert isinstance(res.exception, SystemExit), res.exception  # not an exception out of the command
    assert res.exit_code == EXIT_USAGE, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and variable in lines[0] and "Traceback" not in res.stderr


def test_serve_bad_otel_variable_real_process_stderr() -> None:
    """The same through a real process: what a user sees on stderr is one line, exit status 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "zipkin"
    proc = subprocess.run([sys.executable, "-m", "safesail_guard.cli", "serve", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: OTEL_TRACES_EXPORTER='zipkin': unknown exporter 'zipkin'")
