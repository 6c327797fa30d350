"""`safesail model ...`: load and check models offline."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("check")
def check() -> None:
    """Verify that the embedded model's GGUF is installed and has the pinned sha256 (fast, no model load)."""
    from safesail_guard.models import EMBEDDED_SHA256, ModelLoadError, verify_embedded_gguf

    try:
        path = verify_embedded_gguf()
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"embedded model OK: {path} (sha256 {EMBEDDED_SHA256[:16]}...)")


@app.command("info")
def info(
    model: Annotated[str, typer.Argument(help="'embedded', a .gguf file, a HF model directory, or a cached HF id.")] = "embedded",
) -> None:
    """Load a model and print its identity, shape, hook points and load time."""
    from safesail_guard.hooks import SITES, HookError, get_adapter
    from safesail_guard.models import ModelLoadError, load_model

    try:
        loaded = load_model(model)
        adapter = get_adapter(loaded.model)
    except (ModelLoadError, HookError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    ident = loaded.identity
    print(f"name:        {ident.name} ({ident.source})")
    print(f"path:        {ident.path}")
    print(f"fingerprint: {ident.fingerprint}")
    print(f"family:      {adapter.family}; layers: {loaded.n_layers}; d_model: {loaded.d_model}")
    print(f"hook points: layers.<0..{loaded.n_layers - 1}>.<{'|'.join(SITES)}>")
    print(f"load time:   {loaded.load_seconds:.1f} s")
