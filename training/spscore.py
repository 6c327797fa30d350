"""Superposition score, SpScore (Safe-SAIL appendix C.1): how many unrelated concepts a feature mixes.

Scale 0-10: 0 = one clear concept (or close facets of one concept), 10 = many unrelated concepts mixed.

* :class:`LLMSpScorer` (``"openai:<model>"``): an LLM rates the explanation, with a few of the feature's
  strongest contexts as evidence, and answers ``{"score": <0-10>, "reason": "..."}`` (:func:`parse_spscore`).
* :class:`OfflineSpScorer` (``"offline-proxy:context-dispersion"``): a proxy, not the paper's measure -
  10 x the mean pairwise cosine distance between sentence embeddings of the feature's top contexts. Contexts
  about one topic sit close together (low score); a feature firing on unrelated material spreads them out.

How it connects: the ``spscore`` stage of `safesail build-db` (`safesail_training.build_db_describe`) runs
`score_many`; the offline scorer embeds with `safesail_training.simulate_embedding.embed_rows`, the LLM one shares
the reply helpers of `safesail_training.explain`, and scores are `safesail_neuron_db.records.SuperpositionScore`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from safesail_guard.llm_client import LLMClient
from safesail_guard.llm_config import Completion, LLMError
from safesail_neuron_db.records import ActivationExample, Explanation, FeatureRecords, SuperpositionScore
from safesail_training.explain import firing_examples, peak_window, snippet, strip_fences, strip_reasoning
from safesail_training.simulate_embedding import TextEmbedder, embed_rows

__all__ = [
    "LLMSpScorer",
    "OfflineSpScorer",
    "SpScorer",
    "build_spscore_messages",
    "parse_spscore",
    "score_many",
    "top_contexts",
]

MAX_SPSCORE = 10.0

_SYSTEM_PROMPT = """\
You judge descriptions of features ("neurons") found inside a language model. Some features stand for one \
idea; others are a blend of several ideas that have little to do with each other. Rate how mixed the \
described feature is, on a scale from 0 to 10:

0-2: a single, clear concept - or a few closely related facets of the same broader concept.
3-5: one main concept with some loosely connected extras.
6-8: several distinct concepts with only a weak common thread.
9-10: a grab bag of unrelated things with no common thread at all.

The more unrelated concepts the description needs, the higher the score. Judge the description first; the \
passages where the feature fires most strongly (strongest token in [[double brackets]]) are there to check \
whether a tidy description hides a mix.

Two calibration points:
- "names of guns and ammunition (rifle, pistol, rounds, magazine), in hunting and crime stories" -> 1
- "cooking measurements, software licence disclaimers and pet names for relatives" -> 9

Answer with only a JSON object: {"score": <whole number 0-10>, "reason": "<one short sentence>"}"""


def top_contexts(feat: FeatureRecords, n: int, *, before: int = 8, after: int = 4, mark: bool = False) -> list[str]:
    """Windows around the peak token of the feature's first ``n`` top examples (any firing examples when it
    has no top ones); blank windows are dropped."""
    firing = firing_examples(feat)
    chosen: list[ActivationExample] = [ex for ex in firing if ex.kind == "top"] or firing
    windows = [peak_window(ex, before, after, mark=mark, ellipsis=mark) for ex in chosen]
    return [w for w in windows if w.strip()][:n]


def build_spscore_messages(explanation: str, contexts: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages asking for the SpScore of ``explanation`` given a few strongest ``contexts``."""
    lines = [f"Feature description: {explanation}"]
    if contexts:
        lines += ["", "Passages where it fires most strongly:"]
        lines += [f"{i}. {' '.join(c.split())}" for i, c in enumerate(contexts, start=1)]
    return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_SCORE_FIELD = re.compile(r"""["']?\bscore\b["']?\s*[:=]\s*["']?\s*(-?\d+(?:\.\d+)?)""", re.IGNORECASE)
_REASON_FIELD = re.compile(r"""["']?\breason\b["']?\s*[:=]\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\n,}]*))""",
                           re.IGNORECASE)
_NUMBER_TEXT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$")


def _to_score(value: Any) -> float | None:
    """A finite number in 0-10 from a JSON value (number, or a string like ``"7"`` / ``"7/10"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and (match := _NUMBER_TEXT.match(value)):
        number = float(match.group(1))
    else:
        return None
    if not math.isfinite(number) or not 0.0 <= number <= MAX_SPSCORE:
        return None
    return number


def _key(data: dict[str, Any], name: str) -> Any:
    for key, value in data.items():
        if isinstance(key, str) and key.strip().lower() == name:
            return value
    return None


def parse_spscore(reply: str) -> tuple[float | None, str]:
    """``(score, reason)`` from an LLM reply; score None when missing, not a number or outside 0-10.

    Reasoning blocks and fences are dropped; the last JSON object with a ``score`` key wins; failing that, a
    loose ``score: 7`` pattern (single quotes, trailing commas, prose) or a reply that is just a number.
    """
    text = strip_fences(strip_reasoning(reply)).strip()
    for candidate in reversed(_OBJECT.findall(text)):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and _key(data, "score") is not None:
            reason = _key(data, "reason")
            return _to_score(_key(data, "score")), " ".join(str(reason).split()) if reason is not None else ""
    reason_match = list(_REASON_FIELD.finditer(text))
    reason = ""
    if reason_match:
        groups = reason_match[-1].groups()
        reason = " ".join(next((g for g in groups if g is not None), "").split())
    score_match = list(_SCORE_FIELD.finditer(text))
    if score_match:
        return _to_score(score_match[-1].group(1)), reason
    if (bare := _NUMBER_TEXT.match(text)) is not None:
        return _to_score(bare.group(1)), reason
    return None, reason


class SpScorer(Protocol):
    """Anything that scores superposition; ``method`` goes into ``SuperpositionScore.method``."""

    method: str

    def score(self, feat: FeatureRecords, explanation: Explanation) -> SuperpositionScore: ...


def _skip_unexplained(feat: FeatureRecords, explanation: Explanation, method: str) -> SuperpositionScore | None:
    if explanation.status != "ok" or not explanation.text:
        return SuperpositionScore(feat.feature_id, None, "skipped", method,
                                  detail=f"explanation status is {explanation.status!r}")
    return None


class LLMSpScorer:
    """SpScore from an LLM (method ``openai:<model>``): the explanation plus ``n_contexts`` top contexts.

    Features without an ok explanation are ``skipped`` (no request); LLM errors become ``failed`` and replies
    without a 0-10 score ``unparseable`` (``detail`` holds a snippet); an ok score keeps the reason in ``detail``.
    """

    def __init__(self, client: LLMClient, *, n_contexts: int = 3, max_tokens: int | None = None) -> None:
        self.client = client
        self.n_contexts = n_contexts
        self.max_tokens = max_tokens
        self.method = f"openai:{client.config.model}"

    def messages(self, feat: FeatureRecords, explanation: Explanation) -> list[dict[str, str]]:
        """The request this scorer sends for one feature."""
        return build_spscore_messages(str(explanation.text), top_contexts(feat, self.n_contexts, mark=True))

    def _result(self, feat: FeatureRecords, result: Completion | LLMError) -> SuperpositionScore:
        if isinstance(result, LLMError):
            return SuperpositionScore(feat.feature_id, None, "failed", self.method, detail=str(result))
        tokens = {"prompt_tokens": result.prompt_tokens or 0, "completion_tokens": result.completion_tokens or 0}
        value, reason = parse_spscore(result.text)
        if value is None:
            cut = " (cut at max_tokens)" if result.finish_reason == "length" else ""
            return SuperpositionScore(feat.feature_id, None, "unparseable", self.method,
                                      detail=f"no 0-10 score in reply{cut}: {snippet(result.text)}", **tokens)
        return SuperpositionScore(feat.feature_id, value, "ok", self.method, detail=reason, **tokens)

    def score(self, feat: FeatureRecords, explanation: Explanation) -> SuperpositionScore:
        """Score one feature."""
        return self.score_many([(feat, explanation)], progress=False)[0]

    def score_many(
        self,
        items: Sequence[tuple[FeatureRecords, Explanation]],
        *,
        progress: bool = True,
        on_result: Callable[[SuperpositionScore], None] | None = None,
    ) -> list[SuperpositionScore]:
        """Score every item (input order kept), requests sent concurrently; ``on_result`` gets each result."""
        results: list[SuperpositionScore | None] = [None] * len(items)
        todo: list[int] = []
        for i, (feat, explanation) in enumerate(items):
            skipped = _skip_unexplained(feat, explanation, self.method)
            if skipped is None:
                todo.append(i)
                continue
            results[i] = skipped
            if on_result is not None:
                on_result(skipped)

        def done(index: int, result: Completion | LLMError) -> None:
            score = self._result(items[todo[index]][0], result)
            results[todo[index]] = score
            if on_result is not None:
                on_result(score)

        if todo:
            params = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
            self.client.complete_many([self.messages(*items[i]) for i in todo], progress=progress,
                                      on_result=done, desc="superposition scores", **params)
        return [r for r in results if r is not None]


class OfflineSpScorer:
    """Offline proxy for SpScore: 10 x mean pairwise cosine distance (clipped to [0, 1]) between embeddings of
    the feature's top contexts (windows around each top example's peak token).

    A proxy, not an LLM judgement: it measures how varied the text the feature fires on is, and does not read
    the explanation (so it scores features whose explanation failed too). Needs at least 2 contexts, else
    ``skipped``.
    """

    method = "offline-proxy:context-dispersion"

    def __init__(self, embedder: TextEmbedder, *, n_contexts: int = 8, before: int = 8, after: int = 4) -> None:
        self.embedder = embedder
        self.n_contexts = n_contexts
        self.before = before
        self.after = after

    def score(self, feat: FeatureRecords, explanation: Explanation) -> SuperpositionScore:
        """Score one feature (``explanation`` is not used)."""
        contexts = top_contexts(feat, self.n_contexts, before=self.before, after=self.after)
        if len(contexts) < 2:
            return SuperpositionScore(feat.feature_id, None, "skipped", self.method,
                                      detail=f"needs >= 2 top contexts, found {len(contexts)}")
        vectors = embed_rows(self.embedder, contexts)
        sims = vectors @ vectors.T
        upper = np.triu_indices(len(contexts), k=1)
        distance = float(np.clip(np.mean(1.0 - sims[upper]), 0.0, 1.0))
        detail = (f"proxy: 10 x mean pairwise cosine distance of {len(contexts)} top-context embeddings "
                  f"({self.embedder.name}); not an LLM rating")
        return SuperpositionScore(feat.feature_id, round(10.0 * distance, 4), "ok", self.method, detail=detail)


def score_many(
    scorer: SpScorer,
    items: Sequence[tuple[FeatureRecords, Explanation]],
    *,
    progress: bool = True,
    on_result: Callable[[SuperpositionScore], None] | None = None,
) -> list[SuperpositionScore]:
    """SpScores for every (feature, explanation), input order kept; ``on_result`` gets each as it is made.
    A scorer with its own ``score_many`` (the LLM one, which batches requests) is used through it."""
    batched = getattr(scorer, "score_many", None)
    if callable(batched):
        return batched(items, progress=progress, on_result=on_result)
    from tqdm.auto import tqdm

    out: list[SuperpositionScore] = []
    for feat, explanation in tqdm(items, desc="superposition scores", unit="feature", disable=not progress):
        result = scorer.score(feat, explanation)
        out.append(result)
        if on_result is not None:
            on_result(result)
    return out
