"""Hook points on a decoder-only transformer, and context managers that attach and always remove hooks.

A *hook point* is `(layer, site)`, written `"layers.{layer}.{site}"`:

- `mlp_out`    output of `layers[i].mlp`, shape `[batch, seq, d_model]` (the Safe-SAIL paper's best site);
- `resid_post` output of the whole decoder layer `layers[i]` (the residual stream after the MLP).

An `ArchitectureAdapter` knows where a family keeps its decoder layers; an unknown family, layer or site is an
error that lists the valid choices, so an unguarded model can never look guarded. Hooks are plain PyTorch
forward hooks. An observing callback returns `None` and leaves the model's outputs bit-identical; a callback
may return a tensor to replace the site's output (steering, SAE splicing). `stop_after` ends the forward pass
right after the last hooked module (`StopForward`), so harvesting skips the layers and the LM head it does
not need.

A *scan* (the guard following one sequence, or one batch of scoring) must own the model's hooks alone: two scans
hooked into one model at once would each see the other's forward calls. `exclusive_scan` claims a model for one
scan; a second claim while the first is held raises `OverlappingScanError` instead of silently sharing.

Used by the harvester and metrics (`safesail_training`) and by the runtime guard.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SITES: tuple[str, ...] = ("mlp_out", "resid_post")
_POINT_RE = re.compile(r"^layers\.(\d+)\.([a-z_]+)$")

HookFn = Callable[["HookPoint", torch.Tensor], torch.Tensor | None]


class HookError(ValueError):
    """An invalid hook point, site, layer or architecture; the message lists what is valid."""


class OverlappingScanError(HookError):
    """A scan tried to hook a model that another scan is hooked into (each would see the other's tokens)."""


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early once every hooked module has run."""


@dataclass(frozen=True, order=True)
class HookPoint:
    """A place to read (or write) activations: decoder layer `layer`, site `site`."""

    layer: int
    site: str

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise HookError(f"Unknown hook site {self.site!r}; valid sites: {', '.join(SITES)}")
        if self.layer < 0:
            raise HookError(f"Layer must be >= 0, got {self.layer}")

    @property
    def name(self) -> str:
        """Canonical string form, e.g. `layers.14.mlp_out`."""
        return f"layers.{self.layer}.{self.site}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str | HookPoint) -> HookPoint:
        """Parse `"layers.14.mlp_out"` (also accepts `"14.mlp_out"` and `"14:mlp_out"`)."""
        if isinstance(text, HookPoint):
            return text
        raw = text.strip()
        m = _POINT_RE.match(raw) or _POINT_RE.match("layers." + raw.replace(":", "."))
        if not m:
            raise HookError(
                f"Cannot parse hook point {text!r}; write it as 'layers.<layer>.<site>' with site one of {', '.join(SITES)}"
            )
        return cls(int(m.group(1)), m.group(2))


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where one family of HF causal LMs keeps its decoder layers and their MLPs."""

    family: str
    model_types: tuple[str, ...]
    layers_path: str = "model.layers"  # attribute path from the CausalLM to the ModuleList
    mlp_attr: str = "mlp"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder layers of `model`."""
        obj: Any = model
        for part in self.layers_path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise HookError(f"{type(model).__name__} has no '{self.layers_path}' ({self.family} adapter)")
        return obj

    def module(self, model: nn.Module, point: HookPoint) -> nn.Module:
        """The module whose forward output is `point`."""
        layers = self.layers(model)
        if not 0 <= point.layer < len(layers):
            raise HookError(f"Layer {point.layer} does not exist: this model has layers 0..{len(layers) - 1}")
        layer = layers[point.layer]
        return getattr(layer, self.mlp_attr) if point.site == "mlp_out" else layer


_ADAPTERS: dict[str, ArchitectureAdapter] = {}


def register_adapter(adapter: ArchitectureAdapter) -> None:
    """Add an adapter; a model type claimed twice is an error (no silent override)."""
    for mt in adapter.model_types:
        if mt in _ADAPTERS:
            raise HookError(f"model_type {mt!r} already has the {_ADAPTERS[mt].family!r} adapter")
    for mt in adapter.model_types:
        _ADAPTERS[mt] = adapter


register_adapter(ArchitectureAdapter("llama", ("llama",)))
register_adapter(ArchitectureAdapter("qwen2", ("qwen2",)))
register_adapter(ArchitectureAdapter("qwen3", ("qwen3",)))
register_adapter(ArchitectureAdapter("mistral", ("mistral",)))


def supported_model_types() -> list[str]:
    """Model types (config.model_type) with an adapter."""
    return sorted(_ADAPTERS)


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for `model`'s `config.model_type`, or a HookError listing the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _ADAPTERS:
        raise HookError(
            f"No hook adapter for model_type {model_type!r} ({type(model).__name__}); supported: "
            f"{', '.join(supported_model_types())}. Add one with safesail_guard.hooks.register_adapter()."
        )
    return _ADAPTERS[model_type]


def resolve_points(model: nn.Module, points: Sequence[str | HookPoint]) -> list[HookPoint]:
    """Parse and validate hook points against `model` (layer range and architecture); sorted, deduplicated."""
    if not points:
        raise HookError("No hook points given; pass at least one, e.g. 'layers.14.mlp_out'")
    adapter = get_adapter(model)
    parsed = sorted({HookPoint.parse(p) for p in points})
    for p in parsed:
        adapter.module(model, p)  # raises on a bad layer
    return parsed


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_output(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


_CLAIMS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_CLAIMS_LOCK = threading.Lock()


@contextmanager
def exclusive_scan(model: nn.Module, owner: str) -> Iterator[None]:
    """Claim ``model`` for one scan (``owner`` names it in errors) for the duration of the block.

    Raises `OverlappingScanError` when another scan (or the same one, re-entered) already holds the model: an
    overlapping scan on a shared model is an error, never a silent share of its hooks.
    """
    with _CLAIMS_LOCK:
        holder = _CLAIMS.get(model)
        if holder is not None:
            raise OverlappingScanError(
                f"overlapping scan on a shared model: {owner} cannot hook {type(model).__name__} (id {id(model):#x}) "
                f"while {holder} is hooked into it; both would see each other's forward calls. Run one scan at a "
                "time per model (attach per forward call, or finish the first scan before starting the next)")
        _CLAIMS[model] = owner
    try:
        yield
    finally:
        with _CLAIMS_LOCK:
            _CLAIMS.pop(model, None)


@contextmanager
def attach_hooks(
    model: nn.Module,
    callbacks: dict[HookPoint | str, HookFn],
    *,
    stop_after: bool = False,
) -> Iterator[list[HookPoint]]:
    """Attach `callbacks[point](point, activation)` as forward hooks; always removed on exit.

    `activation` is the site's output `[batch, seq, d_model]`. A callback returning a tensor replaces the
    output (same shape). With `stop_after=True`, `StopForward` is raised after the deepest hooked module runs;
    call the model through `run_until_hooks` (or catch it yourself).
    """
    adapter = get_adapter(model)
    points = resolve_points(model, list(callbacks))
    by_point = {HookPoint.parse(k): fn for k, fn in callbacks.items()}
    deepest = max(points, key=lambda p: (p.layer, SITES.index(p.site)))  # mlp_out runs before resid_post
    handles = []
    try:
        for point in points:
            fn = by_point[point]
            is_last = stop_after and point == deepest

            def hook(_mod: nn.Module, _inp: Any, output: Any, *, _p: HookPoint = point, _fn: HookFn = fn, _last: bool = is_last) -> Any:
                new = _fn(_p, _output_tensor(output))
                if _last:
                    raise StopForward
                if new is not None:
                    return _replace_output(output, new)
                return None

            handles.append(adapter.module(model, point).register_forward_hook(hook))
        yield points
    finally:
        for h in handles:
            h.remove()


def run_until_hooks(model: nn.Module, **inputs: Any) -> Any | None:
    """Call `model(**inputs)`; returns None if a `stop_after` hook ended the pass early."""
    try:
        return model(**inputs)
    except StopForward:
        return None


@contextmanager
def capture(
    model: nn.Module, points: Sequence[str | HookPoint], *, stop_after: bool = False
) -> Iterator[dict[HookPoint, list[torch.Tensor]]]:
    """Record the activations at `points` for every forward call inside the block.

    Yields `{point: [tensor per forward call]}`; each tensor is a detached `[batch, seq, d_model]` view.
    """
    store: dict[HookPoint, list[torch.Tensor]] = {HookPoint.parse(p): [] for p in points}

    def record(point: HookPoint, act: torch.Tensor) -> None:
        store[point].append(act.detach())
        return None

    with attach_hooks(model, {p: record for p in store}, stop_after=stop_after):
        yield store


@torch.inference_mode()
def collect_padded(
    model: nn.Module, points: Sequence[HookPoint], batch: Sequence[tuple[Any, Sequence[bool]]], *, pad_id: int = 0
) -> dict[HookPoint, torch.Tensor]:
    """One right-padded forward pass up to the deepest of ``points``; the kept activations per point.

    ``batch`` holds ``(encoding, keep)`` pairs: an object with ``input_ids`` (e.g. `chat.EncodedText`) and one
    bool per token. Returns ``{point: [n_kept, d_model]}`` in fp32 on the CPU, rows in batch order then
    position order.
    """
    width = max(len(enc.input_ids) for enc, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    keep = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (enc, mask) in enumerate(batch):
        n = len(enc.input_ids)
        ids[row, :n] = torch.tensor(enc.input_ids)
        attn[row, :n] = 1
        keep[row, :n] = torch.tensor(list(mask), dtype=torch.bool)
    device = next(model.parameters()).device
    with exclusive_scan(model, "a padded batch pass"), capture(model, points, stop_after=True) as store:
        run_until_hooks(model, input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
    return {HookPoint.parse(p): store[HookPoint.parse(p)][0][keep.to(device)].float().cpu() for p in points}
