"""The policy compiler: a validated policy file, resolved against a feature catalog, becomes a CompiledPolicy.

``compile_policy(policy, catalog, risk_head)`` takes the :class:`~safesail_guard.policy.schema.PolicyFile` that
:func:`~safesail_guard.policy.loader.load_policy` validated, resolves every selection against the
:class:`~safesail_guard.events.FeatureCatalog` of the guard's database to a frozen set of feature ids,
expands steering ops on domains/concepts to per-feature ops, takes ``risk`` rules' weights from the database's
risk head, and rejects what cannot work (unknown ids, domains, concepts or layers, with close matches; empty
selections; contradictory rules). Every problem is collected before one
:class:`~safesail_guard.policy.loader.PolicyError` names them all with file and line. The result is built from the
compiled rule forms of :mod:`safesail_guard.policy.rules` and is a
:class:`~safesail_guard.policy.run.CompiledPolicy`, immutable and safe to share between threads.

``compile_policy_source`` is the one-call path the guard and the server use: a shipped policy name, a YAML file
or YAML text, loaded and compiled.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from safesail_guard.events import FeatureCatalog
from safesail_guard.policy import schema
from safesail_guard.policy.decision import PivotRequest, SteerOp
from safesail_guard.policy.loader import PolicyError, PolicyIssue, SourceMap, load_policy, source_of
from safesail_guard.policy.rules import (
    CompiledCombo,
    CompiledCondition,
    CompiledDamper,
    CompiledLanguageRule,
    CompiledLeaf,
    CompiledRiskRule,
    CompiledRule,
    feature_order,
)
from safesail_guard.policy.run import CompiledPolicy

Loc = tuple[Any, ...]
"""A location in the policy file, e.g. ``("rules", 0, "when", "select")``."""


class RiskWeights(Protocol):
    """What ``kind: risk`` rules read of the database's risk head: the sparse
    `safesail_guard.runtime.scoring.RiskHead`, or the detection head
    (`safesail_guard.runtime.detection_head.DetectionHead`, recognised by ``kind == "detection"``; the run then
    calls its ``token_parts``, ``aggregate``, ``risk_of``, ``domain_risk`` and ``explain``)."""

    @property
    def weights(self) -> Mapping[str, float]:
        """Weight per feature id."""
        ...

    @property
    def bias(self) -> float:
        """The head's intercept."""
        ...


def is_detection_head(head: Any) -> bool:
    """Whether ``head`` is a detection head (token logits aggregated over a scope) rather than a sparse head."""
    return getattr(head, "kind", None) == "detection"


def compile_policy_source(policy: str | Path, catalog: FeatureCatalog,
                          risk_head: RiskWeights | None) -> CompiledPolicy:
    """Load a shipped policy name ("default"), a YAML file or YAML text and compile it against ``catalog``
    (an unknown name fails with the list of shipped policies)."""
    from safesail_policies import policy_path

    source: Any = policy
    if isinstance(policy, (str, Path)) and "\n" not in str(policy):
        source = policy_path(str(policy))
    return compile_policy(load_policy(source), catalog, risk_head)


def compile_policy(policy: schema.PolicyFile, catalog: FeatureCatalog,
                   risk_head: RiskWeights | None = None) -> CompiledPolicy:
    """Resolve ``policy`` against ``catalog``; :class:`PolicyError` lists every problem with file and line.

    ``risk_head`` (a `safesail_guard.runtime.scoring.RiskHead`) is needed by ``kind: risk`` rules.
    """
    return _Compiler(policy, catalog, risk_head).compile()


class _Compiler:
    """One compilation: collects every issue before raising, so a user fixes them all in one pass."""

    def __init__(self, policy: schema.PolicyFile, catalog: FeatureCatalog,
                 risk_head: RiskWeights | None = None) -> None:
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
            for fid in sorted(features, key=feature_order)
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
        detection = is_detection_head(head)
        weights = dict(head.weights)
        if rule.domain is not None:
            domains = self.catalog.domains
            if rule.domain not in domains:
                self.fail(loc + ("domain",), f"unknown domain {rule.domain!r}{_close(rule.domain, domains)}")
                return None
            weights = {f: w for f, w in weights.items() if f in self.catalog and rule.domain in self.catalog[f].domains}
            if not weights:
                what = "detection head" if detection else "risk head"
                self.fail(loc + ("domain",), f"the {what} gives no weight to a {rule.domain} feature, so "
                                             "this rule could never match")
                return None
        scopes = frozenset(("prompt", "response") if rule.scope == "both" else (rule.scope,))
        return CompiledRiskRule(name=rule.name, action=rule.action,
                                message=(rule.message or self.policy.defaults.refusal_message)
                                if rule.action == "block" else None,
                                weights=weights, bias=float(head.bias),
                                min_logit=math.log(rule.min_score / (1 - rule.min_score)),
                                min_score=rule.min_score, domain=rule.domain, scopes=scopes,
                                head=head if detection else None)

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
