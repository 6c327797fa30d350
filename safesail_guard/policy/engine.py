"""Compile a policy against a feature catalog, then evaluate it token by token.

``compile_policy(policy, catalog)`` resolves every selection to a frozen set of feature ids, expands steering
ops on domains/concepts to per-feature ops, and rejects what cannot work (unknown ids, domains, concepts or
layers, with close matches; empty selections; contradictory rules). It returns a :class:`CompiledPolicy`,
immutable and safe to share between threads.

``compiled.start(prompt_text)`` returns a :class:`PolicyRun`, the per-request state. At start it detects the
prompt's language (``multilingual_gap`` rules; of the whole prompt and of each message), finds benign framings
(``over_refusal`` rules, which set per-feature damping factors) and fires unconditional rules. The prompt text
may carry each message's role (:func:`join_segments`); the policy's ``roles`` (default: all) choose which
messages its rules read, there and token by token. ``run.observe(tok)`` then takes one
:class:`~safesail_guard.runtime.events.TokenActivations` at a time and returns the matches that became true at
that token. Each leaf condition keeps its own sliding-window state, so a token costs O(leaves x hits) and the
history is never re-scanned. ``run.finish()`` returns the :class:`~safesail_guard.policy.decision.Decision`.

Evaluation order at one token: damping is applied to the token's hits; allow rules are updated first (so an
allow rule that matches at the same token suppresses the rules it overrides), then the other rules in file
order. Every rule fires at most once per run.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from safesail_guard.policy import schema
from safesail_guard.policy.decision import (
    BEFORE_TOKENS,
    Damping,
    Decision,
    FiredFeature,
    PivotRequest,
    RuleMatch,
    SteerOp,
    most_severe,
)
from safesail_guard.policy.language import LanguageGuess, detect_language
from safesail_guard.policy.loader import PolicyError, PolicyIssue, SourceMap, source_of
from safesail_guard.runtime.events import FeatureCatalog, TokenActivations

SEGMENT_SEP = "\x1e"
"""Separates the messages of a prompt text built by :func:`join_segments` (ASCII record separator)."""
ROLE_SEP = "\x1f"
"""Separates a message's role from its text in a segment (ASCII unit separator)."""
ALL_ROLES = frozenset(schema.ROLES)

TOP_FEATURES = 5
"""How many of the strongest features a match keeps as evidence."""
SPAN_TEXT_CHARS = 200
"""Longest ``span_text`` kept in a match (longer spans keep their head and tail)."""

Loc = tuple[Any, ...]


# ------------------------------------------------------------------------------------------ compiled forms

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
        return frozenset(f for leaf in _leaves(self.condition) for f in leaf.features)

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
    """A ``risk`` rule ready to run: the head's weights (restricted to a domain if asked) and a logit bar."""

    name: str
    action: str
    message: str | None
    weights: dict[str, float]
    bias: float
    min_logit: float
    min_score: float
    domain: str | None
    scopes: frozenset[str]


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy resolved against one feature catalog. Immutable; start one :class:`PolicyRun` per request."""

    name: str
    catalog: FeatureCatalog
    rules: tuple[CompiledRule, ...]
    dampers: tuple[CompiledDamper, ...]
    language_rules: tuple[CompiledLanguageRule, ...]
    refusal_message: str
    rule_names: tuple[str, ...] = ()  # every rule, in file order
    risk_rules: tuple[CompiledRiskRule, ...] = ()
    warnings: tuple[str, ...] = ()
    policy: schema.PolicyFile | None = field(default=None, compare=False, repr=False)
    roles: frozenset[str] = ALL_ROLES  # prompt messages the rules read, by role

    def reads(self, tok: TokenActivations) -> bool:
        """Whether the rules read ``tok``: a content token of the response, of plain text, or of a prompt message
        whose role is among the policy's ``roles``."""
        if not tok.content:
            return False
        return tok.scope != "prompt" or tok.role not in ALL_ROLES or tok.role in self.roles

    @property
    def watched_features(self) -> frozenset[str]:
        """Every feature some condition or damping reads (the guard must encode at least these)."""
        out: set[str] = set()
        for rule in self.rules:
            out.update(rule.features)
        for d in self.dampers:
            out.update(d.features)
        for r in self.risk_rules:
            out.update(r.weights)
        return frozenset(out)

    @property
    def layers(self) -> list[int]:
        """Layers of the watched and steered features, ascending."""
        ids = set(self.watched_features) | {op.feature_id for r in self.rules for op in r.steer}
        return sorted({self.catalog[f].layer for f in ids})

    def start(self, prompt_text: str = "") -> PolicyRun:
        """Begin evaluating one request whose prompt (as plain text) is ``prompt_text``."""
        return PolicyRun(self, prompt_text)

    def evaluate(self, tokens: Iterable[TokenActivations], prompt_text: str | None = None) -> Decision:
        """Run the whole policy over ``tokens`` (prompt then response, in position order) and decide.

        ``prompt_text`` defaults to the text of the prompt's content tokens.
        """
        tokens = list(tokens)
        if prompt_text is None:
            prompt_text = _segments_of(tokens)
        run = self.start(prompt_text)
        for tok in tokens:
            run.observe(tok)
        return run.finish()


def join_segments(messages: Iterable[tuple[str | None, str]]) -> str:
    """One prompt text from ``(role, text)`` pairs that keeps each message's role for :class:`PolicyRun`
    (which splits it with :func:`prompt_segments`). Separator characters inside the texts become spaces, so a
    message cannot pose as another role."""
    return SEGMENT_SEP.join(f"{role or ''}{ROLE_SEP}{_unsep(text)}" for role, text in messages)


def prompt_segments(prompt_text: str) -> list[tuple[str | None, str]]:
    """``(role, text)`` per message of a :func:`join_segments` text; plain text is one segment with role None."""
    if ROLE_SEP not in prompt_text:
        return [(None, prompt_text)]
    out: list[tuple[str | None, str]] = []
    for part in prompt_text.split(SEGMENT_SEP):
        role, sep, text = part.partition(ROLE_SEP)
        out.append((role or None, text) if sep else (None, part))
    return out


def _unsep(text: str) -> str:
    return text.replace(SEGMENT_SEP, " ").replace(ROLE_SEP, " ") if ROLE_SEP in text or SEGMENT_SEP in text else text


def _segments_of(tokens: Sequence[TokenActivations]) -> str:
    """The prompt text of content tokens, one segment per run of tokens of one role."""
    parts: list[tuple[str | None, str]] = []
    for t in tokens:
        if t.scope != "prompt" or not t.content:
            continue
        if parts and parts[-1][0] == t.role:
            parts[-1] = (t.role, parts[-1][1] + t.text)
        else:
            parts.append((t.role, t.text))
    if len(parts) <= 1:
        return parts[0][1] if parts else ""
    return join_segments(parts)


def _leaves(node: CompiledCondition) -> Iterable[CompiledLeaf]:
    if isinstance(node, CompiledLeaf):
        yield node
    else:
        for child in node.children:
            yield from _leaves(child)


# ------------------------------------------------------------------------------------------------ compile

def compile_policy(policy: schema.PolicyFile, catalog: FeatureCatalog, risk_head: Any = None) -> CompiledPolicy:
    """Resolve ``policy`` against ``catalog``; :class:`PolicyError` lists every problem with file and line.

    ``risk_head`` (a `safesail_guard.runtime.scoring.RiskHead`) is needed by ``kind: risk`` rules.
    """
    return _Compiler(policy, catalog, risk_head).compile()


class _Compiler:
    """One compilation: collects every issue before raising, so a user fixes them all in one pass."""

    def __init__(self, policy: schema.PolicyFile, catalog: FeatureCatalog, risk_head: Any = None) -> None:
        self.policy = policy
        self.catalog = catalog
        self.risk_head = risk_head
        self.source: SourceMap = source_of(policy)
        self.issues: list[PolicyIssue] = []
        self.warnings: list[str] = []

    def fail(self, loc: Loc, message: str) -> None:
        self.issues.append(self.source.issue(loc, message))

    def compile(self) -> CompiledPolicy:
        rules: list[CompiledRule] = []
        dampers: list[CompiledDamper] = []
        language_rules: list[CompiledLanguageRule] = []
        risk_rules: list[CompiledRiskRule] = []
        self._check_names()
        for i, rule in enumerate(self.policy.rules):
            loc: Loc = ("rules", i)
            if isinstance(rule, schema.FeatureRule):
                rules.append(self._feature_rule(rule, loc))
            elif isinstance(rule, schema.OverRefusalRule):
                dampers.append(self._damper(rule, loc))
            elif isinstance(rule, schema.RiskRule):
                compiled_risk = self._risk_rule(rule, loc)
                if compiled_risk is not None:
                    risk_rules.append(compiled_risk)
            else:
                language_rules.append(self._language_rule(rule))
        self._check_overrides()
        self._check_identical_conditions(rules)
        if self.issues:
            raise PolicyError(sorted(self.issues, key=lambda i: (i.line or 0, i.path)))
        return CompiledPolicy(
            name=self.policy.name, catalog=self.catalog, rules=tuple(rules), dampers=tuple(dampers),
            language_rules=tuple(language_rules), refusal_message=self.policy.defaults.refusal_message,
            rule_names=tuple(r.name for r in self.policy.rules), warnings=tuple(self.warnings), policy=self.policy,
            risk_rules=tuple(risk_rules), roles=frozenset(self.policy.roles),
        )

    # -- selections --------------------------------------------------------------------------------------

    def selection(self, sel: schema.Selection, loc: Loc) -> frozenset[str]:
        """Resolve a selection to feature ids; unknown names and empty results are issues."""
        before = len(self.issues)
        ids: set[str] = set()
        for j, fid in enumerate(sel.features):
            if fid in self.catalog:
                ids.add(fid)
            else:
                self.fail((*loc, "features", j), f"unknown feature {fid!r}{_close(fid, list(self.catalog))}")
        for j, domain in enumerate(sel.domains):
            found = self.catalog.by_domain(domain)
            if not found:
                self.fail((*loc, "domains", j), f"unknown domain {domain!r}{_close(domain, self.catalog.domains)} "
                                                f"(domains: {', '.join(self.catalog.domains)})")
            ids.update(f.id for f in found)
        for j, concept in enumerate(sel.concepts):
            found = self.catalog.by_concept(concept)
            if not found:
                names = self.catalog.concepts + sorted({c.split("/", 1)[1] for c in self.catalog.concepts})
                self.fail((*loc, "concepts", j), f"unknown concept {concept!r}{_close(concept, names)}")
            ids.update(f.id for f in found)
        if sel.layers:
            for j, layer in enumerate(sel.layers):
                if layer not in self.catalog.layers:
                    valid = ", ".join(map(str, self.catalog.layers))
                    self.fail((*loc, "layers", j), f"layer {layer} has no features (layers with features: {valid})")
            if not (sel.features or sel.domains or sel.concepts):
                ids = set(self.catalog)
            ids = {f for f in ids if self.catalog[f].layer in sel.layers}
        for j, fid in enumerate(sel.exclude):
            if fid not in self.catalog:
                self.fail((*loc, "exclude", j), f"unknown feature {fid!r}{_close(fid, list(self.catalog))}")
            ids.discard(fid)
        if not ids and len(self.issues) == before:
            self.fail(loc, f"selects no features ({sel.describe()})")
        return frozenset(ids)

    # -- conditions --------------------------------------------------------------------------------------

    def condition(self, cond: schema.Leaf | schema.AnyOf | schema.AllOf, loc: Loc) -> CompiledCondition:
        """Compile a condition tree, filling defaults."""
        if isinstance(cond, schema.AnyOf):
            return CompiledCombo("any", tuple(self.condition(c, (*loc, "any", j)) for j, c in enumerate(cond.any)))
        if isinstance(cond, schema.AllOf):
            return CompiledCombo("all", tuple(self.condition(c, (*loc, "all", j)) for j, c in enumerate(cond.all)))
        features = self.selection(cond.select, (*loc, "select"))
        if features and cond.min_features > len(features):
            self.fail((*loc, "min_features"), f"min_features ({cond.min_features}) exceeds the {len(features)} "
                                              "selected features; the condition could never be true")
        min_act = cond.min_activation if cond.min_activation is not None else self.policy.defaults.min_activation
        return CompiledLeaf(features=features, scope=cond.scope, min_activation=min_act,
                            min_tokens=cond.min_tokens, window=cond.window, min_features=cond.min_features,
                            selection=cond.select.describe())

    def _prompt_scoped(self, cond: Any, loc: Loc) -> Iterable[Loc]:
        """Locations of the leaves of ``cond`` with ``scope: prompt``."""
        if isinstance(cond, schema.AnyOf):
            for j, c in enumerate(cond.any):
                yield from self._prompt_scoped(c, (*loc, "any", j))
        elif isinstance(cond, schema.AllOf):
            for j, c in enumerate(cond.all):
                yield from self._prompt_scoped(c, (*loc, "all", j))
        elif cond.scope == "prompt":
            yield (*loc, "scope")

    # -- rules -------------------------------------------------------------------------------------------

    def _feature_rule(self, rule: schema.FeatureRule, loc: Loc) -> CompiledRule:
        condition = self.condition(rule.when, (*loc, "when")) if rule.when is not None else None
        if rule.action == "steer" and rule.when is not None:
            for where in self._prompt_scoped(rule.when, (*loc, "when")):
                self.fail(where, f"rule {rule.name!r} steers, and steering acts on generated tokens: use scope "
                                 "response or both (a match on the prompt then steers the whole response)")
        steer = self._steer_ops(rule, loc)
        message = (rule.message or self.policy.defaults.refusal_message) if rule.action == "block" else None
        return CompiledRule(name=rule.name, action=rule.action, condition=condition, steer=steer,
                            overrides=tuple(rule.overrides), message=message, description=rule.description)

    def _expand(self, kind: str, name: str, loc: Loc) -> list[str]:
        """Feature ids a steer op's target names (issues for unknown targets)."""
        if kind == "feature":
            if name not in self.catalog:
                self.fail(loc, f"unknown feature {name!r}{_close(name, list(self.catalog))}")
                return []
            return [name]
        found = self.catalog.by_domain(name) if kind == "domain" else self.catalog.by_concept(name)
        if not found:
            valid = self.catalog.domains if kind == "domain" else self.catalog.concepts
            self.fail(loc, f"unknown {kind} {name!r}{_close(name, valid)}")
        return [f.id for f in found]

    def _steer_ops(self, rule: schema.FeatureRule, loc: Loc) -> tuple[SteerOp, ...]:
        ops: list[SteerOp] = []
        seen: dict[tuple[str, str], tuple[str, float]] = {}  # (feature, op) -> (which spec set it, value)
        clamped: dict[str, str] = {}
        others: dict[str, str] = {}
        for j, spec in enumerate(rule.steer):
            kind, name = spec.target
            where = f"{kind} {name}"
            for fid in self._expand(kind, name, (*loc, "steer", j, kind)):
                if (fid, spec.op) in seen:
                    first, value = seen[fid, spec.op]
                    if value != spec.value:  # the same op and value twice (overlapping domains) is kept once
                        self.fail((*loc, "steer", j), f"rule {rule.name!r}: feature {fid} gets {spec.op} "
                                                      f"{value:g} through {first} and {spec.op} {spec.value:g} "
                                                      f"through {where}; keep one")
                    continue
                seen[fid, spec.op] = (where, spec.value)
                (clamped if spec.op == "clamp" else others)[fid] = where
                if fid in clamped and fid in others:
                    self.fail((*loc, "steer", j), f"rule {rule.name!r}: feature {fid} is both clamped (through "
                                                  f"{clamped[fid]}) and scaled/added (through {others[fid]}); a "
                                                  "clamp overrides the other ops, keep one")
                    continue
                info = self.catalog[fid]
                ops.append(SteerOp(fid, info.layer, info.latent, spec.op, spec.value, info.max_act, rule.name))
        return tuple(ops)

    def _damper(self, rule: schema.OverRefusalRule, loc: Loc) -> CompiledDamper:
        features = self.selection(rule.damp.select, (*loc, "damp", "select"))
        keywords = tuple((kw, _word_pattern(re.escape(kw.strip()))) for kw in rule.context.keywords)
        keywords += tuple((p, _word_pattern(p)) for p in rule.context.patterns)
        unless = tuple(_word_pattern(re.escape(u.strip())) for u in rule.context.unless)
        steer = tuple(
            SteerOp(fid, self.catalog[fid].layer, self.catalog[fid].latent, "scale", rule.damp.factor,
                    self.catalog[fid].max_act, rule.name)
            for fid in sorted(features, key=_feature_order)
        ) if rule.steer else ()
        return CompiledDamper(name=rule.name, keywords=keywords, unless=unless,
                              min_matches=rule.context.min_matches, features=features, factor=rule.damp.factor,
                              steer=steer, selection=rule.damp.select.describe())

    def _risk_rule(self, rule: schema.RiskRule, loc: Loc) -> CompiledRiskRule | None:
        head = self.risk_head
        if head is None:
            self.fail(loc + ("kind",), f"rule {rule.name!r} needs the database's risk head, and there is none "
                                       "(rebuild the database with `safesail build-db`)")
            return None
        weights = dict(head.weights)
        if rule.domain is not None:
            domains = self.catalog.domains
            if rule.domain not in domains:
                self.fail(loc + ("domain",), f"unknown domain {rule.domain!r}{_close(rule.domain, domains)}")
                return None
            weights = {f: w for f, w in weights.items() if f in self.catalog and rule.domain in self.catalog[f].domains}
            if not weights:
                self.fail(loc + ("domain",), f"the risk head gives no weight to a {rule.domain} feature, so "
                                             "this rule could never match")
                return None
        scopes = frozenset(("prompt", "response") if rule.scope == "both" else (rule.scope,))
        return CompiledRiskRule(name=rule.name, action=rule.action,
                                message=(rule.message or self.policy.defaults.refusal_message)
                                if rule.action == "block" else None,
                                weights=weights, bias=float(head.bias),
                                min_logit=math.log(rule.min_score / (1 - rule.min_score)),
                                min_score=rule.min_score, domain=rule.domain, scopes=scopes)

    @staticmethod
    def _language_rule(rule: schema.MultilingualGapRule) -> CompiledLanguageRule:
        pivot = (PivotRequest(rule.name, rule.pivot.base_url, rule.pivot.model, rule.pivot.api_key_env)
                 if rule.pivot is not None else None)
        message = rule.message if rule.action == "block" else None
        return CompiledLanguageRule(name=rule.name, action=rule.action, message=message,
                                    strong_languages=frozenset(rule.strong_languages),
                                    min_confidence=rule.min_confidence, pivot=pivot)

    # -- cross-rule checks -------------------------------------------------------------------------------

    def _check_names(self) -> None:
        first: dict[str, int] = {}
        for i, rule in enumerate(self.policy.rules):
            if rule.name in first:
                self.fail(("rules", i, "name"), f"duplicate rule name {rule.name!r} "
                                                f"(also rules[{first[rule.name]}])")
            else:
                first[rule.name] = i

    def _check_overrides(self) -> None:
        by_name = {r.name: r for r in self.policy.rules}
        for i, rule in enumerate(self.policy.rules):
            if not isinstance(rule, schema.FeatureRule):
                continue
            for j, target in enumerate(rule.overrides):
                loc = ("rules", i, "overrides", j)
                other = by_name.get(target)
                if other is None:
                    self.fail(loc, f"rule {rule.name!r} overrides unknown rule {target!r}"
                                   f"{_close(target, list(by_name))}")
                elif target == rule.name:
                    self.fail(loc, f"rule {rule.name!r} overrides itself")
                elif isinstance(other, schema.OverRefusalRule):
                    self.fail(loc, f"rule {rule.name!r} overrides {target!r}, an over_refusal rule, which has no "
                                   "match to suppress")
                elif other.action == "allow":
                    self.fail(loc, f"rule {rule.name!r} overrides {target!r}, another allow rule; overriding an "
                                   "allow changes nothing")

    def _check_identical_conditions(self, rules: list[CompiledRule]) -> None:
        index = {r.name: i for i, r in enumerate(self.policy.rules)}
        seen: dict[tuple[Any, ...], CompiledRule] = {}
        for rule in rules:
            if rule.condition is None:
                continue
            sig = rule.condition.signature()
            other = seen.get(sig)
            if other is None:
                seen[sig] = rule
            elif other.action != rule.action and "steer" not in (other.action, rule.action):
                # a steer rule may share a condition with another action: "flag it and steer away" needs two rules
                self.fail(("rules", index[rule.name], "when"),
                          f"rule {rule.name!r} has the same condition as rule {other.name!r} but action "
                          f"{rule.action} instead of {other.action}; the more severe one always wins, so merge "
                          "them or make the conditions differ")
            else:
                self.warnings.append(f"rules {other.name!r} and {rule.name!r} have the same condition and action")


def _close(name: str, valid: Sequence[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` or ``""``."""
    matches = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(name.lower(), [v.lower() for v in valid], n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _word_pattern(pattern: str) -> re.Pattern[str]:
    """Case-insensitive, whole-word version of a regular expression."""
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)


def _feature_order(fid: str) -> tuple[int, int]:
    layer, _, latent = fid.partition("_")
    try:
        return int(layer), int(latent)
    except ValueError:
        return (1 << 30, 0)


# -------------------------------------------------------------------------------------------- run state

Hit = tuple[str, float, float]  # (feature id, normalized after damping, raw activation)


@dataclass
class _Evidence:
    """Why a leaf became true."""

    first: int
    last: int
    n_tokens: int
    n_features: int
    scopes: set[str]
    best: dict[str, tuple[float, float, int]]  # fid -> (normalized, activation, position)


class _LeafState:
    """Sliding-window counters of one leaf condition. ``update`` is O(hits) amortised."""

    __slots__ = ("leaf", "seen", "entries", "feature_counts", "best", "count", "first", "scopes", "evidence")

    def __init__(self, leaf: CompiledLeaf) -> None:
        self.leaf = leaf
        self.seen = 0  # content tokens of the leaf's scope seen so far
        self.entries: deque[tuple[int, int, str, tuple[Hit, ...]]] = deque()  # window mode: qualifying tokens
        self.feature_counts: dict[str, int] = {}  # window mode: entries containing each feature
        self.best: dict[str, tuple[float, float, int]] = {}  # no-window mode: strongest hit per feature
        self.count = 0  # no-window mode: qualifying tokens
        self.first: int | None = None  # no-window mode: first qualifying position
        self.scopes: set[str] = set()
        self.evidence: _Evidence | None = None

    @property
    def satisfied(self) -> bool:
        return self.evidence is not None

    def update(self, position: int, scope: str, hits: Sequence[Hit]) -> bool:
        """Count one content token; True when the leaf became true at it."""
        leaf = self.leaf
        if scope not in leaf.scopes:
            return False
        self.seen += 1
        if leaf.window is not None:
            self._evict(self.seen - leaf.window)
        qual = tuple(h for h in hits if h[0] in leaf.features and h[1] > 0 and h[1] >= leaf.min_activation)
        if not qual:
            return False
        if leaf.window is not None:
            self.entries.append((self.seen, position, scope, qual))
            for fid in {h[0] for h in qual}:
                self.feature_counts[fid] = self.feature_counts.get(fid, 0) + 1
            n_tokens, n_features = len(self.entries), len(self.feature_counts)
        else:
            self.count += 1
            self.first = position if self.first is None else self.first
            self.scopes.add(scope)
            for fid, norm, act in qual:
                if fid not in self.best or norm > self.best[fid][0]:
                    self.best[fid] = (norm, act, position)
            n_tokens, n_features = self.count, len(self.best)
        if n_tokens >= leaf.min_tokens and n_features >= leaf.min_features:
            self.evidence = self._evidence(position, n_tokens, n_features)
            return True
        return False

    def _evict(self, cutoff: int) -> None:
        while self.entries and self.entries[0][0] <= cutoff:
            _, _, _, old = self.entries.popleft()
            for fid in {h[0] for h in old}:
                left = self.feature_counts[fid] - 1
                if left:
                    self.feature_counts[fid] = left
                else:
                    del self.feature_counts[fid]

    def _evidence(self, position: int, n_tokens: int, n_features: int) -> _Evidence:
        if self.leaf.window is None:
            assert self.first is not None
            return _Evidence(self.first, position, n_tokens, n_features, set(self.scopes), dict(self.best))
        best: dict[str, tuple[float, float, int]] = {}
        scopes: set[str] = set()
        for _, pos, scope, qual in self.entries:
            scopes.add(scope)
            for fid, norm, act in qual:
                if fid not in best or norm > best[fid][0]:
                    best[fid] = (norm, act, pos)
        return _Evidence(self.entries[0][1], position, n_tokens, n_features, scopes, best)

    def reason(self) -> str:
        leaf, ev = self.leaf, self.evidence
        assert ev is not None
        scope = {"prompt": "prompt", "response": "response", "both": "prompt or response"}[leaf.scope]
        tokens = f"{ev.n_tokens} token{'s' if ev.n_tokens != 1 else ''}"
        window = f" within {leaf.window}" if leaf.window is not None else ""
        text = f"{leaf.selection} reached {leaf.min_activation:g} on {tokens}{window} of the {scope}"
        if leaf.min_features > 1:
            text += f" ({ev.n_features} distinct features, {leaf.min_features} needed)"
        return text


class _ComboState:
    """``any``/``all`` over child states; a child that became true stays true."""

    __slots__ = ("op", "children")

    def __init__(self, op: str, children: list[_LeafState | _ComboState]) -> None:
        self.op = op
        self.children = children

    @property
    def satisfied(self) -> bool:
        test = any if self.op == "any" else all
        return test(c.satisfied for c in self.children)

    def satisfied_children(self) -> list[_LeafState | _ComboState]:
        return [c for c in self.children if c.satisfied]

    def reason(self) -> str:
        parts = [c.reason() for c in self.satisfied_children()]
        if self.op == "any":
            return parts[0]
        return "all of: " + "; ".join(f"({p})" for p in parts)


def _build_state(node: CompiledCondition, leaves: list[_LeafState]) -> _LeafState | _ComboState:
    if isinstance(node, CompiledLeaf):
        state = _LeafState(node)
        leaves.append(state)
        return state
    return _ComboState(node.op, [_build_state(c, leaves) for c in node.children])


def _evidence_of(state: _LeafState | _ComboState) -> list[_Evidence]:
    if isinstance(state, _LeafState):
        return [state.evidence] if state.evidence is not None else []
    chosen = state.satisfied_children()
    if state.op == "any":
        chosen = chosen[:1]
    return [ev for c in chosen for ev in _evidence_of(c)]


@dataclass
class _RuleState:
    rule: CompiledRule
    root: _LeafState | _ComboState | None
    leaves: list[_LeafState]


# ------------------------------------------------------------------------------------------------- run

class PolicyRun:
    """The evaluation of one request. Not thread-safe; create one per request with ``CompiledPolicy.start``.

    Call :meth:`observe` for every token in position order (prompt tokens, then response tokens as they are
    generated). Matches decided before any token (unconditional rules, ``multilingual_gap``) are visible in
    :attr:`matches` right after start and are also returned by the first :meth:`observe` call, so a consumer
    that only reads ``observe`` sees every match exactly once.
    """

    def __init__(self, compiled: CompiledPolicy, prompt_text: str) -> None:
        self.compiled = compiled
        read = [text for role, text in prompt_segments(prompt_text or "")
                if role is None or role not in ALL_ROLES or role in compiled.roles]
        self.prompt_text = "\n".join(read)  # the messages of the policy's roles
        self.language: LanguageGuess = detect_language(self.prompt_text)
        # each message on its own too: a long English system prompt must not hide a user turn in another language
        self._message_languages = [detect_language(t) for t in read] if len(read) > 1 else []
        self._matches: list[RuleMatch] = []
        self._suppressed: list[RuleMatch] = []
        self._overridden: dict[str, str] = {}  # target rule -> allow rule that overrode it
        self._steer: list[SteerOp] = []
        self._steer_view: tuple[SteerOp, ...] = ()
        self._blocked: RuleMatch | None = None
        self._unreported: list[RuleMatch] = []
        self._positions: list[int] = []
        self._texts: list[str] = []
        self._finished: Decision | None = None
        self._pivot: PivotRequest | None = None
        self._damp, self._damped = self._apply_dampers()
        # allow rules first, so an allow matching at a token suppresses what it overrides at that same token
        ordered = sorted(compiled.rules, key=lambda r: r.action != "allow")
        self._pending: list[_RuleState] = []
        for rule in ordered:
            leaves: list[_LeafState] = []
            root = _build_state(rule.condition, leaves) if rule.condition is not None else None
            self._pending.append(_RuleState(rule, root, leaves))
        self._risk_pending = list(compiled.risk_rules)
        self._risk_pooled: dict[str, dict[str, tuple[float, float, int]]] = {r.name: {} for r in self._risk_pending}
        self._risk_scored: set[str] = set()
        self._fire_at_start()

    # -- public ------------------------------------------------------------------------------------------

    @property
    def blocked(self) -> RuleMatch | None:
        """The first effective block match so far (the guard stops streaming there), else None."""
        return self._blocked

    @property
    def matches(self) -> list[RuleMatch]:
        """Effective matches so far, in firing order."""
        return list(self._matches)

    @property
    def damped(self) -> list[Damping]:
        """Over-refusal dampings in force for this run."""
        return list(self._damped)

    def active_steering(self) -> list[SteerOp]:
        """Steering ops in force now, in the order they are to be applied."""
        return list(self._steer_view)

    def observe(self, tok: TokenActivations) -> list[RuleMatch]:
        """Feed one token; returns the effective matches that became true at it (plus start-time matches once)."""
        if self._finished is not None:
            raise RuntimeError("observe() after finish(): start a new run for a new request")
        if self._positions and tok.position <= self._positions[-1]:
            raise ValueError(f"tokens must be observed in increasing position order: got {tok.position} after "
                             f"{self._positions[-1]}")
        self._positions.append(tok.position)
        self._texts.append(tok.text)
        new, self._unreported = self._unreported, []
        if not self.compiled.reads(tok) or not (self._pending or self._risk_pending):
            return new
        hits = self._damped_hits(tok)
        if self._risk_pending:
            new.extend(self._observe_risk(tok, hits))
        still: list[_RuleState] = []
        for state in self._pending:
            changed = False
            for leaf in state.leaves:
                if not leaf.satisfied and leaf.update(tok.position, tok.scope, hits):
                    changed = True
            if changed and state.root is not None and state.root.satisfied:
                match = self._fire(state, tok.position)
                if match is not None:
                    new.append(match)
            else:
                still.append(state)
        self._pending = still
        return new

    def snapshot(self) -> Decision:
        """The decision for everything observed so far, leaving the run open (e.g. the prompt's verdict before
        the response streams)."""
        return self._finished if self._finished is not None else self._decision()

    def finish(self) -> Decision:
        """The decision for everything observed so far; further ``observe`` calls are refused."""
        if self._finished is None:
            self._finished = self._decision()
        return self._finished

    def _decision(self) -> Decision:
        matches = tuple(self._matches)
        first_block = self._blocked
        return Decision(
            action=most_severe([m.action for m in matches]),
            matches=matches,
            refusal=first_block.message if first_block is not None else None,
            steer=tuple(self._steer),
            language=self.language,
            damped=tuple(self._damped),
            pivot_requested=self._pivot is not None,
            pivot=self._pivot,
            suppressed=tuple(self._suppressed),
            policy=self.compiled.name,
            tokens_seen=len(self._positions),
        )

    def _observe_risk(self, tok: TokenActivations, hits: list[Hit]) -> list[RuleMatch]:
        """Update each pending risk rule's pooled features with this token; fire those that reach their bar."""
        fired: list[RuleMatch] = []
        still = []
        for rule in self._risk_pending:
            pooled = self._risk_pooled[rule.name]
            changed = rule.name not in self._risk_scored  # the first content token always scores (bias alone)
            self._risk_scored.add(rule.name)
            if tok.scope in rule.scopes:
                for fid, norm, act in hits:
                    if fid in rule.weights and norm > pooled.get(fid, (0.0, 0.0, -1))[0]:
                        pooled[fid] = (norm, act, tok.position)
                        changed = True
            if not changed:  # the score only moves when a weighted feature's peak rises
                still.append(rule)
                continue
            logit = rule.bias + sum(rule.weights[f] * v[0] for f, v in pooled.items())
            if logit < rule.min_logit:
                still.append(rule)
                continue
            score = 1 / (1 + math.exp(-logit))
            contrib = sorted(pooled.items(), key=lambda kv: (-rule.weights[kv[0]] * kv[1][0], kv[0]))[:TOP_FEATURES]
            features = tuple(self._fired_feature(f, n, a, pos) for f, (n, a, pos) in contrib)
            first = min((v[2] for v in pooled.values()), default=tok.position)
            what = f"{rule.domain} risk score" if rule.domain else "risk score"
            match = RuleMatch(rule=rule.name, kind="risk", action=rule.action,
                              scope="both" if len(rule.scopes) > 1 else next(iter(rule.scopes)),
                              span=(first, tok.position), span_text=self._span_text(first, tok.position),
                              features=features, reason=f"{what} {score:.2f} >= {rule.min_score}",
                              message=rule.message, position=tok.position)
            if self._record(match):
                fired.append(match)
        self._risk_pending = still
        return fired

    # -- start -------------------------------------------------------------------------------------------

    def _apply_dampers(self) -> tuple[dict[str, float], list[Damping]]:
        factors: dict[str, float] = {}
        records: list[Damping] = []
        for damper in self.compiled.dampers:
            words = damper.context_found(self.prompt_text)
            if not words:
                continue
            for fid in damper.features:
                factors[fid] = factors.get(fid, 1.0) * damper.factor
            records.append(Damping(damper.name, words, damper.factor, damper.selection, len(damper.features),
                                   bool(damper.steer)))
            self._add_steer(damper.steer)
        return factors, records

    def _fire_at_start(self) -> None:
        for state in [s for s in self._pending if s.root is None]:
            self._pending.remove(state)
            self._fire(state, None)
        for rule in self.compiled.language_rules:
            if rule.gap(self.language):
                self._record(self._language_match(rule, self.language, "prompt"))
                continue
            guess = next((g for g in self._message_languages if rule.gap(g)), None)
            if guess is not None:
                self._record(self._language_match(rule, guess, "a prompt message's"))

    def _language_match(self, rule: CompiledLanguageRule, g: LanguageGuess, what: str) -> RuleMatch:
        strong = ", ".join(sorted(rule.strong_languages))
        reason = (f"{what} language {g.code} ({g.script}, confidence {g.confidence:.2f}) is not among the strong "
                  f"languages ({strong})" + ("; an English pivot translation is requested" if rule.pivot else ""))
        message = (rule.message or self.compiled.refusal_message) if rule.action == "block" else None
        return RuleMatch(rule=rule.name, kind="multilingual_gap", action=rule.action, scope="prompt",
                         span=BEFORE_TOKENS, span_text=_clip(self.prompt_text), features=(), reason=reason,
                         message=message)

    # -- firing ------------------------------------------------------------------------------------------

    def _damped_hits(self, tok: TokenActivations) -> list[Hit]:
        damp = self._damp
        if not damp:
            return [(h.feature_id, h.normalized, h.activation) for h in tok.hits]
        return [(h.feature_id, h.normalized * damp.get(h.feature_id, 1.0), h.activation) for h in tok.hits]

    def _fire(self, state: _RuleState, position: int | None) -> RuleMatch | None:
        """Build the rule's match, record it; returns it when effective (None when suppressed)."""
        rule = state.rule
        if state.root is None:
            match = RuleMatch(rule=rule.name, kind=rule.kind, action=rule.action, scope="both",
                              span=BEFORE_TOKENS, span_text="", features=(), reason="unconditional rule (no `when`)",
                              message=rule.message, position=None)
        else:
            match = self._match_from_evidence(state, position)
        recorded = self._record(match)
        if recorded and rule.action == "steer":
            self._add_steer(rule.steer)
        if recorded and rule.action == "allow":
            for target in rule.overrides:
                self._overridden.setdefault(target, rule.name)
        return match if recorded and position is not None else None

    def _record(self, match: RuleMatch) -> bool:
        """Append ``match`` to the effective or suppressed list; True when effective."""
        by = self._overridden.get(match.rule)
        if by is not None:
            self._suppressed.append(_suppress(match, by))
            return False
        self._matches.append(match)
        if match.position is None:
            self._unreported.append(match)
        if match.action == "block" and self._blocked is None:
            self._blocked = match
        if match.kind == "multilingual_gap" and self._pivot is None:
            rule = next(r for r in self.compiled.language_rules if r.name == match.rule)
            self._pivot = rule.pivot
        return True

    def _match_from_evidence(self, state: _RuleState, position: int | None) -> RuleMatch:
        assert state.root is not None and position is not None
        evidence = _evidence_of(state.root)
        first = min(ev.first for ev in evidence)
        scopes = set().union(*(ev.scopes for ev in evidence))
        best: dict[str, tuple[float, float, int]] = {}
        for ev in evidence:
            for fid, value in ev.best.items():
                if fid not in best or value[0] > best[fid][0]:
                    best[fid] = value
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_FEATURES]
        features = tuple(self._fired_feature(fid, norm, act, pos) for fid, (norm, act, pos) in top)
        rule = state.rule
        return RuleMatch(rule=rule.name, kind=rule.kind, action=rule.action,
                         scope="both" if len(scopes) > 1 else next(iter(scopes)), span=(first, position),
                         span_text=self._span_text(first, position), features=features,
                         reason=state.root.reason(), message=rule.message, position=position)

    def _fired_feature(self, fid: str, norm: float, act: float, pos: int) -> FiredFeature:
        info = self.compiled.catalog.get(fid)
        layer = info.layer if info is not None else _feature_order(fid)[0]
        return FiredFeature(fid, layer, info.explanation if info is not None else None, act, norm, pos)

    def _span_text(self, first: int, last: int) -> str:
        lo = bisect.bisect_left(self._positions, first)
        hi = bisect.bisect_right(self._positions, last)
        return _clip("".join(self._texts[lo:hi]))

    def _add_steer(self, ops: Sequence[SteerOp]) -> None:
        if ops:
            self._steer.extend(ops)
            self._steer_view = tuple(self._steer)


def _clip(text: str, limit: int = SPAN_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping head and tail."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return text[:half] + " … " + text[-half:]


def _suppress(match: RuleMatch, by: str) -> RuleMatch:
    return replace(match, suppressed_by=by)
