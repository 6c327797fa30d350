"""Style-generalisation check: do the selected safety features detect the *concept* or the *text style*?

Features are selected on concept-contrastive query pairs, which are mostly first-person requests plus a few
template carriers. A feature can score well there and still be a detector of the pair's register rather than of
the concept (a known failure: 0.95 AUROC in-style, below chance in other styles). This module scores selected
features on an independent probe set written in four styles the pairs never use:

* ``third_person_narrative`` -- past-tense fiction prose;
* ``encyclopedic`` -- neutral reference-work prose;
* ``dialogue_transcript`` -- a short two-speaker transcript ``A: ... B: ...``;
* ``policy_or_legal`` -- clauses, regulations, terms of service.

Each style has 5 texts per level-0 domain (spread over its level-1 concepts) and 25 benign texts on everyday
topics written in the same style, so within one style the only systematic difference is the concept.

How it connects: the caller runs the model + SAE over ``[t.text for t in load_style_probe()]``, takes for
each selected feature its max activation over each text's tokens (``feature_max[i, j]``), and passes the
level-0 domains each feature was selected for. `style_check` then scores, per domain and style, the detector
"max over the domain's features" by AUROC. The probe set is for evaluation only: never select or tune on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .corpus.errors import CorpusError
from .corpus.pairs import Taxonomy, load_taxonomy

if TYPE_CHECKING:  # torch is only needed for the type hint; importing it here would slow down every import
    import torch

__all__ = [
    "BENIGN",
    "LOW_AUROC",
    "STYLES",
    "ProbeText",
    "StyleReport",
    "auroc",
    "default_style_probe_file",
    "load_style_probe",
    "style_check",
]

STYLES: tuple[str, ...] = ("third_person_narrative", "encyclopedic", "dialogue_transcript", "policy_or_legal")
"""The styles of the shipped probe set (user files may use other style names)."""

BENIGN = "benign"
"""The `domain` of texts that carry no safety concept."""

LOW_AUROC = 0.6
"""Cells below this AUROC are counted as failures in `StyleReport.markdown`."""

_FIELDS = ("id", "style", "domain", "level1", "text")
_STYLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PACKAGE = "safesail_training.corpus"


@dataclass(frozen=True)
class ProbeText:
    """One probe text: `domain` is a level-0 domain of the taxonomy or ``"benign"`` (then `level1` is None)."""

    id: str
    style: str
    domain: str
    level1: str | None
    text: str


def default_style_probe_file() -> Traversable:
    """The shipped probe file, ``data/style_probe.jsonl`` in the package data of ``safesail_training.corpus``."""
    return resources.files(_PACKAGE) / "data" / "style_probe.jsonl"


def load_style_probe(path: Path | None = None, *, taxonomy: Taxonomy | None = None) -> list[ProbeText]:
    """Load and validate a style probe JSONL file (the shipped one when `path` is None).

    Each non-blank line must be a JSON object with exactly the fields ``id, style, domain, level1, text``:
    non-empty strings (``level1`` null for benign texts), a lowercase snake-case style, a domain that is a
    level-0 of `taxonomy` (default: the shipped taxonomy) or ``"benign"``, a level1 of that domain, and ids
    unique in the file. Any violation raises `CorpusError` (a ValueError) naming the file and 1-based line.
    """
    tax = taxonomy if taxonomy is not None else load_taxonomy()
    source: Path | Traversable = default_style_probe_file() if path is None else Path(path)
    name = str(source)
    try:
        raw = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"{name}: style probe file not found", path=name) from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{name}: not valid UTF-8 ({e.reason})", path=name) from None
    texts: list[ProbeText] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        item = _parse_line(line, tax, name, lineno)
        if item.id in seen:
            raise CorpusError(
                f"{name}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})", path=name, line=lineno
            )
        seen[item.id] = lineno
        texts.append(item)
    if not texts:
        raise CorpusError(f"{name}: no probe texts in file", path=name)
    return texts


def _parse_line(line: str, tax: Taxonomy, name: str, lineno: int) -> ProbeText:
    def fail(msg: str) -> CorpusError:
        return CorpusError(f"{name}:{lineno}: {msg}", path=name, line=lineno)

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise fail(f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _FIELDS if k not in obj]
    extra = sorted(set(obj) - set(_FIELDS))
    if missing:
        raise fail(f"missing field(s): {', '.join(missing)}")
    if extra:
        raise fail(f"unknown field(s): {', '.join(extra)}")
    for key in ("id", "style", "domain", "text"):
        value = obj[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"field {key!r} must be a non-empty string, got {value!r}")
    if obj["id"] != obj["id"].strip():
        raise fail(f"id {obj['id']!r} has leading or trailing whitespace")
    if not _STYLE_RE.match(obj["style"]):
        raise fail(f"style {obj['style']!r} must be lowercase snake_case (e.g. {STYLES[0]!r})")
    domain, level1 = obj["domain"], obj["level1"]
    if domain == BENIGN:
        if level1 is not None:
            raise fail(f"benign texts must have level1 null, got {level1!r}")
    else:
        if domain not in tax.level0s:
            raise fail(f"unknown domain {domain!r}; valid: {BENIGN}, {', '.join(tax.level0s)}")
        if not isinstance(level1, str) or level1 not in tax.level1s(domain):
            raise fail(f"level1 {level1!r} is not a level1 of {domain!r}; valid: {', '.join(tax.level1s(domain))}")
    return ProbeText(id=obj["id"], style=obj["style"], domain=domain, level1=level1, text=obj["text"])


# --------------------------------------------------------------------------------------------------- metric


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """Area under the ROC curve of scores `pos` (positives) against `neg` (negatives).

    The Mann-Whitney statistic: the fraction of (positive, negative) pairs in which the positive scores higher,
    ties counted 1/2. 1.0 = perfect separation, 0.5 = chance, 0.0 = perfectly inverted. None if either side is
    empty; ValueError on NaN.
    """
    p = np.asarray(pos, dtype=np.float64).ravel()
    n = np.asarray(neg, dtype=np.float64).ravel()
    if p.size == 0 or n.size == 0:
        return None
    if np.isnan(p).any() or np.isnan(n).any():
        raise ValueError("auroc: scores contain NaN")
    n_sorted = np.sort(n)
    below = np.searchsorted(n_sorted, p, side="left")  # negatives strictly below each positive
    not_above = np.searchsorted(n_sorted, p, side="right")  # negatives below or tied
    wins = below.sum() + 0.5 * (not_above - below).sum()
    return float(wins / (p.size * n.size))


# --------------------------------------------------------------------------------------------------- report


@dataclass
class StyleReport:
    """AUROC per domain and style of the detector "max activation over the features selected for the domain".

    per_domain: domain -> style -> AUROC of the domain's texts against every other text of that style (benign
        and the other domains); None when no feature was selected for the domain.
    per_domain_vs_benign: the same against the benign texts of the style only (neighbouring domains such as
        terror / violence / weapons legitimately share features, which lowers `per_domain`).
    per_style_mean: style -> mean of `per_domain` over the domains that have features (None if none has).
    n_features: domain -> number of selected features tagged with it.
    """

    per_domain: dict[str, dict[str, float | None]]
    per_style_mean: dict[str, float | None]
    n_features: dict[str, int]
    per_domain_vs_benign: dict[str, dict[str, float | None]] = field(default_factory=dict)
    styles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.styles:
            self.styles = list(self.per_style_mean)

    def cells_below(self, threshold: float = LOW_AUROC, *, vs_benign: bool = False) -> list[tuple[str, str]]:
        """The (domain, style) cells whose AUROC is below `threshold` (cells without features are skipped)."""
        table = self.per_domain_vs_benign if vs_benign else self.per_domain
        return [(d, s) for d, row in table.items() for s, v in row.items() if v is not None and v < threshold]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)

    def markdown(self) -> str:
        """Two tables (vs all other texts of the style, vs benign only), a legend and the count of weak cells."""
        n_cells = sum(v is not None for row in self.per_domain.values() for v in row.values())
        parts = [
            "### Style generalisation: AUROC per domain and style",
            "",
            "Detector score of a text = max activation over the features selected for the domain. Positives: the "
            "domain's probe texts of one style; negatives: all other probe texts of the same style.",
            "",
            _table(self.per_domain, self.per_style_mean, self.n_features, self.styles),
            "",
            f"**{len(self.cells_below())} of {n_cells} domain/style cells are below {LOW_AUROC}.**",
            "",
            "#### Against benign texts only",
            "",
            "Same detector; negatives are only the benign texts of the same style (other domains excluded, since "
            "neighbouring domains such as terror, violence and weapons legitimately share features).",
            "",
            _table(self.per_domain_vs_benign, _style_means(self.per_domain_vs_benign, self.styles),
                   self.n_features, self.styles),
            "",
            f"{len(self.cells_below(vs_benign=True))} of {n_cells} domain/style cells are below {LOW_AUROC} "
            "against benign texts.",
            "",
            "Legend: AUROC = probability that a random text of the domain scores higher than a random negative text "
            "of the same style (ties count 1/2). 1.0 = perfect, **0.5 = chance**, below 0.5 = the features fire "
            "*less* on the domain than on other text (inverted). A domain that scores high in one style and near or "
            "below 0.5 in the others detects the style, not the concept. `-` = no feature was selected for the "
            "domain. `n_feat` = number of selected features tagged with the domain.",
        ]
        return "\n".join(parts) + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def _style_means(table: Mapping[str, Mapping[str, float | None]], styles: Sequence[str]) -> dict[str, float | None]:
    return {s: _mean([row.get(s) for row in table.values()]) for s in styles}


def _table(
    table: Mapping[str, Mapping[str, float | None]],
    style_mean: Mapping[str, float | None],
    n_features: Mapping[str, int],
    styles: Sequence[str],
) -> str:
    head = "| domain | n_feat | " + " | ".join(styles) + " | mean |"
    sep = "|---|---:|" + "---:|" * (len(styles) + 1)
    lines = [head, sep]
    for domain, row in table.items():
        cells = [_fmt(row.get(s)) for s in styles]
        row_mean = _fmt(_mean(list(row.values())))
        lines.append(f"| {domain} | {n_features.get(domain, 0)} | " + " | ".join(cells) + f" | {row_mean} |")
    overall = _mean(list(style_mean.values()))
    lines.append("| **mean** | | " + " | ".join(_fmt(style_mean.get(s)) for s in styles) + f" | {_fmt(overall)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- check


def _to_numpy(feature_max: np.ndarray | torch.Tensor) -> np.ndarray:
    if hasattr(feature_max, "detach"):  # a torch tensor, without importing torch
        feature_max = feature_max.detach().to("cpu").double().numpy()
    return np.asarray(feature_max, dtype=np.float64)


def _ordered_unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def style_check(
    texts: list[ProbeText],
    feature_max: np.ndarray | torch.Tensor,
    feature_domains: list[list[str]],
) -> StyleReport:
    """Score selected features on the style probe.

    Args:
        texts: the probe texts (`load_style_probe()`), in the row order of `feature_max`.
        feature_max: shape ``(len(texts), n_features)``; ``feature_max[i, j]`` is the max activation of
            selected feature j over the tokens of text i (computed by the caller).
        feature_domains: ``feature_domains[j]`` are the level-0 domains feature j was selected for.

    For domain d and style s the score of text i is ``max_{j selected for d} feature_max[i, j]``; the AUROC
    compares the domain-d texts of style s (positives) with all other texts of style s (`per_domain`) and with the
    benign texts of style s (`per_domain_vs_benign`). Domains are those of `texts` (in first-appearance order);
    a domain without features gets None in every style. Feature domains absent from `texts` are ignored.
    """
    fm = _to_numpy(feature_max)
    if fm.ndim != 2:
        raise ValueError(f"feature_max must be 2-D (n_texts, n_features), got shape {fm.shape}")
    if fm.shape[0] != len(texts):
        raise ValueError(f"feature_max has {fm.shape[0]} rows but there are {len(texts)} texts")
    if fm.shape[1] != len(feature_domains):
        raise ValueError(
            f"feature_max has {fm.shape[1]} columns but feature_domains has {len(feature_domains)} entries"
        )
    if not np.isfinite(fm).all():
        raise ValueError("feature_max contains NaN or infinite values")
    for j, doms in enumerate(feature_domains):
        if isinstance(doms, str) or not all(isinstance(d, str) for d in doms):
            raise ValueError(f"feature_domains[{j}] must be a list of domain names, got {doms!r}")

    styles = _ordered_unique([t.style for t in texts])
    domains = [d for d in _ordered_unique([t.domain for t in texts]) if d != BENIGN]
    style_arr = np.array([t.style for t in texts], dtype=object)
    domain_arr = np.array([t.domain for t in texts], dtype=object)

    per_domain: dict[str, dict[str, float | None]] = {}
    vs_benign: dict[str, dict[str, float | None]] = {}
    n_features: dict[str, int] = {}
    for d in domains:
        cols = [j for j, doms in enumerate(feature_domains) if d in doms]
        n_features[d] = len(cols)
        if not cols:
            per_domain[d] = {s: None for s in styles}
            vs_benign[d] = {s: None for s in styles}
            continue
        score = fm[:, cols].max(axis=1)
        per_domain[d], vs_benign[d] = {}, {}
        for s in styles:
            in_style = style_arr == s
            pos = score[in_style & (domain_arr == d)]
            per_domain[d][s] = auroc(pos, score[in_style & (domain_arr != d)])
            vs_benign[d][s] = auroc(pos, score[in_style & (domain_arr == BENIGN)])

    return StyleReport(
        per_domain=per_domain,
        per_style_mean=_style_means(per_domain, styles),
        n_features=n_features,
        per_domain_vs_benign=vs_benign,
        styles=styles,
    )
