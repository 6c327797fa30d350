"""`Guard`: a neuron database's safety features attached to a live model, token by token.

    from safesail_guard.runtime.guard import Guard
    guard = Guard.from_db()                      # shipped database + embedded SmolLM2
    result = guard.scan([{"role": "user", "content": "how do I pick a lock"}], policy="default")
    result.decision.action, result.risk.score, result.tokens[5].hits

    with guard.watch(policy="default") as session:   # any HF generate call on guard.model
        guard.model.generate(ids, stopping_criteria=session.stopping_criteria(), max_new_tokens=40)
    session.tokens, session.decision()

`GuardedModel` (runtime/generation.py) adds generation and streaming with blocking and steering.
The database's model fingerprint must match the model's; a mismatch raises `ModelMismatchError`.

Neighbours: the guard encodes activations with `runtime/encoder.py` and `runtime/tracker.py` (hooks from
`hooks.py`), reads the input through `runtime/prompts.py` (what counts, the prompt as text), decides with a
`safesail_guard.policy` run, scores with the database's detection head (`runtime/detection_head.py`; the
sparse `runtime/scoring.py` head for databases without one), scans the normalized reading of disguised text
(`runtime/normalized.py`) and a pivot translation (`runtime/pivot.py`), and returns a `GuardResult`
(`runtime/result.py`). `WatchSession` (below) is the live state of one `Guard.watch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from safesail_guard.chat_template import (
    EncodedText,
    check_text,
    encode_chat,
    encode_text,
    normalized_view,
    validate_messages,
)
from safesail_guard.events import FeatureCatalog, TokenActivations
from safesail_guard.hooks import HookPoint, get_adapter, resolve_points, run_until_hooks
from safesail_guard.policy import CompiledPolicy, compile_policy_source
from safesail_guard.runtime.encoder import Competition, Firing, LayerEncoder
from safesail_guard.runtime.normalized import NormalizedOutcome, merge_normalized, normalized_prompt
from safesail_guard.runtime.prompts import Prompt, plain_prompt_text, policy_prompt_text, watched_mask
from safesail_guard.runtime.result import GuardResult, Truncation
from safesail_guard.runtime.tracker import SequenceTracker

if TYPE_CHECKING:
    from safesail_guard.models import LoadedModel
    from safesail_guard.policy import Decision, PolicyRun
    from safesail_guard.runtime.detection_head import DetectionHead
    from safesail_guard.runtime.scoring import RiskHead
    from safesail_neuron_db import NeuronDB

DEFAULT_MAX_TOKENS = 2048  # per forward pass; longer inputs are scanned in chunks of this size
MAX_CHUNK_OVERLAP = 256
"""Most tokens of context a chunk after the first re-reads from the end of the previous one (`Guard.scan`)."""


class GuardError(ValueError):
    """A guard could not be built or used as asked (the message says what to change)."""



def _identity_of(model: Any) -> tuple[Any, Any, str, str]:
    """(hf model, tokenizer, fingerprint, name) from a LoadedModel."""
    return model.model, model.tokenizer, model.identity.fingerprint, model.identity.name


class Guard:
    """Safety features of one database, ready to encode a model's activations; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, db: NeuronDB, *, model_fingerprint: str, model_name: str = "",
                 firing: Firing | None = None, competition: dict[int, Competition] | None = None,
                 max_tokens: int | None = None, risk_head: RiskHead | DetectionHead | None | bool = None) -> None:
        """Low-level constructor; prefer `Guard.from_db`. ``model_fingerprint`` must equal the database's.

        ``competition`` (per-layer full encoders) defaults to the database's own competition file, if any.
        ``risk_head``: None/True = the database's scorer (its detection head when it ships one, else its sparse
        `RiskHead`; True requires one), False = no risk score, or a head object to use instead. A detection
        head needs exact TopK firing: a database with a head but no competition (or ``firing="threshold"``)
        is a `GuardError`. ``guard.risk_head`` is the scorer in use, ``guard.detection_head`` the detection
        head or None.
        """
        if model_fingerprint != db.fingerprint:
            from safesail_neuron_db import ModelMismatchError

            raise ModelMismatchError(
                f"the neuron database {db.path} was built for model '{db.manifest.model.name}' (fingerprint "
                f"{db.fingerprint[:16]}), but the guard is being attached to {model_name or 'a model'} with "
                f"fingerprint {model_fingerprint[:16]}; use a database built for this model (`safesail build-db`)")
        self.model, self.tokenizer, self.db = model, tokenizer, db
        self.model_name = model_name or db.manifest.model.name
        self.site: str = db.site
        self.catalog = FeatureCatalog.from_db(db)
        get_adapter(model)
        resolve_points(model, [HookPoint(layer, self.site) for layer in db.layers])
        self.competition = dict(competition) if competition is not None else _competition_from_db(db)
        if firing is None:
            firing = "topk" if all(layer in self.competition for layer in db.layers) else "threshold"
        self.firing: Firing = firing
        self.risk_head = self._risk_head(risk_head)
        is_detection = getattr(self.risk_head, "kind", None) == "detection"
        self.detection_head: DetectionHead | None = self.risk_head if is_detection else None  # type: ignore[assignment]
        if self.detection_head is not None:
            self._check_head(self.detection_head)
        self.encoders = {layer: self._layer_encoder(layer) for layer in db.layers}
        limit = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_TOKENS
        self.context_tokens = int(limit)
        self.max_tokens = int(max_tokens or min(int(limit), DEFAULT_MAX_TOKENS))
        if self.max_tokens < 8:
            raise GuardError(f"max_tokens must be at least 8, got {self.max_tokens}")

    # --------------------------------------------------------------- building
    @classmethod
    def from_db(cls, db: NeuronDB | str | Path | None = None, model: LoadedModel | str = "embedded", *,
                firing: Firing | None = None, max_tokens: int | None = None,
                risk_head: RiskHead | DetectionHead | None | bool = None) -> Guard:
        """Open ``db`` (default: the shipped database), load ``model`` if given as a spec, and attach.

        ``firing`` picks the firing rule (default: exact ``"topk"`` when the database ships the competition
        weights, else ``"threshold"``).
        """
        from safesail_neuron_db import NeuronDB

        if isinstance(model, str):
            from safesail_guard.models import load_model

            model = load_model(model)
        hf_model, tokenizer, fingerprint, name = _identity_of(model)
        if not isinstance(db, NeuronDB):
            db = NeuronDB.open(db, expected_fingerprint=fingerprint, expected_name=name)
        return cls(hf_model, tokenizer, db, model_fingerprint=fingerprint, model_name=name, firing=firing,
                   max_tokens=max_tokens, risk_head=risk_head)

    def _layer_encoder(self, layer: int) -> LayerEncoder:
        enc = self.db.encoder(layer)
        d_model = int(self.model.config.hidden_size)
        if enc["W_enc"].shape[1] != d_model:
            raise GuardError(f"database layer {layer} encodes width {enc['W_enc'].shape[1]}, the model has "
                             f"hidden_size {d_model}")
        ids = [f"{layer}_{int(i)}" for i in enc["latents"].tolist()]
        max_act = torch.tensor([self.catalog[i].max_act for i in ids], dtype=torch.float32)
        dtype = next(self.model.parameters()).dtype
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise GuardError(f"unsupported model dtype {dtype}")
        head = self.detection_head
        terms = head.layer_terms(layer, enc["b_dec"].float()) if head is not None and layer in head.layers else None
        return LayerEncoder(layer, ids, enc["latents"].long(), enc["W_enc"].float(), enc["b_enc"].float(),
                            enc["b_dec"].float(), enc["threshold"].float(), max_act, enc["W_dec"].float(),
                            firing=self.firing, competition=self.competition.get(layer), head=terms)

    def _risk_head(self, head: RiskHead | DetectionHead | None | bool) -> RiskHead | DetectionHead | None:
        if head is False:
            return None
        if head is None or head is True:
            from safesail_guard.runtime.detection_head import scorer_from_db

            return scorer_from_db(self.db, self.catalog, required=head is True)
        return head

    def _check_head(self, head: DetectionHead) -> None:
        """A detection head needs exact TopK firing at each of its layers, a dictionary the size of the
        competition's, and every weighted latent among the guard's encoded features (else its hits are lost)."""
        missing = [L for L in head.layers if L not in self.competition]
        if self.firing != "topk" or missing:
            why = (f"the database has no competition weights at layers {missing}" if missing else
                   f"firing={self.firing!r} was asked")
            raise GuardError(f"the database {self.db.path} ships a detection head, which scores the SAE's TopK code "
                             f"over the whole dictionary and so needs exact TopK firing (firing='topk' with the "
                             f"competition file); {why}. Rebuild the database with its competition file, or pass "
                             "risk_head=False to run without a risk score")
        for L in head.layers:
            if L not in self.db.layers:
                raise GuardError(f"the detection head has layer {L}, which the database does not guard")
            n = int(self.competition[L].W_enc.shape[0])
            hl = head.file.layers[L]
            if int(hl.v.shape[0]) != n:
                raise GuardError(f"layer {L}: the detection head was fitted on {hl.v.shape[0]} latents, the "
                                 f"competition has {n}")
            encoded = {f"{L}_{int(i)}" for i in self.db.encoder(L)["latents"].tolist()}
            lost = [f for f in head.feature_ids if self.catalog[f].layer == L and f not in encoded]
            if lost:
                raise GuardError(f"layer {L}: the detection head weights features the database's encoders do not "
                                 f"hold, so their activations would never be seen: {', '.join(lost[:5])}")

    @property
    def layers(self) -> list[int]:
        """Guarded layers."""
        return sorted(self.encoders)

    def __repr__(self) -> str:
        n = sum(e.n_features for e in self.encoders.values())
        return (f"Guard({self.model_name}, {n} features at layers {self.layers} ({self.site}), "
                f"firing={self.firing})")

    # ------------------------------------------------------------------ policy
    def compile(self, policy: CompiledPolicy | str | Path | None) -> CompiledPolicy | None:
        """A compiled policy from a compiled one, a shipped name ("default"), a file path or YAML text."""
        if policy is None:
            return None
        if isinstance(policy, CompiledPolicy):
            return policy
        return compile_policy_source(policy, self.catalog, self.risk_head)

    # --------------------------------------------------------------- encoding
    def encode_prompt(self, prompt: Prompt, response: str | None = None) -> tuple[EncodedText, int]:
        """Tokens of ``prompt`` (text or chat messages, chat template applied) plus an optional assistant
        ``response``; returns the encoding and the number of prompt tokens (the rest are response; -1 when no
        response was given). An input that encodes to no token at all is a `GuardError`."""
        enc, n_prompt = self._encode(prompt, response)
        if len(enc) == 0:
            raise GuardError("the input encodes to zero tokens")
        return enc, n_prompt

    def _encode(self, prompt: Prompt, response: str | None) -> tuple[EncodedText, int]:
        if isinstance(prompt, str):
            check_text(prompt, "prompt")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = validate_messages(list(prompt))
        if response is not None:
            check_text(response, "response")
        if getattr(self.tokenizer, "chat_template", None) is None:
            text = "\n".join(m["content"] for m in messages)
            enc = encode_text(self.tokenizer, text + (response or ""))
            n_prompt = len(encode_text(self.tokenizer, text)) if response else len(enc)
            return enc, n_prompt
        if response is None:
            return encode_chat(self.tokenizer, messages, add_generation_prompt=True), -1
        full = encode_chat(self.tokenizer, [*messages, {"role": "assistant", "content": response}],
                           add_generation_prompt=False)
        head = encode_chat(self.tokenizer, messages, add_generation_prompt=True)
        n = 0
        while n < min(len(head), len(full)) and head.input_ids[n] == full.input_ids[n]:
            n += 1
        return full, n

    def _token_meta(self, enc: EncodedText, n_prompt: int):
        pieces, content, roles = enc.tokens, watched_mask(enc), enc.roles
        n_prompt = len(enc) if n_prompt < 0 else n_prompt

        def meta(pos: int, _tid: int) -> tuple[str, str, bool, str | None]:
            return pieces[pos], ("prompt" if pos < n_prompt else "response"), content[pos], roles[pos]

        return meta

    def tracker(self, token_meta: Any, on_token: Any = None) -> SequenceTracker:
        """A fresh `SequenceTracker` over this guard's encoders."""
        return SequenceTracker(self.encoders, self.site, token_meta, on_token)

    def chunk_windows(self, n: int) -> list[tuple[int, int, int]]:
        """How `scan` reads ``n`` tokens: ``(context_start, first_new, end)`` per forward pass.

        One pass when ``n <= max_tokens``. Otherwise every token is scored exactly once, in passes of
        ``max_tokens`` new tokens, and each pass after the first also re-reads up to `MAX_CHUNK_OVERLAP` (and at
        most a quarter of ``max_tokens``) preceding tokens as context, so that text cut by a chunk boundary is
        still read with what precedes it. The overlap comes on top of ``max_tokens`` while the model's context
        allows, else out of it.
        """
        if n <= self.max_tokens:
            return [(0, 0, n)]
        overlap = min(MAX_CHUNK_OVERLAP, self.max_tokens // 4)
        new = self.max_tokens if self.max_tokens + overlap <= self.context_tokens else self.max_tokens - overlap
        windows, start = [(0, 0, self.max_tokens)], self.max_tokens
        while start < n:
            windows.append((max(0, start - overlap), start, min(n, start + new)))
            start += new
        return windows

    @torch.no_grad()
    def scan(self, prompt: Prompt, *, policy: CompiledPolicy | str | Path | None = None,
             response: str | None = None, pivot: bool = True, translator: Any = None,
             normalize: bool = True) -> GuardResult:
        """Encode ``prompt`` (and a given ``response``) in one pass, without generating, and apply ``policy``.

        Inputs longer than ``max_tokens`` are scanned in consecutive chunks (each chunk is its own forward
        pass that re-reads the end of the previous one as context; see `chunk_windows`); every token is
        scored, and `GuardResult.truncation` says how. When the policy's ``multilingual_gap`` rule asks for a
        pivot translation (and ``pivot`` is True), the English translation is scanned too
        (`GuardResult.pivot`; see `runtime/pivot.py`); ``translator`` overrides the endpoint client (tests).
        When the text hides words from the features (``normalize``, on by default; see
        `chat_template.normalized_view`), its normalized reading is scanned too and the stricter verdict kept
        (`GuardResult.normalized`).
        """
        compiled = self.compile(policy)
        enc, n_prompt = self.encode_prompt(prompt, response)
        run = compiled.start(prompt_text=policy_prompt_text(prompt)) if compiled is not None else None
        tracker = self.tracker(self._token_meta(enc, n_prompt), run.observe if run is not None else None)
        tracker.stop_at_deepest = True
        ids = torch.tensor(enc.input_ids, dtype=torch.long)
        windows = self.chunk_windows(len(ids))
        with tracker.attached(self.model):
            for lo, _first_new, end in windows:
                tracker.position_base = lo  # positions continue the sequence; those already scored are skipped
                run_until_hooks(self.model, input_ids=ids[lo:end].unsqueeze(0), use_cache=False)
        if [t.position for t in tracker.tokens] != list(range(len(ids))):  # fail closed, never a partial scan
            raise GuardError(f"the guard scored {len(tracker.tokens)} of the input's {len(ids)} tokens")
        overlap = max((first - lo for lo, first, _ in windows), default=0)
        trunc = Truncation("chunked" if len(windows) > 1 else "none", len(ids), len(windows), self.max_tokens,
                           overlap)
        result = GuardResult(tracker.tokens, run.finish() if run is not None else None, truncation=trunc)
        return self._complete(result, prompt, compiled, pivot, translator, response=response, normalize=normalize)

    def _complete(self, result: GuardResult, prompt: Prompt, compiled: CompiledPolicy | None, pivot: bool,
                  translator: Any, *, response: str | None = None, normalize: bool = True) -> GuardResult:
        """Add the risk score, the normalized reading when the text has disguises, and, when the decision asks
        for one and ``pivot`` is on, the pivot translation."""
        if self.risk_head is not None:
            result.risk = self.risk_head.score(result.tokens)
        if normalize:
            self._normalized(result, prompt, response, compiled)
        d = result.decision
        if pivot and d is not None and d.pivot_requested and d.pivot is not None:
            self._pivot(result, prompt, compiled, translator)
        return result

    def scan_normalized(self, prompt: Prompt, *, policy: CompiledPolicy | str | Path | None = None,
                        response: str | None = None) -> GuardResult | None:
        """`scan` of the normalized reading of ``prompt`` (and ``response``); None when neither has a disguise
        (the cheap, common case). Guarded generation calls this to apply the same defence to its prompt."""
        view = normalized_prompt(prompt)
        view_response = normalized_view(response) if response else None
        if view is None and view_response is None:
            return None
        return self.scan(prompt if view is None else view, policy=policy,
                         response=response if view_response is None else view_response, pivot=False, normalize=False)

    def _normalized(self, result: GuardResult, prompt: Prompt, response: str | None,
                    compiled: CompiledPolicy | None) -> None:
        """Scan the normalized reading when there is one; merge its matches and keep the higher risk."""
        sub = self.scan_normalized(prompt, policy=compiled, response=response)
        if sub is None:
            return
        result.normalized = NormalizedOutcome(normalized_prompt(prompt) or prompt, sub.decision, sub.risk)
        if result.decision is not None and sub.decision is not None:
            result.decision = merge_normalized(result.decision, sub.decision)
        if sub.risk is not None and (result.risk is None or sub.risk.score > result.risk.score):
            result.risk = sub.risk

    def _pivot(self, result: GuardResult, prompt: Prompt, compiled: CompiledPolicy | None, translator: Any) -> None:
        """Scan the English translation of ``prompt`` and attach it (`GuardResult.pivot`)."""
        d = result.decision
        assert d is not None and d.pivot is not None
        from safesail_guard.runtime.pivot import PivotOutcome, translate

        text, model, error = translate(plain_prompt_text(prompt), d.pivot, translator)
        if text is None:
            result.pivot = PivotOutcome(None, None, None, model, error)
            return
        sub = self.scan(text, policy=compiled, pivot=False)
        result.pivot = PivotOutcome(text, sub.decision, sub.risk, model)

    @torch.no_grad()
    def scan_batch(self, prompts: Sequence[Prompt], *, policy: CompiledPolicy | str | Path | None = None,
                   batch_size: int = 8, progress: Any = None, pivot: bool = True,
                   translator: Any = None) -> list[GuardResult | Exception]:
        """`scan` many prompts in padded batches (length-sorted); one result per prompt, in input order.

        A prompt that cannot be encoded gets its exception in its slot instead of a result, so one bad item
        never stops the rest. Prompts longer than ``max_tokens`` go through `scan` (chunked). ``progress`` is
        called with the number of prompts finished after each batch.
        """
        if batch_size < 1:
            raise GuardError(f"batch_size must be >= 1, got {batch_size}")
        compiled = self.compile(policy)
        results: list[GuardResult | Exception | None] = [None] * len(prompts)
        encoded: list[tuple[int, EncodedText]] = []
        for i, p in enumerate(prompts):
            try:
                enc, _ = self.encode_prompt(p)
            except (ValueError, TypeError) as e:
                results[i] = e
                continue
            if len(enc) > self.max_tokens:
                results[i] = self.scan(p, policy=compiled, pivot=pivot, translator=translator)
                continue
            encoded.append((i, enc))
        encoded.sort(key=lambda item: len(item[1]))
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            for (i, enc), tokens in zip(chunk, self._batch_events([e for _, e in chunk])):
                decision = compiled.evaluate(tokens, policy_prompt_text(prompts[i])) if compiled is not None else None
                res = GuardResult(tokens, decision, truncation=Truncation("none", len(enc), 1, self.max_tokens))
                results[i] = self._complete(res, prompts[i], compiled, pivot, translator)
            if progress is not None:
                progress(len(chunk))
        return [r if r is not None else GuardError("not scanned") for r in results]

    def _batch_events(self, encs: Sequence[EncodedText]) -> list[list[TokenActivations]]:
        """One right-padded forward pass (stopping after the deepest guarded layer) for prompts only."""
        from safesail_guard.hooks import collect_padded
        from safesail_guard.runtime.tracker import batch_hits

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        acts = collect_padded(self.model, [HookPoint(layer, self.site) for layer in self.encoders],
                              [(e, [True] * len(e)) for e in encs], pad_id=pad)
        per_layer: dict[int, dict[int, list]] = {}
        terms: dict[int, list[float]] = {}  # detection-head remainder per layer, one per row
        for p, x in acts.items():
            enc = self.encoders[p.layer]
            _, layer_acts, layer_terms = enc.encode_terms(x)
            per_layer[p.layer] = batch_hits(enc, layer_acts)
            if layer_terms is not None:
                terms[p.layer] = layer_terms.tolist()
        out: list[list[TokenActivations]] = []
        row = 0
        for e in encs:
            pieces, content = e.tokens, watched_mask(e)
            tokens = []
            for pos in range(len(e)):
                hits = [h for layer in sorted(per_layer) for h in per_layer[layer].get(row, ())]
                hits.sort(key=lambda h: -h.normalized)
                head_terms = {ly: t[row] for ly, t in terms.items()} if terms else None
                tokens.append(TokenActivations(pos, e.input_ids[pos], pieces[pos], "prompt", content[pos], hits,
                                               e.roles[pos], head_terms))
                row += 1
            out.append(tokens)
        return out

    # ------------------------------------------------------------------ watch
    @contextmanager
    def watch(self, *, policy: CompiledPolicy | str | Path | None = None, prompt_tokens: int | None = None,
              prompt_text: str = "") -> Iterator[WatchSession]:
        """Attach to ``self.model`` for one sequence driven by any code (e.g. ``model.generate``).

        Positions below ``prompt_tokens`` (default: the first forward call's length) are the prompt.
        ``prompt_text`` (the user's words) lets the policy detect the language and benign framing.
        """
        compiled = self.compile(policy)
        session = WatchSession(self, compiled, prompt_tokens, prompt_text)
        with session.tracker.attached(self.model):
            yield session


@dataclass
class WatchSession:
    """Live state of one watched sequence."""

    guard: Guard
    policy: CompiledPolicy | None
    prompt_tokens: int | None = None
    prompt_text: str = ""
    run: PolicyRun | None = field(default=None, init=False)
    tracker: SequenceTracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = self.guard.tracker(self._meta, self._observe)
        self._special = set(self.guard.tokenizer.all_special_ids)

    def _meta(self, pos: int, token_id: int) -> tuple[str, str, bool, str | None]:
        if self.prompt_tokens is None:
            self.prompt_tokens = int(self.tracker._offset + (self.tracker._ids.shape[0]
                                                              if self.tracker._ids is not None else 0))
        special = token_id in self._special
        text = self.guard.tokenizer.decode([token_id])
        scope = "prompt" if pos < self.prompt_tokens else "response"
        return text, scope, not special, ("assistant" if scope == "response" else None)

    def _observe(self, tok: TokenActivations) -> None:
        if self.policy is not None and self.run is None:
            self.run = self.policy.start(prompt_text=self.prompt_text)
        if self.run is not None:
            self.run.observe(tok)

    @property
    def tokens(self) -> list[TokenActivations]:
        """Events so far."""
        return self.tracker.tokens

    @torch.no_grad()
    def flush(self, sequence: torch.Tensor | Sequence[int]) -> None:
        """Score the tokens of ``sequence`` (prompt + output ids) the model has not processed yet.

        ``model.generate`` never feeds its last sampled token back through the model; call this with the
        output row to see it. Runs one uncached pass that stops after the deepest guarded layer.
        """
        ids = torch.as_tensor(list(sequence) if not isinstance(sequence, torch.Tensor) else sequence).reshape(1, -1)
        if ids.shape[1] <= self.tracker.seen:
            return
        self.tracker.stop_at_deepest = True
        try:
            run_until_hooks(self.guard.model, input_ids=ids, use_cache=False)
        finally:
            self.tracker.stop_at_deepest = False

    def decision(self) -> Decision | None:
        """The policy's decision over everything seen (None without a policy)."""
        return self.run.finish() if self.run is not None else None

    def stopping_criteria(self) -> Any:
        """A transformers StoppingCriteriaList that stops generation when the policy blocks."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        session = self

        class _Blocked(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
                blocked = session.run is not None and session.run.blocked is not None
                return torch.full((input_ids.shape[0],), blocked, dtype=torch.bool)

        return StoppingCriteriaList([_Blocked()])


def _competition_from_db(db: NeuronDB) -> dict[int, Competition]:
    """The full-dictionary competition weights, when the database ships them (else empty)."""
    from safesail_neuron_db.manifest import COMPETITION_FILE

    if not db.has_file(COMPETITION_FILE):
        return {}
    out = {}
    for layer in db.layers:
        comp = db.competition(layer)
        assert comp is not None  # the file is listed, so every layer is in it (else CorruptDatabaseError)
        out[layer] = Competition(comp["W_enc"], comp["b_enc"].float(), int(comp["k"]))
    return out
