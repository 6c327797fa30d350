"""The guard's prompt risk score: a sparse, non-negative logistic head over the database's features.

Each feature contributes ``w_i * x_i`` where ``x_i`` is its largest normalized activation over the scored
tokens (prompt content by default) and ``w_i >= 0``; the score is ``sigmoid(b + sum_i w_i x_i)`` in [0, 1] and
rises with risk. Because every weight is non-negative and most are zero (L1), a score is explained exactly by
the few features with the largest contributions. A domain's score uses only that domain's features:
``sigmoid(b + sum_{i in domain} w_i x_i)``.

The head is fitted on the project's concept pairs (concept side = 1, de-concept twin = 0) by
`safesail_training.risk_head` and ships inside the database as ``risk_head.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safesail_guard.events import FeatureCatalog, TokenActivations
from safesail_neuron_db.manifest import HEAD_FILE

if TYPE_CHECKING:
    from safesail_neuron_db import NeuronDB

HEAD_SCHEMA = 1


class RiskHeadError(ValueError):
    """A risk head file is missing, malformed or does not match the database."""


def peak_hits(tokens: Sequence[TokenActivations], scopes: Sequence[str] = ("prompt",)) -> dict[str, tuple[float, float, int]]:
    """Per feature, its strongest firing over content tokens in ``scopes``: (normalized, activation, position)."""
    best: dict[str, tuple[float, float, int]] = {}
    for t in tokens:
        if not t.content or t.scope not in scopes:
            continue
        for h in t.hits:
            if h.normalized > best.get(h.feature_id, (0.0, 0.0, -1))[0]:
                best[h.feature_id] = (h.normalized, h.activation, t.position)
    return best


def pool_features(tokens: Sequence[TokenActivations], scopes: Sequence[str] = ("prompt",)) -> dict[str, float]:
    """Largest normalized activation of every feature over content tokens in ``scopes``."""
    return {f: v[0] for f, v in peak_hits(tokens, scopes).items()}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


@dataclass
class RiskScore:
    """A score in [0, 1], per-domain scores, and the features behind them (largest contribution first)."""

    score: float
    concepts: dict[str, float]
    top_features: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"score": self.score, "concepts": self.concepts, "top_features": self.top_features}


@dataclass
class RiskHead:
    """Weights per feature id (>= 0, zeros omitted) and a bias; see the module docstring."""

    weights: dict[str, float]
    bias: float
    catalog: FeatureCatalog | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def logit(self, pooled: dict[str, float]) -> float:
        """``b + sum w_i x_i``."""
        return self.bias + sum(w * pooled.get(f, 0.0) for f, w in self.weights.items())

    def score(self, tokens: Sequence[TokenActivations], *, scopes: Sequence[str] = ("prompt",),
              top: int = 5) -> RiskScore:
        """Score the tokens in ``scopes``; ``top`` features are listed with their contributions."""
        peaks = peak_hits(tokens, scopes)
        return self.score_pooled({f: v[0] for f, v in peaks.items()}, top=top,
                                 peaks={f: (a, pos) for f, (_, a, pos) in peaks.items()})

    def score_pooled(self, pooled: dict[str, float], *, top: int = 5,
                     peaks: dict[str, tuple[float, int]] | None = None) -> RiskScore:
        """Score from pooled feature values (``{feature_id: max normalized activation}``)."""
        contrib = {f: w * pooled[f] for f, w in self.weights.items() if pooled.get(f, 0.0) > 0}
        score = _sigmoid(self.bias + sum(contrib.values()))
        concepts: dict[str, float] = {}
        domains = self.catalog.domains if self.catalog is not None else []
        for d in domains:
            z = self.bias + sum(c for f, c in contrib.items() if d in self.catalog[f].domains)  # type: ignore[index]
            concepts[d] = round(_sigmoid(z), 6)
        tops = []
        for f, c in sorted(contrib.items(), key=lambda kv: -kv[1])[:top]:
            info = self.catalog[f] if self.catalog is not None and f in self.catalog else None
            act, pos = (peaks or {}).get(f, (pooled[f] * (info.max_act if info else 1.0), -1))
            tops.append({"id": f, "layer": info.layer if info else int(f.split("_")[0]),
                         "index": info.latent if info else int(f.split("_")[1]), "activation": round(act, 5),
                         "normalized": round(pooled[f], 5), "contribution": round(c, 5), "position": pos,
                         "explanation": info.explanation if info else None,
                         "domains": list(info.domains) if info else []})
        return RiskScore(round(score, 6), concepts, tops)

    # ------------------------------------------------------------------ files
    def to_json(self) -> str:
        """Deterministic JSON text (weights sorted by feature id, rounded)."""
        body = {"schema": HEAD_SCHEMA, "bias": round(self.bias, 6),
                "weights": {f: round(w, 6) for f, w in sorted(self.weights.items()) if w > 0},
                "meta": self.meta}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, catalog: FeatureCatalog | None = None, *, source: str = HEAD_FILE) -> RiskHead:
        """Parse and validate; unknown feature ids (when a catalog is given) are an error."""
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise RiskHeadError(f"{source}: not JSON ({e})") from e
        if not isinstance(body, dict) or body.get("schema") != HEAD_SCHEMA:
            raise RiskHeadError(f"{source}: expected a risk head with schema {HEAD_SCHEMA}")
        weights = body.get("weights")
        bias = body.get("bias")
        if not isinstance(weights, dict) or not isinstance(bias, (int, float)):
            raise RiskHeadError(f"{source}: needs 'weights' (object) and 'bias' (number)")
        clean: dict[str, float] = {}
        for f, w in weights.items():
            if not isinstance(w, (int, float)) or w < 0 or not math.isfinite(w):
                raise RiskHeadError(f"{source}: weight of {f!r} must be a finite number >= 0, got {w!r}")
            if catalog is not None and f not in catalog:
                raise RiskHeadError(f"{source}: feature {f!r} is not in the database")
            clean[f] = float(w)
        return cls(clean, float(bias), catalog, dict(body.get("meta") or {}))

    @classmethod
    def from_db(cls, db: NeuronDB, catalog: FeatureCatalog | None = None, *, required: bool = False) -> RiskHead | None:
        """The head shipped in ``db`` (None when it has none, unless ``required``)."""
        text = db.extra_text(HEAD_FILE)
        if text is None:
            if required:
                raise RiskHeadError(f"{db.path} has no {HEAD_FILE}; rebuild it with `safesail build-db`")
            return None
        return cls.from_json(text, catalog or FeatureCatalog.from_db(db), source=str(db.path / HEAD_FILE))

