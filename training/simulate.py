"""Score an explanation by simulation (Safe-SAIL section 2.2.3 and 3.3): units, truth and the CorrScore.

A simulator reads only the explanation and predicts where the feature fires on held-out text; the CorrScore is
the Pearson r between those predictions and the true activations, computed per feature over all its simulation
examples concatenated (:func:`simulation_examples`). Two granularities (``method``):

* ``"token"``: every token is a unit; the simulator sees ``token<TAB>unknown`` lines and answers
  ``token<TAB>activation`` lines (0-10). Truth = each token's true activation.
* ``"segment"``: each example is cut into ``n_segments`` contiguous spans (:func:`segment_spans`); the
  simulator answers ``Segment i: activate`` / ``Segment i: non-activate``. Truth = max true activation in the
  segment. Far fewer tokens to generate, which is the paper's point.

This module holds what every simulator shares: the units and their truth, the example mix, :func:`corr_score`
and the score it becomes (:func:`final_score`), the :class:`Simulator` protocol and :func:`simulate_many`, which
``build_db`` calls. The simulators themselves: :class:`~safesail_training.simulate_llm.LLMSimulator` (an
OpenAI-compatible endpoint, prompts and reply parsers in :mod:`safesail_training.simulate_prompts`) and
:class:`~safesail_training.simulate_embedding.EmbeddingSimulator` (no LLM: cosine similarity between the
explanation and each unit's text, plus an estimate of what the LLM route would cost for the same units, so the
segment-vs-token saving can be measured offline). Scores are :class:`~safesail_neuron_db.records.SimulationScore`
records of the neuron database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from safesail_neuron_db.records import ActivationExample, Explanation, FeatureRecords, SimulationScore

__all__ = [
    "METHODS",
    "Method",
    "Simulator",
    "check_method",
    "corr_score",
    "final_score",
    "segment_spans",
    "simulate_many",
    "simulation_examples",
    "skipped_score",
    "token_levels",
    "true_units",
    "unit_texts",
]

Method = Literal["token", "segment"]
METHODS: tuple[Method, ...] = ("token", "segment")


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


def token_levels(ex: ActivationExample) -> list[int]:
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


# -- shared scoring ---------------------------------------------------------------------------------------------


def unit_texts(ex: ActivationExample, method: Method, n_segments: int) -> list[str]:
    """The text of each unit: the tokens, or the joined tokens of each segment."""
    if method == "token":
        return list(ex.tokens)
    return ["".join(ex.tokens[a:b]) for a, b in segment_spans(len(ex.tokens), n_segments)]


def check_method(method: str) -> None:
    """Raise ValueError naming the valid methods unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def skipped_score(
    feat: FeatureRecords, explanation: Explanation, method: Method, simulator: str
) -> SimulationScore | None:
    """A ``skipped`` score when there is nothing to simulate, else None."""
    if explanation.status != "ok" or not explanation.text:
        return SimulationScore(feat.feature_id, method, simulator, None, "skipped",
                               detail=f"explanation status is {explanation.status!r}")
    return None


def final_score(base: dict[str, Any], preds: list[float], truth: list[float], detail: str = "") -> SimulationScore:
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
        check_method(method)
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
