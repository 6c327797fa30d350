"""What the policy engine hands back: rule matches, steering ops, damping records and the run's decision.

These are plain frozen dataclasses (no tensors, no pydantic) so the guard can log them, the server can put
them on the wire (`to_dict()` is JSON-ready everywhere) and tests can compare them. The compiler
(:mod:`safesail_guard.policy.compiler`) builds steering ops and pivot requests, a run
(:mod:`safesail_guard.policy.run`) builds matches and the decision; nothing here knows about YAML or the catalog.

Severity order of actions, used to pick a run's decision: ``allow < log < steer < flag < block``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from safesail_guard.policy.language import LanguageGuess

Action = Literal["allow", "log", "steer", "flag", "block"]
ACTIONS: tuple[str, ...] = ("allow", "log", "steer", "flag", "block")
SEVERITY: dict[str, int] = {a: i for i, a in enumerate(ACTIONS)}
"""Severity rank of each action; the decision is the most severe action among the run's effective matches."""

SteerKind = Literal["clamp", "scale", "add"]
BEFORE_TOKENS: tuple[int, int] = (-1, -1)
"""The span of a match decided before the first token (unconditional rules, ``multilingual_gap``)."""


def most_severe(actions: list[str]) -> str:
    """The most severe of ``actions`` (``"allow"`` for an empty list)."""
    return max(actions, key=SEVERITY.__getitem__, default="allow")


@dataclass(frozen=True)
class FiredFeature:
    """One feature's strongest firing inside a match's evidence.

    ``activation`` is the raw SAE activation; ``normalized`` is the value the rules compared with their
    thresholds: ``activation / max_act``, times the over-refusal damping factor when one applied.
    """

    id: str
    layer: int
    explanation: str | None
    activation: float
    normalized: float
    position: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"id": self.id, "layer": self.layer, "explanation": self.explanation,
                "activation": round(self.activation, 6), "normalized": round(self.normalized, 6),
                "position": self.position}


@dataclass(frozen=True)
class RuleMatch:
    """A rule that became true during a run.

    ``span`` is ``(first_position, last_position)`` of the tokens that made it true, or :data:`BEFORE_TOKENS`
    ``(-1, -1)`` for rules decided before any token (unconditional rules and ``multilingual_gap``); ``scope``
    says where that evidence was (``prompt``, ``response`` or ``both``); ``features`` holds the
    strongest few features of the evidence, strongest first; ``reason`` is one human sentence; ``message`` is the
    refusal text for a block. ``position`` is the token at which the rule fired (``None`` before any token).
    ``suppressed_by`` names the allow rule that overrode this match (suppressed matches do not count).
    """

    rule: str
    kind: str
    action: str
    scope: str
    span: tuple[int, int]
    span_text: str
    features: tuple[FiredFeature, ...]
    reason: str
    message: str | None = None
    position: int | None = None
    suppressed_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"rule": self.rule, "kind": self.kind, "action": self.action, "scope": self.scope,
                "span": list(self.span), "span_text": self.span_text,
                "features": [f.to_dict() for f in self.features], "reason": self.reason, "message": self.message,
                "position": self.position, "suppressed_by": self.suppressed_by}


@dataclass(frozen=True)
class SteerOp:
    """One steering operation on one SAE feature, active from the token its rule fired.

    ``value`` is in normalized units (multiples of the feature's ``max_act``) for ``clamp`` and ``add``, a plain
    factor for ``scale``:

    - ``clamp``: set the feature's activation to ``value * max_act``;
    - ``scale``: multiply the feature's activation by ``value``;
    - ``add``: add ``value * max_act * W_dec[latent]`` to the hooked activation.

    Several ops on one feature are applied in list order. ``rule`` names the rule that produced the op.
    """

    feature_id: str
    layer: int
    latent: int
    op: SteerKind
    value: float
    max_act: float = 1.0
    rule: str = ""

    @property
    def absolute_value(self) -> float:
        """``value`` in raw activation units (``value * max_act`` for clamp/add, ``value`` for scale)."""
        return self.value if self.op == "scale" else self.value * self.max_act

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"feature_id": self.feature_id, "layer": self.layer, "latent": self.latent, "op": self.op,
                "value": self.value, "max_act": self.max_act, "rule": self.rule}


@dataclass(frozen=True)
class Damping:
    """An ``over_refusal`` rule whose context was found in the prompt, and what it damped."""

    rule: str
    context: tuple[str, ...]  # the context words/phrases that matched, lower-cased, in order of appearance
    factor: float
    selection: str  # human summary of the damped selection, e.g. "domains drugs, self_harm"
    n_features: int
    steer: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"rule": self.rule, "context": list(self.context), "factor": self.factor,
                "selection": self.selection, "n_features": self.n_features, "steer": self.steer}


@dataclass(frozen=True)
class PivotRequest:
    """A ``multilingual_gap`` rule asked for an English translation of the prompt to be scored too.

    A policy run only records the request; the guard translates with an OpenAI-compatible endpoint and scores
    the translation. ``None`` fields mean "use the guard's defaults".
    """

    rule: str
    base_url: str | None
    model: str | None
    api_key_env: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"rule": self.rule, "base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}


@dataclass(frozen=True)
class Decision:
    """The outcome of one run (a prompt and, possibly, its response) under one policy.

    ``action`` is the most severe action among ``matches`` (``allow`` when nothing matched); ``refusal`` is the
    message of the first block match; ``steer`` lists the steering ops active at the end; ``suppressed`` holds
    matches overridden by allow rules (they do not count); ``damped`` records over-refusal damping.
    """

    action: str
    matches: tuple[RuleMatch, ...]
    refusal: str | None
    steer: tuple[SteerOp, ...]
    language: LanguageGuess
    damped: tuple[Damping, ...] = ()
    pivot_requested: bool = False
    pivot: PivotRequest | None = None
    suppressed: tuple[RuleMatch, ...] = ()
    policy: str = ""
    tokens_seen: int = 0

    @property
    def blocked(self) -> bool:
        """True when the decision is ``block``."""
        return self.action == "block"

    def rules(self) -> list[str]:
        """Names of the rules that matched (effective matches only), in firing order."""
        return [m.rule for m in self.matches]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "policy": self.policy, "action": self.action, "refusal": self.refusal,
            "matches": [m.to_dict() for m in self.matches],
            "suppressed": [m.to_dict() for m in self.suppressed],
            "steer": [s.to_dict() for s in self.steer],
            "language": self.language.to_dict(),
            "damped": [d.to_dict() for d in self.damped],
            "pivot_requested": self.pivot_requested,
            "pivot": self.pivot.to_dict() if self.pivot is not None else None,
            "tokens_seen": self.tokens_seen,
        }

    def explain(self) -> str:
        """A multi-line human explanation: the verdict, then why (matches, features, damping, steering)."""
        lines = [f"decision: {self.action.upper()}" + (f" (policy {self.policy!r})" if self.policy else "")]
        lang = self.language
        lines.append(f"language: {lang.code} ({lang.script}, confidence {lang.confidence:.2f})")
        for d in self.damped:
            ctx = ", ".join(f'"{c}"' for c in d.context)
            lines.append(f"damped by {d.rule}: context {ctx} -> {d.selection} x{d.factor:g} "
                         f"({d.n_features} features{', steered' if d.steer else ''})")
        if not self.matches:
            lines.append("no rule matched")
        for m in self.matches:
            lines.extend(_explain_match(m))
        for m in self.suppressed:
            lines.append(f"suppressed: {m.rule} ({m.action}) overridden by {m.suppressed_by}")
        if self.refusal is not None:
            lines.append(f"refusal: {self.refusal}")
        if self.steer:
            ops = ", ".join(f"{s.feature_id} {s.op} {s.value:g}" for s in self.steer[:8])
            more = f" (+{len(self.steer) - 8} more)" if len(self.steer) > 8 else ""
            lines.append(f"steering: {ops}{more}")
        if self.pivot is not None:
            lines.append(f"pivot translation requested by {self.pivot.rule}"
                         + (f" (model {self.pivot.model})" if self.pivot.model else ""))
        return "\n".join(lines)


def _explain_match(m: RuleMatch) -> list[str]:
    where = ""
    if m.span != BEFORE_TOKENS:
        where = f" [{m.scope}, tokens {m.span[0]}-{m.span[1]}: {m.span_text!r}]"
    out = [f"- {m.action} {m.rule}{where}: {m.reason}"]
    for f in m.features:
        expl = f" {f.explanation}" if f.explanation else ""
        out.append(f"    {f.id} {f.normalized:.2f} (act {f.activation:.3g}) @{f.position}{expl}")
    return out

