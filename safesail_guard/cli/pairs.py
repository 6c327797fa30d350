"""`safesail pairs ...`: build concept-contrastive query pairs.

`generate` asks an OpenAI-compatible LLM for the de-concept twin of each concept query
(:mod:`safesail_training.pairs_generate` through :mod:`safesail_guard.llm_client`). This module only parses
options and prints; it imports neither torch nor the training package until a command runs. Bad input or
settings are user errors (`cli/common.py`: red lines on stderr, exit 2); `EXIT_SOME_FAILED` (3) says the run
finished with records left to retry.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safesail_guard.cli.common import fail

app = typer.Typer(help="Concept-contrastive query pairs (concept query + de-concept twin).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Concept-contrastive query pairs (concept query + de-concept twin)."""
    # A callback keeps `pairs` a command group even while it has a single command.

EXIT_SOME_FAILED = 3
"""Exit status when the run finished but some records got no twin (they are retried on the next run)."""

_OPTION_FOR_FIELD = {
    "base_url": "--base-url or SAFESAIL_LLM_BASE_URL",
    "model": "--model or SAFESAIL_LLM_MODEL",
}


@app.command("generate")
def generate(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="IN.jsonl",
            help='Concept queries, one JSON object per line: {"id"?, "level0", "level1", "lang"?, "concept"} '
            '(the query text may be given as "text" instead of "concept").',
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Pairs JSONL to append to. Ids already in it are skipped, so rerunning resumes. Failures go to "
            "OUT.errors.jsonl.",
        ),
    ],
    base_url: Annotated[
        str | None,
        typer.Option(help="API root of the OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
                     "(default: $SAFESAIL_LLM_BASE_URL)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model name to request; recorded as source 'llm:<model>' (default: $SAFESAIL_LLM_MODEL)."),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Name of the environment variable holding the API key (the key itself never goes on the command "
            "line) (default: $SAFESAIL_LLM_API_KEY, then $OPENAI_API_KEY, else no key)."
        ),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at once (default: 4).")] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Directory for the on-disk response cache; identical requests are answered from it."),
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(help="Retries for connection errors, timeouts, HTTP 408/429/5xx (default: 4)."),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds allowed per attempt (default: 120).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion token limit per reply (default: 1024).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: 0).")] = None,
    lang: Annotated[str, typer.Option(help="Language recorded for input lines without 'lang'.")] = "en",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Write the de-concept twin of each concept query with an LLM.

    Options left out fall back to SAFESAIL_LLM_* environment variables (e.g. SAFESAIL_LLM_CONCURRENCY), then to
    the defaults shown. Exit status: 0 when every record has a twin, 2 on bad input or settings, 3 when some
    records failed (see OUT.errors.jsonl; rerun the same command to retry only those).
    """
    from pydantic import SecretStr, ValidationError

    from safesail_guard.llm_client import LLMClient
    from safesail_guard.llm_config import LLMClientConfig
    from safesail_training.pairs_generate import PairsInputError, generate_pairs

    overrides: dict[str, Any] = {
        "base_url": base_url,
        "model": model,
        "concurrency": concurrency,
        "cache_dir": cache_dir,
        "max_retries": max_retries,
        "timeout_s": timeout,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            fail(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
        overrides["api_key"] = SecretStr(key)
    try:
        config = LLMClientConfig(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]) or "settings"
            missing = err["type"] == "missing" and name in _OPTION_FOR_FIELD
            hint = f" (give {_OPTION_FOR_FIELD[name]})" if missing else ""
            problems.append(f"{name}: {err['msg']}{hint}")
        fail("invalid LLM settings: " + "; ".join(problems))

    try:
        client = LLMClient(config)  # ValueError: cache_dir cannot be created
    except ValueError as exc:
        fail(str(exc))
    try:
        summary = generate_pairs(input_path, output, client, default_lang=lang, progress=progress)
    except PairsInputError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or output}: {exc.strerror or exc}")

    print(f"twins written: {summary.done}; already done: {summary.skipped}; failed: {summary.failed} "
          f"(of {summary.total} records) -> {summary.output_path}")
    unknown = f" (+{summary.responses_without_usage} replies without usage)" if summary.responses_without_usage else ""
    print(f"tokens: prompt {summary.prompt_tokens}, completion {summary.completion_tokens}{unknown}; "
          f"cache hits: {summary.cached}")
    if summary.failed:
        by_status = ", ".join(f"{k}={v}" for k, v in sorted(summary.failed_by_status.items()))
        print(f"failures ({by_status}) listed in {summary.errors_path}; rerun to retry them", file=sys.stderr)
        raise typer.Exit(EXIT_SOME_FAILED)
