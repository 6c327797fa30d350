"""The LLM simulator: predictions from a model behind an OpenAI-compatible endpoint (``openai:<model>``).

:class:`LLMSimulator` sends one request per example and method (prompts from
:mod:`safesail_training.simulate_prompts`) through the shared LLM client, parses the replies and scores them with
:func:`~safesail_training.simulate.final_score`; ``build_db`` picks it with ``--simulator openai`` and calls it
through :func:`~safesail_training.simulate.simulate_many`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from safesail_guard.llm_client import LLMClient
from safesail_guard.llm_config import Completion, LLMError
from safesail_neuron_db.records import ActivationExample, Explanation, FeatureRecords, SimulationScore
from safesail_training.explain import snippet
from safesail_training.simulate import (
    METHODS,
    Method,
    check_method,
    final_score,
    simulation_examples,
    skipped_score,
    true_units,
)
from safesail_training.simulate_prompts import parse_segment_reply, parse_token_reply, simulation_messages


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
            check_method(method)
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
                skipped = skipped_score(feat, explanation, method, self.name)
                if skipped is None and not examples:
                    skipped = SimulationScore(feat.feature_id, method, self.name, None, "skipped",
                                              detail="no examples with tokens")
                if skipped is not None:
                    emit(slot, skipped)
                    continue
                job = _Job(slot, feat, method, examples, [None] * len(examples), len(examples))
                jobs.append(job)
                for e, ex in enumerate(examples):
                    requests.append(simulation_messages(str(explanation.text), ex, method, n_segments))
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
        return final_score(base, preds, truth, detail)
