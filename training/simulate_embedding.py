"""The offline simulator: predictions are embedding similarities, no LLM (``embedding:<embedder>``).

:class:`EmbeddingSimulator` scores one feature at a time with :func:`~safesail_training.simulate.final_score`
and estimates the tokens the LLM route would spend on the same examples (prompts and reply formats from
:mod:`safesail_training.simulate_prompts`). :class:`TextEmbedder` and :func:`embed_rows` are what the offline
scorers need from an embedder (:class:`safesail_training.embedder.SentenceEmbedder`); the offline SpScore
(:mod:`safesail_training.spscore`) uses them too. ``build_db`` uses this simulator by default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from safesail_neuron_db.records import ActivationExample, Explanation, FeatureRecords, SimulationScore
from safesail_training.simulate import (
    Method,
    check_method,
    final_score,
    simulation_examples,
    skipped_score,
    token_levels,
    true_units,
    unit_texts,
)
from safesail_training.simulate_prompts import format_segment_reply, format_token_reply, simulation_messages


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
    exact prompt :class:`~safesail_training.simulate_llm.LLMSimulator` would send for the same examples and to
    the reply it would expect, with the true levels filled in. This measures the segment-vs-token cost saving offline.
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
            return [" ".join(t.split()) for t in unit_texts(ex, "segment", n_segments)]
        return [
            " ".join("".join(ex.tokens[max(0, i - self.context_tokens) : i + 1]).split()) for i in range(len(ex.tokens))
        ]

    def _estimate(self, explanation: str, ex: ActivationExample, method: Method, n_segments: int) -> tuple[int, int]:
        """(prompt, generated) tokens the LLM simulator would spend on this example."""
        messages = simulation_messages(explanation, ex, method, n_segments)
        prompt = self.count_tokens("\n\n".join(m["content"] for m in messages))
        if method == "token":
            reply = format_token_reply(ex.tokens, token_levels(ex))
        else:
            reply = format_segment_reply([t > 0 for t in true_units(ex, "segment", n_segments)])
        return prompt, self.count_tokens(reply)

    def simulate(
        self, feat: FeatureRecords, explanation: Explanation, method: Method, *, n_segments: int = 8
    ) -> SimulationScore:
        """Score one feature with one method; ``skipped`` without an ok explanation or examples."""
        check_method(method)
        skipped = skipped_score(feat, explanation, method, self.name)
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
        return final_score(base, preds, truth,
                           "estimated prompt/generated tokens (LLM prompt and reply format counted)")
