"""`GuardedModel`: generation and streaming with the guard's hooks live on every prompt and decoded token.

The decoding loop is our own (greedy or temperature/top-p sampling, with or without the KV cache) so that the
guard controls it token by token:

- every sampled token is fed back through the model before it is shown, so its features are known first;
- a policy `block` stops generation at the token where the rule fires - that token is never emitted - and the
  result carries the policy's refusal message with ``finish_reason == "content_filter"``;
- `steer` ops change the hooked layers' outputs from the position where their rule fired (unconditional
  steer rules from the first prompt token) over the rest of the generation.

It runs on a `Guard` (`runtime/guard.py`) and its policy; the proxy's local mode (`server/local_backend.py`)
drives `stream`, handing it the prompt's encoding (``encoded=``) so that a request is tokenised once, and turns
its events into verdicts (`runtime/verdict.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from safesail_guard.events import TokenActivations
from safesail_guard.runtime.guard import Guard, GuardError
from safesail_guard.runtime.normalized import merge_normalized
from safesail_guard.runtime.prompts import Prompt, watched_mask
from safesail_guard.runtime.prompts import policy_prompt_text as _prompt_text
from safesail_guard.runtime.tracker import cache_kwargs

if TYPE_CHECKING:
    from safesail_guard.chat_template import EncodedText
    from safesail_guard.policy import CompiledPolicy, Decision

FinishReason = Literal["stop", "length", "content_filter"]
DEFAULT_LAG = 16
"""Largest number of decoded tokens over which exact TopK firing is micro-batched by default
(`stream(lag=...)`). Batches grow from `FIRST_BATCH` tokens (so the first text comes early) to this size:
measured 2.8% decoding overhead against 3.7% for fixed batches of 8 and 8.4% unbatched
(benchmarks/results/guard_overhead.json), at the price of releasing text up to 16 tokens late."""
FIRST_BATCH = 4
"""Size of the first micro-batch; each later one is as large as everything batched before it, up to ``lag``
(4, 4, 8, 16, 16, ... for ``lag`` 16), so the first text comes early and long replies pay the least."""


@dataclass(frozen=True)
class ActiveSteer:
    """One steering op with the first position it applies to."""

    feature_id: str
    layer: int
    op: str
    value: float
    start: int


@dataclass
class Generation:
    """The outcome of one guarded generation."""

    text: str  # what the user gets: the completion, or the refusal message when blocked
    completion: str  # what the model generated before any block
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    tokens: list[TokenActivations]
    decision: Decision | None
    steering: list[ActiveSteer] = field(default_factory=list)
    blocked_at: int | None = None  # position of the blocking token
    guard_seconds: float = 0.0  # wall time spent inside the guard (hooks, firing, events, policy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (token events included)."""
        return {"text": self.text, "completion": self.completion, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "blocked_at": self.blocked_at,
                "decision": self.decision.to_dict() if self.decision is not None else None,
                "steering": [s.__dict__ for s in self.steering],
                "tokens": [t.to_dict() for t in self.tokens]}


@dataclass
class StreamEvent:
    """``kind="prompt"``: the prompt has been read and passed the policy (``decision`` is the verdict so far,
    None without a policy; sent once, before any delta, and not sent when the prompt itself is blocked);
    ``kind="delta"``: new text for the user; ``kind="done"``: the finished `Generation`."""

    kind: Literal["prompt", "delta", "done"]
    text: str = ""
    token: TokenActivations | None = None
    generation: Generation | None = None
    decision: Decision | None = None
    tokens: list[TokenActivations] | None = None  # ``prompt`` events: the prompt's token events


class GuardedModel:
    """A guard's model with guarded `generate` and `stream`."""

    def __init__(self, guard: Guard, policy: CompiledPolicy | str | Path | None = None) -> None:
        self.guard = guard
        self.policy = guard.compile(policy)
        self._eos = _eos_ids(guard.tokenizer, guard.model)
        self._special = set(guard.tokenizer.all_special_ids)

    @classmethod
    def from_db(cls, db: Any = None, model: Any = "embedded", *, policy: Any = None, **kw: Any) -> GuardedModel:
        """`Guard.from_db` plus a policy."""
        return cls(Guard.from_db(db, model, **kw), policy)

    def generate(self, prompt: Prompt, **kw: Any) -> Generation:
        """Generate a reply to ``prompt`` (text or chat messages); see `stream` for the options (``encoded=``
        included)."""
        for event in self.stream(prompt, **kw):
            if event.kind == "done":
                assert event.generation is not None
                return event.generation
        raise RuntimeError("stream ended without a result")  # pragma: no cover

    @torch.no_grad()
    def stream(self, prompt: Prompt, *, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, use_cache: bool = True,
               policy: CompiledPolicy | str | Path | None = None, ignore_eos: bool = False,
               hooks: bool = True, steer: Sequence[Any] = (), lag: int = DEFAULT_LAG,
               encoded: EncodedText | None = None) -> Generator[StreamEvent, None, None]:
        """Yield text deltas as tokens pass the policy, then one ``done`` event with the `Generation`.

        ``steer`` adds steering ops of your own from the first prompt token (objects with ``feature_id``,
        ``layer``, ``op`` in clamp/scale/add and ``value``, e.g. `ActiveSteer` or the policy's `SteerOp`).
        ``ignore_eos`` keeps generating past end-of-sequence (fixed-length benchmarks); ``hooks=False`` runs
        the identical loop with no guard attached (the unguarded side of the overhead benchmark: no events,
        no policy, no steering). ``lag = N > 0`` (default `DEFAULT_LAG`; 0 = decide every token at once)
        micro-batches exact TopK firing over up to N decoded tokens, in batches that grow from `FIRST_BATCH`
        (4, 4, 8, ...; the events are the same for every N, see
        `runtime/tracker.py`): decoding is cheaper, text is released up to N tokens later, a block still
        stops before its token is shown (the up to N tokens generated past it are discarded), and steering
        triggered by a rule starts up to N tokens later (while steering is active, firing is not batched).

        The guard's hooks stay on the model from the first forward call until the generator finishes (between
        yields too): another scan of the same model started meanwhile (a second stream, a scan, a monitor) raises
        `hooks.OverlappingScanError` instead of sharing them. Run one generation per model at a time.

        ``encoded`` is the prompt's encoding when the caller already has it (``guard.encode_prompt(prompt)[0]``,
        e.g. the proxy, which counts the prompt's tokens before generating): the prompt is then not tokenised
        again. It must be the encoding of ``prompt``, which still supplies the policy's view of the text.
        """
        if lag < 0:
            raise GuardError(f"lag must be >= 0, got {lag}")
        if max_new_tokens < 0:
            raise GuardError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise GuardError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        guard, model, tok = self.guard, self.guard.model, self.guard.tokenizer
        compiled = guard.compile(policy) if policy is not None else self.policy
        if encoded is None:
            enc, _ = guard.encode_prompt(prompt)
        elif len(encoded) == 0:
            raise GuardError("the input encodes to zero tokens")
        else:
            enc = encoded
        n_prompt = len(enc)
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        if context and n_prompt + 1 > context:
            raise GuardError(f"the prompt has {n_prompt} tokens; the model's context is {context}. Shorten it "
                             "(Guard.scan can score longer inputs in chunks, but generation needs the context)")
        if context:
            max_new_tokens = min(max_new_tokens, context - n_prompt)
        run = compiled.start(prompt_text=_prompt_text(prompt)) if compiled is not None and hooks else None
        # Unicode disguises: the normalized reading of the prompt is scored first (None for plain text), before
        # this generation's hooks attach (one scan per model at a time); its verdict joins the prompt's
        shadow = guard.scan_normalized(prompt, policy=compiled) if run is not None else None
        shadow_blocks = shadow is not None and shadow.decision.blocked

        def merged(decision: Any) -> Any:
            return merge_normalized(decision, shadow.decision) if shadow is not None else decision
        pieces, content, roles = enc.tokens, watched_mask(enc), enc.roles
        special = self._special

        generated: list[int] = []
        piece_at: dict[int, str] = {}  # response position -> the text it adds (decoded when sampled)
        decoded = [""]  # stable text of `generated` so far (a trailing partial character is held back)

        def new_piece() -> str:
            full = tok.decode(generated, skip_special_tokens=True)
            stable = full[:-1] if full.endswith("\ufffd") else full
            if not stable.startswith(decoded[0]):
                return ""
            piece, decoded[0] = stable[len(decoded[0]):], stable
            return piece

        def meta(pos: int, token_id: int) -> tuple[str, str, bool, str | None]:
            if pos < n_prompt:
                return pieces[pos], "prompt", content[pos], roles[pos]
            return piece_at.get(pos, ""), "response", token_id not in special, "assistant"

        def observe(t: TokenActivations) -> None:  # after a block nothing more is shown, so nothing more counts
            if run is not None and run.blocked is None:
                run.observe(t)

        tracker = guard.tracker(meta, observe if run is not None else None)
        tracker.lag = lag if hooks else 0
        tracker.lag_start = min(FIRST_BATCH, lag)
        released = [0]  # index into tracker.tokens of the next event to release

        def release() -> Generator[StreamEvent, None, int | None]:
            """Yield deltas of the events emitted since the last call, stopping at a blocking token; returns the
            blocking token's position (None when nothing blocked)."""
            while released[0] < len(tracker.tokens):
                ev = tracker.tokens[released[0]]
                if run is not None and run.blocked is not None and ev.position >= run.blocked.span[1] >= 0:
                    return run.blocked.span[1]
                released[0] += 1
                if ev.scope == "response" and ev.text:
                    yield StreamEvent("delta", ev.text, ev)
            return None

        steering: list[ActiveSteer] = []

        def refresh_steering(start: int) -> None:
            if run is None:
                return
            ops = run.active_steering()
            known = {(s.feature_id, s.op, s.value) for s in steering}
            new = [ActiveSteer(o.feature_id, o.layer, o.op, float(o.value), start) for o in ops
                   if (o.feature_id, o.op, float(o.value)) not in known]
            if new:
                steering.extend(new)
                tracker.set_steering(steering)

        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = self._eos
        finish: FinishReason = "length"
        blocked_at: int | None = None
        if steer and not hooks:
            raise GuardError("steering needs the guard's hooks (hooks=True)")
        for op in steer:
            if op.op not in ("clamp", "scale", "add"):
                raise GuardError(f"unknown steering op {op.op!r}; use clamp, scale or add")
            steering.append(ActiveSteer(op.feature_id, int(op.layer), op.op, float(op.value), 0))
        if steering:
            tracker.set_steering(steering)
        refresh_steering(0)
        ids = torch.tensor([enc.input_ids], dtype=torch.long)
        with (tracker.attached(model) if hooks else contextlib.nullcontext()):
            cache = _new_cache() if use_cache else None
            logits = self._forward(ids, cache)
            tracker.flush()
            if run is not None:
                run.end_prompt()  # rules that score the whole prompt decide now, before anything is generated
            tracker.batched = 0  # micro-batches of decoded tokens start small again (the prompt does not count)
            if run is not None and run.blocked is not None:
                finish, blocked_at = "content_filter", run.blocked.span[1]
            elif shadow_blocks:  # blocked by the normalized reading: nothing of the answer is generated
                finish, blocked_at = "content_filter", -1
            else:
                released[0] = len(tracker.tokens)  # prompt events are not shown
                yield StreamEvent("prompt", decision=merged(run.snapshot()) if run is not None else None,
                                  tokens=list(tracker.tokens))
                refresh_steering(n_prompt)
                for _ in range(max_new_tokens):
                    next_id = _sample(logits, temperature, top_p, gen)
                    if next_id in eos and not ignore_eos:
                        finish = "stop"
                        break
                    generated.append(next_id)
                    piece_at[n_prompt + len(generated) - 1] = new_piece()
                    step_ids = torch.tensor([[next_id]]) if use_cache else torch.tensor(
                        [enc.input_ids + generated])
                    logits = self._forward(step_ids, cache)
                    if not hooks:
                        continue
                    blocked_at = yield from release()
                    if blocked_at is not None:
                        break
                    refresh_steering(tracker.seen)
                if hooks and blocked_at is None:
                    tracker.flush()
                    blocked_at = yield from release()
                if blocked_at is not None:
                    finish = "content_filter"
        if blocked_at is not None and blocked_at >= n_prompt:
            del generated[blocked_at - n_prompt:]  # the blocking token and any generated past it
        decision = merged(run.finish()) if run is not None else None
        completion = tok.decode(generated, skip_special_tokens=True)
        text = completion
        if finish == "content_filter":
            text = (decision.refusal if decision is not None and decision.refusal else
                    "I can't help with that.")
        events = [t for t in tracker.tokens if blocked_at is None or blocked_at < 0 or t.position <= blocked_at]
        result = Generation(text, completion, finish, n_prompt, len(generated), events, decision,
                            steering, blocked_at, tracker.stats.guard_seconds)
        yield StreamEvent("done", generation=result)

    def _forward(self, ids: torch.Tensor, cache: Any) -> torch.Tensor:
        model = self.guard.model
        past = cache_kwargs(model, cache) if cache is not None else {}
        out = model(input_ids=ids, use_cache=cache is not None, **past)
        return out.logits[0, -1].float()


def _new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return ids


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        probs /= probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))
