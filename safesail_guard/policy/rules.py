"""The compiled forms of a policy's rules: immutable, resolved against one feature catalog.

The compiler (:mod:`safesail_guard.policy.compiler`) turns each rule of a validated
:class:`~safesail_guard.policy.schema.PolicyFile` into one of these: a ``features`` rule into a
:class:`CompiledRule` whose condition is a tree of :class:`CompiledLeaf` / :class:`CompiledCombo`, an
``over_refusal`` rule into a :class:`CompiledDamper`, a ``multilingual_gap`` rule into a
:class:`CompiledLanguageRule` and a ``risk`` rule into a :class:`CompiledRiskRule`. Every selection is already a
frozen set of feature ids and every default is filled in, so nothing here reads the YAML or the catalog again.
:class:`~safesail_guard.policy.run.CompiledPolicy` holds them and starts the per-request
:class:`~safesail_guard.policy.run.PolicyRun`, whose condition state (:mod:`safesail_guard.policy.window`) mirrors
the condition trees defined here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from safesail_guard.policy.decision import PivotRequest, SteerOp
from safesail_guard.policy.language import LanguageGuess


@dataclass(frozen=True)
class CompiledLeaf:
    """A leaf condition with its selection resolved and its defaults filled in."""

    features: frozenset[str]
    scope: str  # prompt | response | both
    min_activation: float
    min_tokens: int
    window: int | None
    min_features: int
    selection: str  # human summary of the selection

    @property
    def scopes(self) -> frozenset[str]:
        """Token scopes this leaf counts."""
        return frozenset(("prompt", "response")) if self.scope == "both" else frozenset((self.scope,))

    def describe(self) -> str:
        """One-line summary, e.g. "domains weapons >= 0.6 on 3 tokens within 8 of both"."""
        text = f"{self.selection} >= {self.min_activation:g} on {self.min_tokens} token"
        text += "s" if self.min_tokens != 1 else ""
        text += f" within {self.window}" if self.window is not None else ""
        text += f" of {self.scope}"
        return text + (f", {self.min_features} features" if self.min_features > 1 else "")

    def signature(self) -> tuple[Any, ...]:
        """What makes two leaves behave identically."""
        return ("leaf", self.features, self.scope, self.min_activation, self.min_tokens, self.window,
                self.min_features)


@dataclass(frozen=True)
class CompiledCombo:
    """``any`` or ``all`` of child conditions."""

    op: str  # "any" | "all"
    children: tuple[CompiledLeaf | CompiledCombo, ...]

    def describe(self) -> str:
        """One-line summary."""
        return f"{self.op} of: " + "; ".join(f"({c.describe()})" for c in self.children)

    def signature(self) -> tuple[Any, ...]:
        """What makes two combinators behave identically (child order does not matter)."""
        return (self.op, frozenset(c.signature() for c in self.children))


CompiledCondition = CompiledLeaf | CompiledCombo


@dataclass(frozen=True)
class CompiledRule:
    """A ``features`` rule ready to run."""

    name: str
    action: str
    condition: CompiledCondition | None  # None: unconditional
    steer: tuple[SteerOp, ...]
    overrides: tuple[str, ...]
    message: str | None  # resolved refusal text for block rules
    description: str = ""
    kind: str = "features"

    @property
    def features(self) -> frozenset[str]:
        """Every feature the rule's condition reads."""
        if self.condition is None:
            return frozenset()
        return frozenset(f for leaf in leaves(self.condition) for f in leaf.features)

    def describe(self) -> str:
        """One-line summary of the condition."""
        return self.condition.describe() if self.condition is not None else "unconditional"


@dataclass(frozen=True)
class CompiledDamper:
    """An ``over_refusal`` rule ready to run."""

    name: str
    keywords: tuple[tuple[str, re.Pattern[str]], ...]  # (label, pattern)
    unless: tuple[re.Pattern[str], ...]
    min_matches: int
    features: frozenset[str]
    factor: float
    steer: tuple[SteerOp, ...]
    selection: str

    def context_found(self, text: str) -> tuple[str, ...]:
        """The context words found in ``text`` (empty when too few, or when an ``unless`` phrase is present)."""
        if any(p.search(text) for p in self.unless):
            return ()
        found: list[tuple[int, str]] = []
        for _, pattern in self.keywords:
            m = pattern.search(text)
            if m is not None:
                found.append((m.start(), m.group(0).lower()))
        if len(found) < self.min_matches:
            return ()
        return tuple(dict.fromkeys(word for _, word in sorted(found)))


@dataclass(frozen=True)
class CompiledLanguageRule:
    """A ``multilingual_gap`` rule ready to run."""

    name: str
    action: str
    message: str | None
    strong_languages: frozenset[str]
    min_confidence: float
    pivot: PivotRequest | None

    def gap(self, guess: LanguageGuess) -> bool:
        """True when ``guess`` is a confident, non-strong language."""
        return (guess.determined and guess.code not in self.strong_languages
                and guess.confidence >= self.min_confidence)


@dataclass(frozen=True)
class CompiledRiskRule:
    """A ``risk`` rule ready to run: the head's weights (restricted to a domain if asked) and a logit bar.

    ``head`` is the database's detection head when the guard has one (`safesail_guard.runtime.detection_head`;
    the run then scores token logits aggregated over the rule's scope, see :mod:`~safesail_guard.policy.run`),
    None for the sparse risk head, whose ``weights``/``bias`` the run pools itself. With a detection head,
    ``weights`` only names the features the rule reads (`CompiledPolicy.watched_features`).
    """

    name: str
    action: str
    message: str | None
    weights: dict[str, float]
    bias: float
    min_logit: float
    min_score: float
    domain: str | None
    scopes: frozenset[str]
    head: Any = field(default=None, compare=False, repr=False)

    @property
    def scope(self) -> str:
        """``prompt``, ``response`` or ``both``."""
        return "both" if len(self.scopes) > 1 else next(iter(self.scopes))


def leaves(node: CompiledCondition) -> Iterable[CompiledLeaf]:
    """The leaf conditions of ``node``, depth first in file order."""
    if isinstance(node, CompiledLeaf):
        yield node
    else:
        for child in node.children:
            yield from leaves(child)


def feature_order(fid: str) -> tuple[int, int]:
    """Sort key of a feature id ``"{layer}_{latent}"``: ``(layer, latent)``; malformed ids sort last."""
    layer, _, latent = fid.partition("_")
    try:
        return int(layer), int(latent)
    except ValueError:
        return (1 << 30, 0)
