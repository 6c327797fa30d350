"""`safesail model ...`: load and check models offline (`check` the embedded wheel, `info` on any model).

A model that cannot be found or loaded is a user error (`cli/common.py`): one red line on stderr, exit 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from safesail_guard.cli.common import user_errors

app = typer.Typer(no_args_is_help=True)


@app.command("check")
def check() -> None:
    """Verify that the embedded model's GGUF is installed and has the pinned sha256 (fast, no model load)."""
    from safesail_guard.models import EMBEDDED_SHA256, verify_embedded_gguf

    with user_errors():
        path = verify_embedded_gguf()
    print(f"embedded model OK: {path} (sha256 {EMBEDDED_SHA256[:16]}...)")


@app.command("info")
def info(
    model: Annotated[str, typer.Argument(help="'embedded', a .gguf file, a HF model directory, or a cached HF id.")] = "embedded",
) -> None:
    """Load a model and print its identity, shape, hook points and load time."""
    from safesail_guard.hooks import SITES, get_adapter
    from safesail_guard.models import load_model

    with user_errors():
        loaded = load_model(model)
        adapter = get_adapter(loaded.model)
    ident = loaded.identity
    print(f"name:        {ident.name} ({ident.source})")
    print(f"path:        {ident.path}")
    print(f"fingerprint: {ident.fingerprint}")
    print(f"family:      {adapter.family}; layers: {loaded.n_layers}; d_model: {loaded.d_model}")
    print(f"hook points: layers.<0..{loaded.n_layers - 1}>.<{'|'.join(SITES)}>")
    print(f"load time:   {loaded.load_seconds:.1f} s")
