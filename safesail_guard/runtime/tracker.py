"""Forward hooks that follow one sequence through prefill and decoding and turn activations into token events.

A `SequenceTracker` follows one sequence (batch size 1), attached to a model for the whole sequence or for each
forward call it makes (`attached`; a model carries at most one tracker at a time, see `hooks.exclusive_scan`).
A pre-hook on the whole model *places* every forward call in the sequence (`place_call`) from whatever
evidence the call carries, whatever its keyword: a KV cache object (anything with ``get_seq_length``, passed as
``past_key_values=`` (transformers 4.x), ``cache=`` (5.x) or positionally), ``cache_position``, ``position_ids``,
and the call's length against what was already seen. Evidence that disagrees, a call that cannot be placed, a
call that skips positions or rewrites tokens already scored is a `PlacementError`; no position is ever dropped
silently. It handles all three ways a causal LM is driven:

- prefill: one call over the prompt, positions 0..T-1;
- cached decoding: one call per token, positions continue after the cache;
- uncached decoding: every call re-runs the whole sequence from position 0 (its already-seen prefix must match
  the tokens seen); only positions not seen before become new events.

At every hooked layer it encodes only the new positions (`LayerEncoder.encode_terms`), optionally adds steering
deltas, and at the deepest hooked layer it builds one `TokenActivations` per new position and hands it to
`on_token`. With a detection head, each event also carries the head's remainder term per head layer
(``head_terms``), computed in the same step as firing. Hook calls and encoded positions are counted so tests
can check that nothing was skipped.

With ``lag = N > 0`` (exact TopK firing only, no steering active) the firing decision is *micro-batched*: each
layer keeps its new positions' centred inputs and selected pre-activations, and every N positions the
competition's k-th values are computed for all of them in one matmul - at batch 1 the cost of that matmul is
reading the weights, so N tokens cost about as much as one. Events then arrive up to N tokens late (call
`flush` at the end); a consumer that shows text only after its event (as `GuardedModel` does) still never
shows a token a policy would block.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from safesail_guard.events import FeatureHit, TokenActivations
from safesail_guard.hooks import HookError, HookPoint, StopForward, attach_hooks, exclusive_scan
from safesail_guard.runtime.encoder import LayerEncoder

TokenMeta = Callable[[int, int], tuple[str, str, bool, str | None]]  # (pos, token_id) -> (text, scope, content, role)
OP_CODES = {"clamp": 0, "scale": 1, "add": 2}
CACHE_KEYWORDS: tuple[str, ...] = ("past_key_values", "cache", "past_key_value", "layer_past", "past")
"""Keywords a KV cache travels under in the supported transformers versions (and older names, refused when
their value is not a cache object this module understands)."""


class PlacementError(HookError):
    """A forward call the guard cannot place in its sequence unambiguously; scoring it would risk dropping or
    mislabelling tokens, so the call fails instead."""


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for calling ``model``: ``cache`` when its forward takes that (transformers 5.x),
    else ``past_key_values`` (4.x)."""
    return {"cache" if "cache" in _forward_params(type(model)) else "past_key_values": cache}


@functools.lru_cache(maxsize=64)
def _forward_params(cls: type) -> tuple[str, ...]:
    """Names of ``cls.forward``'s parameters after ``self``, in order (empty when it has no usable signature)."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params[1:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _start_of(name: str, value: Any, length: int) -> int:
    """First position named by a ``cache_position`` / ``position_ids`` tensor over ``length`` tokens; a
    `PlacementError` unless it counts up by one from there (one sequence, no padding)."""
    t = torch.as_tensor(value)
    if t.numel() == 0 or t.shape[-1] != length:
        raise PlacementError(f"{name} has shape {tuple(t.shape)} for a call over {length} tokens; the guard "
                             "follows one unpadded sequence")
    rows = t.reshape(-1, length).long()
    start = int(rows[0, 0])
    want = torch.arange(start, start + length, device=rows.device)
    if not bool((rows == want).all()):
        raise PlacementError(f"{name} {rows[0].tolist()[:8]}... does not count up by one from {start}; the guard "
                             "cannot place a call with gaps or padding in its positions")
    return start


def place_call(cls: type, args: tuple, kwargs: dict[str, Any], length: int) -> dict[str, int]:
    """Every piece of evidence a forward call carries about its first position: ``{source: position}``.

    Sources: ``cache`` (the length of any object with ``get_seq_length`` among the arguments, whatever its
    keyword), ``cache_position`` and ``position_ids``. ``cls`` is the model class (to name positional arguments).
    A value under a cache keyword that is not such an object is an unknown cache convention: `PlacementError`.
    """
    named: dict[str, Any] = dict(zip(_forward_params(cls), args))
    for i, value in enumerate(args[len(named):]):
        named[f"args[{i + len(named)}]"] = value
    named.update(kwargs)
    found: dict[str, int] = {}
    caches: dict[int, tuple[str, int]] = {}
    for key, value in named.items():
        if value is None:
            continue
        seq_length = getattr(value, "get_seq_length", None)
        if callable(seq_length):
            caches.setdefault(id(value), (key, int(seq_length())))
        elif key in CACHE_KEYWORDS:
            raise PlacementError(f"unknown cache convention: {key}= holds a {type(value).__name__} with no "
                                 "get_seq_length(); the guard cannot tell where this call starts. Pass a "
                                 "transformers Cache object (e.g. DynamicCache)")
    lengths = {n for _, n in caches.values()}
    if len(lengths) > 1:
        raise PlacementError("the call carries caches of different lengths: "
                             + ", ".join(f"{k}={n}" for k, n in caches.values()))
    if caches:
        found["cache"] = lengths.pop()
    for key in ("cache_position", "position_ids"):
        if named.get(key) is not None:
            found[key] = _start_of(key, named[key], length)
    return found


@dataclass
class LayerSteering:
    """Steering ops of one layer as tensors: rows into the layer's selected features, op codes, values, start."""

    rows: Tensor  # [m] int64
    codes: Tensor  # [m] int64 (OP_CODES)
    values: Tensor  # [m] fp32, in normalized units
    starts: Tensor  # [m] int64: first position the op applies to

    def delta(self, enc: LayerEncoder, acts: Tensor, positions: Tensor) -> Tensor:
        """Change to add to the site output at ``positions`` given the current activations ``acts [T, S]``."""
        a = acts[:, self.rows]  # [T, m]
        scale = enc.max_act[self.rows]
        v = self.values * scale
        target = torch.where(self.codes == 0, v, torch.where(self.codes == 1, a * self.values, a + v))
        live = positions.unsqueeze(-1) >= self.starts  # [T, m]
        diff = torch.where(live, target - a, torch.zeros((), dtype=a.dtype))
        return diff @ enc.W_dec[self.rows]


@dataclass
class TrackerStats:
    """Counters for tests and benchmarks."""

    forward_calls: int = 0
    hook_calls: dict[int, int] = field(default_factory=dict)  # per layer
    encoded_positions: dict[int, int] = field(default_factory=dict)  # per layer: positions encoded (new ones)
    guard_seconds: float = 0.0  # wall time inside the guard's hooks, firing, events and policy callbacks


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    """Add the wall time of a tracker method to ``stats.guard_seconds`` (nested calls are counted once)."""

    @functools.wraps(method)
    def wrapper(self: SequenceTracker, *args: Any) -> Any:
        outer = self._busy_since is None
        if outer:
            self._busy_since = time.perf_counter()
        try:
            return method(self, *args)
        finally:
            if outer:
                self.stats.guard_seconds += time.perf_counter() - self._busy_since
                self._busy_since = None

    return wrapper


class SequenceTracker:
    """Per-token feature events for one sequence; see the module docstring."""

    def __init__(self, encoders: dict[int, LayerEncoder], site: str, token_meta: TokenMeta,
                 on_token: Callable[[TokenActivations], None] | None = None) -> None:
        self.encoders = encoders
        self.site = site
        self.token_meta = token_meta
        self.on_token = on_token
        self.tokens: list[TokenActivations] = []
        self.stats = TrackerStats()
        self.seen = 0  # positions already turned into events
        self._seen_ids: list[int] = []  # token id at each seen position (len == seen)
        self.stop_at_deepest = False  # raise StopForward after the deepest layer (scoring; skips the LM head)
        self.position_base = 0  # added to every call's positions (chunked scans)
        self.lag = 0  # >0: resolve exact-TopK firing every `lag` positions in one batch (see module docstring)
        self.lag_start = 0  # >0: the first batch's size; later ones match everything batched so far, up to lag
        self.batched = 0  # positions resolved in micro-batches so far (drives the lag_start growth)
        self._deferring = False
        self._deferred: dict[int, list[tuple[Tensor, Tensor]]] = {}  # layer -> [(x_c, pre)] of waiting positions
        self._deferred_ids: list[tuple[int, int]] = []  # (position, token_id) waiting for their firing decision
        self._offset = 0
        self._ids: Tensor | None = None
        # layer -> (first new position, acts [T_new, S], detection-head terms [T_new] or None)
        self._pending: dict[int, tuple[int, Tensor, Tensor | None]] = {}
        self._steering: dict[int, LayerSteering] = {}
        self._deepest = max(encoders)
        self._busy_since: float | None = None  # start of the outermost timed call in progress (see `_timed`)


    # ----------------------------------------------------------------- steering
    def set_steering(self, ops: Sequence[Any]) -> None:
        """Replace the steering ops (objects with feature_id, layer, op, value and optional start).

        Deferred positions are resolved first: steering needs each token's activations when it runs."""
        self.flush()
        by_layer: dict[int, list[tuple[int, int, float, int]]] = {}
        for op in ops:
            enc = self.encoders.get(op.layer)
            if enc is None:
                raise ValueError(f"steering op on feature {op.feature_id}: layer {op.layer} is not guarded")
            try:
                row = enc.feature_ids.index(op.feature_id)
            except ValueError:
                raise ValueError(f"steering op names unknown feature {op.feature_id!r}") from None
            start = int(getattr(op, "start", 0) or 0)
            by_layer.setdefault(op.layer, []).append((row, OP_CODES[op.op], float(op.value), start))
        self._steering = {
            layer: LayerSteering(torch.tensor([r for r, *_ in items]), torch.tensor([c for _, c, _, _ in items]),
                                 torch.tensor([v for *_, v, _ in items], dtype=torch.float32),
                                 torch.tensor([s for *_, s in items]))
            for layer, items in by_layer.items()
        }

    # -------------------------------------------------------------------- hooks
    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[SequenceTracker]:
        """Attach the hooks to ``model`` for the duration of the block (always removed).

        The model must carry no other scan's hooks (`hooks.exclusive_scan`): a second tracker, or this one
        re-entered, raises `OverlappingScanError`. To share a model between sequences whose calls interleave
        (one server thread, many requests), attach around each forward call instead of around the sequence.
        """
        with exclusive_scan(model, f"guard tracker {id(self):#x}"):
            pre = model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
            try:
                with attach_hooks(model, {HookPoint(layer, self.site): self._on_layer for layer in self.encoders}):
                    yield self
            finally:
                pre.remove()

    @_timed
    def _pre_forward(self, mod: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ValueError("the guard needs input_ids (inputs_embeds alone cannot be mapped to tokens)")
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise ValueError(f"a SequenceTracker follows one sequence; got input_ids of shape {tuple(ids.shape)} "
                             "(use Guard.scan_batch for batches)")
        offset = self._place(type(mod), args, kwargs, ids[0])
        self._offset, self._ids = offset + self.position_base, ids[0]
        self._pending.clear()
        self._deferring = (self.lag > 0 and not self._steering and not self.stop_at_deepest
                           and all(e.firing == "topk" for e in self.encoders.values()))
        if not self._deferring:
            self.flush()
        self.stats.forward_calls += 1

    @_timed
    def _on_layer(self, point: HookPoint, act: Tensor) -> Tensor | None:
        layer = point.layer
        self.stats.hook_calls[layer] = self.stats.hook_calls.get(layer, 0) + 1
        enc = self.encoders[layer]
        x = act[0]
        T = x.shape[0]
        first_new = max(0, self.seen - self._offset)
        steer = self._steering.get(layer)
        if steer is None and first_new >= T:
            return self._finish_if_deepest(layer)
        if self._deferring:
            with torch.no_grad():
                self._deferred.setdefault(layer, []).append(enc.pre_selected(x[first_new:]))
            self.stats.encoded_positions[layer] = self.stats.encoded_positions.get(layer, 0) + (T - first_new)
            return self._finish_if_deepest(layer)
        with torch.no_grad():
            # encode every position steering touches; only the new ones become events
            lo = 0 if steer is not None else first_new
            _, acts, terms = enc.encode_terms(x[lo:])
            self.stats.encoded_positions[layer] = self.stats.encoded_positions.get(layer, 0) + (T - first_new)
            self._pending[layer] = (self._offset + first_new, acts[first_new - lo:],
                                    terms[first_new - lo:] if terms is not None else None)
            new_out = None
            if steer is not None:
                positions = torch.arange(self._offset + lo, self._offset + T)
                delta = steer.delta(enc, acts, positions)
                new_out = act.clone()
                new_out[0, lo:] += delta.to(act.dtype)
        self._finish_if_deepest(layer)
        return new_out

    def _place(self, cls: type, args: tuple, kwargs: dict[str, Any], ids: Tensor) -> int:
        """The model position of this call's first token (see `place_call`); a `PlacementError` when the
        evidence disagrees, is missing where it matters, skips positions or rewrites tokens already scored."""
        length = int(ids.shape[0])
        seen = self.seen - self.position_base  # positions already seen, in this call's (model) coordinates
        evidence = place_call(cls, args, kwargs, length)
        if len(set(evidence.values())) > 1:
            raise PlacementError("the call's position evidence disagrees ("
                                 + ", ".join(f"{k} says {v}" for k, v in evidence.items())
                                 + "); the guard cannot tell which tokens it scores")
        if evidence:
            offset = next(iter(evidence.values()))
            how = " and ".join(evidence)
        elif seen == 0 or length > seen:
            offset, how = 0, "its length (no cache: the whole sequence from position 0)"
        else:
            raise PlacementError(
                f"cannot place a call over {length} token(s) with no cache, cache_position or position_ids after "
                f"{seen} positions were seen: it is either a new sequence or a cached step under a cache "
                "convention the guard does not know. Pass the KV cache object (past_key_values=/cache=) or "
                "position_ids")
        if offset > seen:
            raise PlacementError(f"the call starts at position {offset} (by {how}) but only {seen} positions were "
                                 f"seen: positions {seen}..{offset - 1} were never scored (was the cache filled "
                                 "before the guard was attached?)")
        overlap = min(length, seen - offset)
        if overlap > 0:
            base = self.position_base + offset
            if ids[:overlap].tolist() != self._seen_ids[base:base + overlap]:
                raise PlacementError(f"the call re-runs positions {offset}..{offset + overlap - 1} (by {how}) with "
                                     "tokens other than the ones already scored there: a different sequence, or "
                                     "a rewound cache; a tracker follows one sequence")
        return offset

    def _finish_if_deepest(self, layer: int) -> None:
        if layer != self._deepest:
            return None
        assert self._ids is not None
        end = self._offset + self._ids.shape[0]
        new = range(max(self.seen, self._offset), end)
        self._seen_ids.extend(int(t) for t in self._ids[new.start - self._offset:].tolist())
        if self._deferring:
            self._deferred_ids.extend((pos, int(self._ids[pos - self._offset])) for pos in new)
            limit = min(self.lag, max(self.lag_start, self.batched)) if self.lag_start else self.lag
            if len(self._deferred_ids) >= limit:
                self.flush()
        else:
            # one nonzero() per layer for all new positions instead of one per position and layer
            hits = {ly: (first, batch_hits(self.encoders[ly], acts)) for ly, (first, acts, _) in self._pending.items()}
            terms = {ly: (first, t.tolist()) for ly, (first, _, t) in self._pending.items() if t is not None}
            for pos in new:
                self._emit(pos, int(self._ids[pos - self._offset]),
                           [h.get(pos - first, ()) for first, h in hits.values()],
                           {ly: t[pos - first] for ly, (first, t) in terms.items()} if terms else None)
        self.seen = max(self.seen, end)
        self._pending.clear()
        if self.stop_at_deepest:
            raise StopForward
        return None

    def flush(self) -> None:
        """Resolve and emit every deferred position (a no-op when nothing waits)."""
        if self._deferred_ids:
            self._flush_deferred()

    @_timed
    def _flush_deferred(self) -> None:
        waiting, self._deferred_ids = self._deferred_ids, []
        self.batched += len(waiting)
        with torch.no_grad():
            resolved = {}
            terms: dict[int, list[float]] = {}
            for layer, parts in self._deferred.items():
                x_c = torch.cat([p[0] for p in parts])
                pre = torch.cat([p[1] for p in parts])
                resolved[layer], t = self.encoders[layer].resolve_terms(x_c, pre)
                if t is not None:
                    terms[layer] = t.tolist()
        self._deferred = {}
        hits = [batch_hits(self.encoders[ly], acts) for ly, acts in resolved.items()]
        for i, (pos, token_id) in enumerate(waiting):
            self._emit(pos, token_id, [h.get(i, ()) for h in hits],
                       {ly: t[i] for ly, t in terms.items()} if terms else None)

    def _emit(self, pos: int, token_id: int, layer_hits: Sequence[Sequence[FeatureHit]],
              head_terms: dict[int, float] | None = None) -> None:
        text, scope, content, role = self.token_meta(pos, token_id)
        hits: list[FeatureHit] = [h for per_layer in layer_hits for h in per_layer]
        hits.sort(key=lambda h: -h.normalized)
        tok = TokenActivations(pos, token_id, text, scope, content, hits, role,  # type: ignore[arg-type]
                               head_terms)
        self.tokens.append(tok)
        if self.on_token is not None:
            self.on_token(tok)


def batch_hits(enc: LayerEncoder, acts: Tensor) -> dict[int, list[FeatureHit]]:
    """Hits of every row of ``acts [N, S]`` that has any, keyed by row index (one nonzero() for all rows)."""
    nz = acts.nonzero()
    if nz.numel() == 0:
        return {}
    vals = acts[nz[:, 0], nz[:, 1]]
    norms = (vals / enc.max_act[nz[:, 1]]).tolist()
    out: dict[int, list[FeatureHit]] = {}
    for (r, c), v, n in zip(nz.tolist(), vals.tolist(), norms):
        out.setdefault(r, []).append(FeatureHit(enc.feature_ids[c], round(v, 6), round(n, 6)))
    return out
