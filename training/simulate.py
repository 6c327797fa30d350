"""Score an explanation by simulation (Safe-SAIL section 2.2.3 and 3.3): CorrScore.

A simulator reads only the explanation and predicts where the feature fires on held-out text; the CorrScore is
the Pearson r between those predictions and the true activations, computed per feature over all its simulation
examples concatenated (:func:`simulation_examples`). Two granularities (``method``):

* ``"token"``: every token is a unit; the simulator sees ``token<TAB>unknown`` lines and answers
  ``token<TAB>activation`` lines (0-10). Truth = each token's true activation.
* ``"segment"``: each example is cut into ``n_segments`` contiguous spans (:func:`segment_spans`); the
  simulator answers ``Segment i: activate`` / ``Segment i: non-activate``. Truth = max true activation in the
  segment. Far fewer tokens to generate, which is the paper's point.

Simulators: :class:`LLMSimulator` (an OpenAI-compatible endpoint) and :class:`EmbeddingSimulator` (no LLM:
cosine similarity between the explanation and each unit's text, plus an estimate of what the LLM route would
cost for the same units, so the segment-vs-token saving can be measured offline).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from safesail_training.db_types import ActivationExample, Explanation, FeatureRecords, SimulationScore
from safesail_training.explain import escape_text, snippet, strip_fences, strip_reasoning
from safesail_training.llm_client import Completion, LLMClient, LLMError

__all__ = [
    "EmbeddingSimulator",
    "LLMSimulator",
    "Method",
    "Simulator",
    "TextEmbedder",
    "build_segment_messages",
    "build_token_messages",
    "corr_score",
    "embed_rows",
    "format_segment_reply",
    "format_token_reply",
    "parse_segment_reply",
    "parse_token_reply",
    "segment_spans",
    "simulate_many",
    "simulation_examples",
    "true_units",
]

Method = Literal["token", "segment"]
METHODS: tuple[Method, ...] = ("token", "segment")
MAX_ACTIVATION = 10.0


# -- units and truth -------------------------------------------------------------------------------------------


def segment_spans(n_tokens: int, n_segments: int = 8) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` spans covering ``range(n_tokens)`` in ``min(n_segments, n_tokens)`` pieces whose
    lengths differ by at most one (longer ones first)."""
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if n_tokens <= 0:
        return []
    k = min(n_segments, n_tokens)
    base, extra = divmod(n_tokens, k)
    spans, start = [], 0
    for i in range(k):
        end = start + base + (1 if i < extra else 0)
        spans.append((start, end))
        start = end
    return spans


def _fires(ex: ActivationExample) -> bool:
    return any(a > 0 for a in ex.acts)


def true_units(ex: ActivationExample, method: Method, n_segments: int = 8) -> list[float]:
    """True value of each unit: the token's activation, or the max activation inside each segment."""
    acts = [float(a) for a in ex.acts[: len(ex.tokens)]]
    acts += [0.0] * (len(ex.tokens) - len(acts))
    if method == "token":
        return acts
    return [max(acts[a:b]) for a, b in segment_spans(len(acts), n_segments)]


def _token_levels(ex: ActivationExample) -> list[int]:
    """Stored level 0-10 of each token (0 where levels are missing)."""
    return list(ex.levels[: len(ex.tokens)]) + [0] * max(0, len(ex.tokens) - len(ex.levels))


def _take_spread(groups: list[list[ActivationExample]], k: int) -> list[ActivationExample]:
    """Up to ``k`` examples round-robin over ``groups``, taking each group from its end."""
    queues = [list(reversed(g)) for g in groups]
    out: list[ActivationExample] = []
    while len(out) < k and any(queues):
        for queue in queues:
            if queue and len(out) < k:
                out.append(queue.pop(0))
    return out


def simulation_examples(feat: FeatureRecords, n: int = 6) -> list[ActivationExample]:
    """A fixed, deterministic mix of ``n`` examples: about a third top, a third spread over level bins (highest
    first) and a third quiet; shortfalls are filled from the other kinds. Each kind is taken from the end of its
    list, so an explainer that shows the first examples of each kind sees different ones where data allows.
    Returned firing examples first, then quiet."""
    usable = [ex for ex in feat.examples if ex.tokens]
    top = [ex for ex in usable if ex.kind == "top" and _fires(ex)]
    levelled = [ex for ex in usable if ex.kind != "top" and _fires(ex)]
    quiet = [ex for ex in usable if not _fires(ex)]
    by_level: dict[int, list[ActivationExample]] = {}
    for ex in levelled:
        by_level.setdefault(ex.level, []).append(ex)
    level_groups = [by_level[lv] for lv in sorted(by_level, reverse=True)]
    n_quiet = n // 3
    n_top = math.ceil((n - n_quiet) / 2)
    picked_top = _take_spread([top], n_top)
    picked_level = _take_spread(level_groups, n - n_quiet - len(picked_top))
    picked_quiet = _take_spread([quiet], n_quiet)
    short = n - len(picked_top) - len(picked_level) - len(picked_quiet)
    if short > 0:
        chosen = {id(ex) for ex in picked_top + picked_level + picked_quiet}
        spare_top = [ex for ex in reversed(top) if id(ex) not in chosen]
        spare_level = [ex for ex in _take_spread(level_groups, len(levelled)) if id(ex) not in chosen]
        spare_quiet = [ex for ex in reversed(quiet) if id(ex) not in chosen]
        extra = (spare_top + spare_level)[:short]
        picked_level += extra
        picked_quiet += spare_quiet[: short - len(extra)]
    return picked_top + picked_level + picked_quiet


def corr_score(sim: Sequence[float], true: Sequence[float]) -> float | None:
    """Pearson r of simulated vs true values; None with fewer than 2 points or when either side is constant."""
    if len(sim) != len(true):
        raise ValueError(f"corr_score needs equal lengths, got {len(sim)} simulated and {len(true)} true values")
    if len(sim) < 2:
        return None
    x = np.asarray(sim, dtype=np.float64)
    y = np.asarray(true, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("corr_score got NaN or infinite values")
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = float(np.sqrt(dx @ dx)), float(np.sqrt(dy @ dy))
    tiny = 1e-12
    if np.ptp(x) == 0 or np.ptp(y) == 0 or sx <= tiny * max(1.0, float(np.abs(x).max())) * len(x) or \
            sy <= tiny * max(1.0, float(np.abs(y).max())) * len(y):
        return None
    return float(np.clip((dx @ dy) / (sx * sy), -1.0, 1.0))


# -- prompts and reply formats --------------------------------------------------------------------------------

_TOKEN_SYSTEM = """\
Your task is to predict, token by token, where one feature ("neuron") of a language model fires. A feature \
reacts to one specific kind of text; you are told what kind in a short explanation. The passage comes split \
into tokens, one per line as "token<TAB>unknown" (line breaks and tabs inside a token are written \\n and \\t).

Replace each "unknown" with a whole number from 0 (the feature does not fire) to 10 (it fires as strongly as \
it ever does). Expect the feature to be quiet almost everywhere: most numbers should be 0.

Answer with exactly one "token<TAB>activation" line for every input line, keeping the order, and write \
nothing else. Commit to a number for every token even when the explanation leaves you in doubt."""

_SEGMENT_SYSTEM = """\
Your task is to predict which parts of a passage make one feature ("neuron") of a language model fire. A \
feature reacts to one specific kind of text; you are told what kind in a short explanation. The passage comes \
cut into numbered pieces, one per line as "Segment <i>: <text>" (line breaks inside a piece are written \\n).

For each piece, decide whether the feature fires anywhere inside it, and answer with one line per piece, in \
order: "Segment <i>: activate" if it does, "Segment <i>: non-activate" if it does not. Write nothing else, \
and commit to an answer for every piece even when the explanation leaves you in doubt."""


def build_token_messages(explanation: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages for token-level simulation of one example."""
    body = "\n".join(f"{escape_text(tok)}\tunknown" for tok in tokens)
    user = f"Neuron explanation: {explanation}\n\nTokens:\n{body}"
    return [{"role": "system", "content": _TOKEN_SYSTEM}, {"role": "user", "content": user}]


def build_segment_messages(explanation: str, segments: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages for segment-level simulation of one example (``segments`` are the span texts)."""
    body = "\n".join(f"Segment {i}: {escape_text(text)}" for i, text in enumerate(segments, start=1))
    user = f"Neuron explanation: {explanation}\n\nSegments:\n{body}"
    return [{"role": "system", "content": _SEGMENT_SYSTEM}, {"role": "user", "content": user}]


def format_token_reply(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The reply a token-level simulator is asked to write (values rounded to whole numbers)."""
    return "\n".join(f"{escape_text(tok)}\t{int(round(v))}" for tok, v in zip(tokens, values))


def format_segment_reply(active: Sequence[bool]) -> str:
    """The reply a segment-level simulator is asked to write."""
    return "\n".join(f"Segment {i}: {'activate' if a else 'non-activate'}" for i, a in enumerate(active, start=1))


_NUM = r"[-+]?\d+(?:\.\d+)?"
_TUPLE = re.compile(rf"""[(\[]\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,\s*["']?({_NUM})["']?\s*[)\]]""")
_TAB_VALUE = re.compile(rf"^\s*[\"'*`]*({_NUM})[\"'*`]*\s*[,;)|]*\s*$")
_BARE = re.compile(rf"^\s*[-*•]?\s*({_NUM})\s*$")
_TRAILING = re.compile(rf"(?:^|[\s:=,|(])[\"'*`]*({_NUM})[\"'*`]*\s*[,;)|]*\s*$")


def _clip(value: float) -> float:
    return min(MAX_ACTIVATION, max(0.0, value))


def parse_token_reply(reply: str, n_tokens: int) -> list[float | None]:
    """Predicted activations aligned to the ``n_tokens`` tokens by order (None where the reply ran short).

    Accepts ``token<TAB>7`` / ``7.0`` lines, bare numbers, ``("tok", 7)`` tuples (one per line or all on one
    line) and ``tok: 7``-style lines. Reasoning blocks, fences and prose lines without a trailing number are
    ignored; when enough tab / bare-number lines exist, looser matches (prose that happens to end in a number)
    are ignored too. Values are clipped to 0-10; surplus values are dropped.
    """
    text = strip_fences(strip_reasoning(reply))
    need = max(1, math.ceil(n_tokens / 2))
    values: list[float | None]
    tuples = _TUPLE.findall(text)
    if len(tuples) >= need:
        values = [float(v) for v in tuples]
    else:
        strong: list[float | None] = []
        loose: list[float | None] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            if "\t" in line:  # a token line: keep its place even when the value is not a number
                match = _TAB_VALUE.match(line.rsplit("\t", 1)[1])
                value = float(match.group(1)) if match else None
                strong.append(value)
                loose.append(value)
                continue
            match = _BARE.match(line)
            if match:
                strong.append(float(match.group(1)))
                loose.append(float(match.group(1)))
                continue
            match = _TRAILING.search(line)
            if match:
                loose.append(float(match.group(1)))
        values = strong if len(strong) >= need else loose
    out: list[float | None] = [None if v is None else _clip(v) for v in values[:n_tokens]]
    return out + [None] * (n_tokens - len(out))


_SEGMENT_ITEM = re.compile(r"segment\s*#?\s*(\d+)\b((?:(?!segment)[^\n])*)", re.IGNORECASE)
_NUMBERED_ITEM = re.compile(r"^\s*(?:[-*•]\s*)?(\d+)\s*[:.)\-–—]\s*(.*)$")
_NEGATIVE_WORDS = frozenset({
    "non", "not", "no", "never", "none", "false", "off", "negative", "t", "doesn", "don", "won", "isn", "wouldn",
    "nonactivate", "nonactivated", "nonactive", "inactive", "inactivated", "deactivate", "deactivated", "unactivated",
})
_POSITIVE_WORDS = frozenset({"yes", "true", "on", "fires", "fire", "positive"})


def _verdict(text: str) -> float | None:
    """1.0 / 0.0 from a segment answer (``activate``, ``**Non-activate**``, ``does not activate``...): the first
    telling word among the answer's first four words, else among its last three (text echoed before a verdict)."""
    words = re.sub(r"[^a-z]+", " ", text.lower()).split()
    for window in (words[:4], words[-3:]):
        for word in window:
            if word in _NEGATIVE_WORDS:
                return 0.0
            if word.startswith("activ") or word in _POSITIVE_WORDS:
                return 1.0
    return None


def parse_segment_reply(reply: str, n_segments: int) -> list[float | None]:
    """1.0 (activate) / 0.0 (non-activate) per segment, None where the reply says nothing usable.

    Finds ``Segment <i>: <verdict>`` anywhere (several per line is fine), falling back to ``<i>: <verdict>``
    numbered lines; tolerant of case, bullets, Markdown emphasis, ``non activate`` / ``not activate`` /
    ``inactive``. When a segment is answered twice the last answer counts.
    """
    text = strip_fences(strip_reasoning(reply))
    out: list[float | None] = [None] * n_segments
    for line in text.splitlines():
        items = [(m.group(1), m.group(2)) for m in _SEGMENT_ITEM.finditer(line)]
        if not items:
            numbered = _NUMBERED_ITEM.match(line)
            items = [(numbered.group(1), numbered.group(2))] if numbered else []
        for number, rest in items:
            index = int(number) - 1
            verdict = _verdict(rest)
            if 0 <= index < n_segments and verdict is not None:
                out[index] = verdict
    return out


# -- shared scoring ---------------------------------------------------------------------------------------------


def _unit_texts(ex: ActivationExample, method: Method, n_segments: int) -> list[str]:
    if method == "token":
        return list(ex.tokens)
    return ["".join(ex.tokens[a:b]) for a, b in segment_spans(len(ex.tokens), n_segments)]


def _messages(explanation: str, ex: ActivationExample, method: Method, n_segments: int) -> list[dict[str, str]]:
    if method == "token":
        return build_token_messages(explanation, ex.tokens)
    return build_segment_messages(explanation, _unit_texts(ex, "segment", n_segments))


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _skip(feat: FeatureRecords, explanation: Explanation, method: Method, simulator: str) -> SimulationScore | None:
    """A ``skipped`` score when there is nothing to simulate, else None."""
    if explanation.status != "ok" or not explanation.text:
        return SimulationScore(feat.feature_id, method, simulator, None, "skipped",
                               detail=f"explanation status is {explanation.status!r}")
    return None


def _final(base: dict[str, Any], preds: list[float], truth: list[float], detail: str = "") -> SimulationScore:
    """An ``ok`` / ``constant`` / ``skipped`` score from concatenated predictions and truth."""
    if len(preds) < 2:
        return SimulationScore(**base, corr=None, status="skipped", detail=f"only {len(preds)} unit(s) to score")
    corr = corr_score(preds, truth)
    if corr is None:
        side = "true activations" if corr_score(truth, truth) is None else "simulated activations"
        note = f"{side} are constant over {len(preds)} units; correlation undefined"
        return SimulationScore(**base, corr=None, status="constant", detail="; ".join(x for x in (note, detail) if x))
    return SimulationScore(**base, corr=corr, status="ok", detail=detail)


class Simulator(Protocol):
    """Predicts a feature's activations from its explanation; ``name`` goes into ``SimulationScore.simulator``."""

    name: str

    def simulate(
        self, feat: FeatureRecords, explanation: Explanation, method: Method, *, n_segments: int = 8
    ) -> SimulationScore: ...


# -- LLM simulator --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One (feature, method) being simulated by the LLM: its examples and, as they arrive, their replies."""

    slot: int
    feat: FeatureRecords
    method: Method
    examples: list[ActivationExample]
    replies: list[Completion | LLMError | None] = field(default_factory=list)
    remaining: int = 0


class LLMSimulator:
    """Simulation by an LLM through an OpenAI-compatible endpoint (name ``openai:<model>``).

    One request per example per method, not one per feature: each reply stays short (a token-level reply for
    six long examples in one go is hundreds of lines, where models lose count and misalign), the prompt matches
    the paper's one-passage-per-query setup, cached replies are reused when the example set changes, and all
    requests of all features run concurrently through ``client.complete_many``. A feature's score is
    ``failed`` if any of its requests failed and ``unparseable`` if any reply gave usable values for fewer than
    half its units; missing lines in an otherwise usable reply count as 0 (predicted silent) and are noted in
    ``detail``. Token counts include replies served from the cache, so costs stay comparable between runs.
    """

    def __init__(self, client: LLMClient, *, n_examples: int = 6, max_tokens: int | None = None) -> None:
        self.client = client
        self.n_examples = n_examples
        self.max_tokens = max_tokens
        self.name = f"openai:{client.config.model}"

    def simulate(
        self, feat: FeatureRecords, explanation: Explanation, method: Method, *, n_segments: int = 8
    ) -> SimulationScore:
        """Simulate one feature with one method (its example requests run concurrently)."""
        return self.simulate_many([(feat, explanation)], (method,), n_segments=n_segments, progress=False)[0]

    def simulate_many(
        self,
        items: Sequence[tuple[FeatureRecords, Explanation]],
        methods: Sequence[Method] = METHODS,
        *,
        n_segments: int = 8,
        progress: bool = True,
        on_result: Callable[[SimulationScore], None] | None = None,
    ) -> list[SimulationScore]:
        """Scores for every item x method (item-major order); all requests go through one ``complete_many``."""
        for method in methods:
            _check_method(method)
        scores: list[SimulationScore | None] = [None] * (len(items) * len(methods))
        jobs: list[_Job] = []
        requests: list[list[dict[str, str]]] = []
        owners: list[tuple[_Job, int]] = []

        def emit(slot: int, score: SimulationScore) -> None:
            scores[slot] = score
            if on_result is not None:
                on_result(score)

        for i, (feat, explanation) in enumerate(items):
            examples = simulation_examples(feat, self.n_examples)
            for k, method in enumerate(methods):
                slot = i * len(methods) + k
                skipped = _skip(feat, explanation, method, self.name)
                if skipped is None and not examples:
                    skipped = SimulationScore(feat.feature_id, method, self.name, None, "skipped",
                                              detail="no examples with tokens")
                if skipped is not None:
                    emit(slot, skipped)
                    continue
                job = _Job(slot, feat, method, examples, [None] * len(examples), len(examples))
                jobs.append(job)
                for e, ex in enumerate(examples):
                    requests.append(_messages(str(explanation.text), ex, method, n_segments))
                    owners.append((job, e))

        def arrived(index: int, result: Completion | LLMError) -> None:
            job, e = owners[index]
            job.replies[e] = result
            job.remaining -= 1
            if job.remaining == 0:
                emit(job.slot, self._finish(job, n_segments))

        if requests:
            params = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
            self.client.complete_many(requests, progress=progress, on_result=arrived, desc="simulation", **params)
        return [s for s in scores if s is not None]

    def _finish(self, job: _Job, n_segments: int) -> SimulationScore:
        done = [r for r in job.replies if isinstance(r, Completion)]
        errors = [r for r in job.replies if isinstance(r, LLMError)]
        truth_units = [true_units(ex, job.method, n_segments) for ex in job.examples]
        base: dict[str, Any] = {
            "feature_id": job.feat.feature_id,
            "method": job.method,
            "simulator": self.name,
            "n_examples": len(job.examples),
            "n_units": sum(len(t) for t in truth_units),
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in done),
            "generated_tokens": sum(r.completion_tokens or 0 for r in done),
        }
        if errors:
            detail = f"{len(errors)} of {len(job.replies)} requests failed: {errors[0]}"
            return SimulationScore(**base, corr=None, status="failed", detail=detail)
        preds: list[float] = []
        truth: list[float] = []
        bad: list[str] = []
        missing = 0
        for reply, units in zip(job.replies, truth_units):
            assert isinstance(reply, Completion)
            parse = parse_token_reply if job.method == "token" else parse_segment_reply
            parsed = parse(reply.text, len(units))
            got = sum(v is not None for v in parsed)
            if got < math.ceil(len(units) / 2):
                cut = " (cut at max_tokens)" if reply.finish_reason == "length" else ""
                bad.append(f"{got} of {len(units)} units parsed{cut}: {snippet(reply.text, 200)}")
                continue
            missing += len(units) - got
            preds += [v if v is not None else 0.0 for v in parsed]
            truth += units
        if bad:
            detail = f"{len(bad)} of {len(job.replies)} replies unusable; first: {bad[0]}"
            return SimulationScore(**base, corr=None, status="unparseable", detail=detail)
        detail = f"{missing} of {len(preds)} units missing from replies, counted as 0" if missing else ""
        return _final(base, preds, truth, detail)


# -- embedding simulator -----------------------------------------------------------------------------------------


class TextEmbedder(Protocol):
    """What the offline scorers need from ``safesail_training.embedder.SentenceEmbedder``."""

    name: str

    def embed(self, texts: Sequence[str]) -> Any: ...


def embed_rows(embedder: TextEmbedder, texts: Sequence[str]) -> np.ndarray:
    """``embedder.embed(texts)`` as a float32 numpy matrix with unit-length rows (all-zero rows stay zero)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    raw = embedder.embed(list(texts))
    if hasattr(raw, "detach"):
        raw = raw.detach().float().cpu().numpy()
    matrix = np.asarray(raw, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(texts):
        raise ValueError(f"embedder {embedder.name!r} returned shape {matrix.shape} for {len(texts)} texts")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class EmbeddingSimulator:
    """Simulation without an LLM (name ``embedding:<embedder>``): predictions are cosine similarities.

    Segment level: similarity between the explanation's embedding and each segment's text - a continuous
    value, not binarised into activate / non-activate. Token level: similarity between the explanation and a
    short window ending at the token (the token and the ``context_tokens`` before it); windows are embedded once
    and cached by text. Blank units predict 0.

    ``prompt_tokens`` / ``generated_tokens`` are estimates (``detail`` says so): ``count_tokens`` applied to the
    exact prompt :class:`LLMSimulator` would send for the same examples and to the reply it would expect, with
    the true levels filled in. This measures the segment-vs-token cost saving offline.
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        count_tokens: Callable[[str], int],
        *,
        n_examples: int = 6,
        context_tokens: int = 2,
        cache_size: int = 50_000,
    ) -> None:
        self.embedder = embedder
        self.count_tokens = count_tokens
        self.n_examples = n_examples
        self.context_tokens = context_tokens
        self.cache_size = cache_size
        self.name = f"embedding:{embedder.name}"
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-length embedding of each distinct text (LRU-cached; one ``embed`` call for the misses)."""
        wanted = list(dict.fromkeys(texts))
        missing = [t for t in wanted if t not in self._cache]
        if missing:
            for text, row in zip(missing, embed_rows(self.embedder, missing)):
                self._cache[text] = row
        out = {}
        for text in wanted:
            self._cache.move_to_end(text)
            out[text] = self._cache[text]
        while len(self._cache) > max(self.cache_size, len(wanted)):
            self._cache.popitem(last=False)
        return out

    def _unit_queries(self, ex: ActivationExample, method: Method, n_segments: int) -> list[str]:
        if method == "segment":
            return [" ".join(t.split()) for t in _unit_texts(ex, "segment", n_segments)]
        return [
            " ".join("".join(ex.tokens[max(0, i - self.context_tokens) : i + 1]).split()) for i in range(len(ex.tokens))
        ]

    def _estimate(self, explanation: str, ex: ActivationExample, method: Method, n_segments: int) -> tuple[int, int]:
        """(prompt, generated) tokens the LLM simulator would spend on this example."""
        messages = _messages(explanation, ex, method, n_segments)
        prompt = self.count_tokens("\n\n".join(m["content"] for m in messages))
        if method == "token":
            reply = format_token_reply(ex.tokens, _token_levels(ex))
        else:
            reply = format_segment_reply([t > 0 for t in true_units(ex, "segment", n_segments)])
        return prompt, self.count_tokens(reply)

    def simulate(
        self, feat: FeatureRecords, explanation: Explanation, method: Method, *, n_segments: int = 8
    ) -> SimulationScore:
        """Score one feature with one method; ``skipped`` without an ok explanation or examples."""
        _check_method(method)
        skipped = _skip(feat, explanation, method, self.name)
        if skipped is not None:
            return skipped
        examples = simulation_examples(feat, self.n_examples)
        if not examples:
            return SimulationScore(feat.feature_id, method, self.name, None, "skipped",
                                   detail="no examples with tokens")
        text = str(explanation.text)
        queries = [self._unit_queries(ex, method, n_segments) for ex in examples]
        vectors = self._vectors([text] + [q for qs in queries for q in qs if q])
        target = vectors[text]
        preds: list[float] = []
        truth: list[float] = []
        prompt_tokens = generated_tokens = 0
        for ex, qs in zip(examples, queries):
            preds += [float(vectors[q] @ target) if q else 0.0 for q in qs]
            truth += true_units(ex, method, n_segments)
            p, g = self._estimate(text, ex, method, n_segments)
            prompt_tokens += p
            generated_tokens += g
        base: dict[str, Any] = {
            "feature_id": feat.feature_id,
            "method": method,
            "simulator": self.name,
            "n_examples": len(examples),
            "n_units": len(preds),
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated_tokens,
        }
        return _final(base, preds, truth, "estimated prompt/generated tokens (LLM prompt and reply format counted)")


def simulate_many(
    simulator: Simulator,
    items: Sequence[tuple[FeatureRecords, Explanation]],
    methods: Sequence[Method] = METHODS,
    *,
    n_segments: int = 8,
    progress: bool = True,
    on_result: Callable[[SimulationScore], None] | None = None,
) -> list[SimulationScore]:
    """Scores for every (feature, explanation) x method, item-major; ``on_result`` gets each as it is made.

    A simulator with its own ``simulate_many`` (the LLM one, which batches requests concurrently) is used
    through it; otherwise items are simulated one by one under a progress bar.
    """
    for method in methods:
        _check_method(method)
    batched = getattr(simulator, "simulate_many", None)
    if callable(batched):
        return batched(items, methods, n_segments=n_segments, progress=progress, on_result=on_result)
    from tqdm.auto import tqdm

    out: list[SimulationScore] = []
    with tqdm(total=len(items) * len(methods), desc="simulation", unit="score", disable=not progress) as bar:
        for feat, explanation in items:
            for method in methods:
                score = simulator.simulate(feat, explanation, method, n_segments=n_segments)
                out.append(score)
                bar.update(1)
                if on_result is not None:
                    on_result(score)
    return out
