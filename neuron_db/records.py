"""The neuron database's record types: what one feature is made of (concepts, activation examples, explanation,
simulation scores, SpScore) and the ``"<layer>_<latent>"`` feature id.

The offline pipeline (`safesail_training`: filter -> records -> explain -> simulate -> score -> map) builds these
records stage by stage and hands them to `DatabaseWriter` (`safesail_neuron_db.writer`); `NeuronDB`
(`safesail_neuron_db.database`) gives them back when read. They live here, in the database package, because
they *are* the database's contract: both halves import them, and this module imports neither half. Kept free of
torch so every stage, the store and the tests can share them.

A feature is named ``"<layer>_<latent>"`` (e.g. ``"14_4828"``), the paper's convention; a database holds one
hook site (e.g. ``mlp_out``) so layer + latent is unique.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

N_LEVELS = 10  # activations are quantized to integer levels 0..N_LEVELS (paper: linear interpolation, 0-10)

ExplanationStatus = Literal["ok", "unparseable", "failed", "skipped"]
ScoreStatus = Literal["ok", "unparseable", "failed", "constant", "skipped"]


def feature_id(layer: int, latent: int) -> str:
    """The paper-style feature name, e.g. ``feature_id(14, 4828) == "14_4828"``."""
    return f"{layer}_{latent}"


def parse_feature_id(fid: str) -> tuple[int, int]:
    """``"14_4828" -> (14, 4828)``; a ValueError naming the input otherwise."""
    parts = fid.strip().split("_")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{fid!r} is not a feature id; expected '<layer>_<latent>', e.g. '14_4828'")
    return int(parts[0]), int(parts[1])


def quantize(acts: list[float], max_act: float) -> list[int]:
    """Linear interpolation of activations onto integer levels 0..10 relative to ``max_act`` (>0 -> at least 1)."""
    if max_act <= 0:
        return [0 for _ in acts]
    out = []
    for a in acts:
        if a <= 0:
            out.append(0)
        else:
            out.append(max(1, min(N_LEVELS, int(round(N_LEVELS * a / max_act)))))
    return out


@dataclass
class ConceptHit:
    """A level-1 concept a feature passed the precision/recall filter for (paper eq. 6)."""

    level0: str
    level1: str
    precision: float
    recall: float
    n_pairs: int
    concept_fires: int  # concept queries on which the feature fired
    deconcept_fires: int  # de-concept twins on which it fired


@dataclass
class ActivationExample:
    """One window of text around a firing (or a quiet window), with true and quantized activations per token."""

    tokens: list[str]  # decoded text piece of each token; "".join(tokens) is the window's text
    acts: list[float]  # true feature activation per token (0.0 where it did not fire)
    levels: list[int]  # quantize(acts, feature max over the explanation set)
    max_act: float  # max(acts)
    kind: str  # "top" (highest activations), "level" (sampled per level bin) or "quiet" (no firing)
    level: int  # level bin of max_act, 0..10
    source: str = ""  # where the text came from (corpus kind / record source)

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class FeatureRecords:
    """What the explain/simulate/score stages know about one selected feature."""

    feature_id: str
    layer: int
    latent: int
    concepts: list[ConceptHit]
    max_act: float  # max activation over the explanation set
    fire_rate: float  # fraction of explanation-set tokens on which it fired
    examples: list[ActivationExample] = field(default_factory=list)  # top first, then per-level, then quiet

    @property
    def top(self) -> list[ActivationExample]:
        return [e for e in self.examples if e.kind == "top"]

    @property
    def domains(self) -> list[str]:
        return sorted({c.level0 for c in self.concepts})


@dataclass
class Explanation:
    """An explainer's output for one feature. ``text`` is None unless ``status == "ok"`` - never fake text."""

    feature_id: str
    text: str | None
    status: ExplanationStatus
    method: str  # "offline" or "openai:<model>"
    detail: str = ""  # error message / raw reply snippet when status != ok
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class SimulationScore:
    """CorrScore of one simulation method for one feature: Pearson r of simulated vs true activations."""

    feature_id: str
    method: Literal["token", "segment"]
    simulator: str  # "embedding:all-MiniLM-L6-v2" or "openai:<model>"
    corr: float | None  # None unless status == "ok"
    status: ScoreStatus
    n_examples: int = 0
    n_units: int = 0  # tokens (token-level) or segments (segment-level) scored
    prompt_tokens: int = 0
    generated_tokens: int = 0  # completion tokens (LLM) or the tokens the reply format needs (offline estimate)
    detail: str = ""


@dataclass
class SuperpositionScore:
    """SpScore 0-10 (higher = more polysemantic). ``method`` says whether an LLM or the offline proxy made it."""

    feature_id: str
    value: float | None
    status: ScoreStatus
    method: str  # "openai:<model>" or "offline-proxy:<what>"
    detail: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of any record above."""
    return asdict(obj)
