"""Builders for policy tests: a tiny catalog, tokens from {feature: normalized} maps, policies from YAML."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from safesail_guard.events import FeatureCatalog, FeatureHit, FeatureInfo, TokenActivations
from safesail_guard.policy import CompiledPolicy, compile_policy, load_policy

FEATURES = [
    FeatureInfo("6_1", 6, 1, ("weapons",), ("weapons/firearms",), "guns and rifles", 2.0),
    FeatureInfo("6_2", 6, 2, ("weapons",), ("weapons/explosives",), "bomb making", 4.0),
    FeatureInfo("6_3", 6, 3, ("terror", "weapons"), ("terror/attack_planning", "weapons/explosives"),
                "attack plans", 1.0),
    FeatureInfo("14_10", 14, 10, ("drugs",), ("drugs/illicit_drug_use",), "drug use", 1.0),
    FeatureInfo("14_11", 14, 11, ("drugs",), ("drugs/drug_manufacturing",), "cooking meth", 2.0),
    FeatureInfo("24_20", 24, 20, ("hate",), ("hate/racial_ethnic_hate",), "slurs", 1.0),
    FeatureInfo("24_21", 24, 21, ("self_harm",), ("self_harm/self_injury",), "cutting", 1.0),
]


def make_catalog() -> FeatureCatalog:
    return FeatureCatalog(FEATURES)


_BY_ID = {f.id: f for f in FEATURES}


ZERO_TERMS = {6: 0.0, 14: 0.0, 24: 0.0}
"""Detection-head remainder terms of zero at the shipped layers (a synthetic token must carry terms, or a guard
with a detection head refuses to score it)."""


_ZERO = object()


def tok(position: int, acts: Mapping[str, float] | None = None, *, scope: str = "response",
        content: bool = True, text: str | None = None, head_terms: object = _ZERO) -> TokenActivations:
    """A token whose hits have the given *normalized* activations (raw = normalized x max_act) and zero
    detection-head terms."""
    hits = [FeatureHit(fid, v * _BY_ID[fid].max_act if fid in _BY_ID else v, v) for fid, v in (acts or {}).items()]
    hits.sort(key=lambda h: -h.normalized)
    return TokenActivations(position, 1000 + position, f"w{position} " if text is None else text, scope,
                            content, hits,  # type: ignore[arg-type]
                            head_terms=dict(ZERO_TERMS) if head_terms is _ZERO else head_terms)  # type: ignore[arg-type]


def seq(*acts: Mapping[str, float] | None, scope: str = "response", start: int = 0) -> list[TokenActivations]:
    """Consecutive tokens, one per activation map (None or {} = nothing fired)."""
    return [tok(start + i, a, scope=scope) for i, a in enumerate(acts)]


def policy_yaml(rules: str, *, defaults: str = "") -> str:
    """A whole policy file around an indented block of rules."""
    head = "version: 1\nname: test\n"
    if defaults:
        head += "defaults:\n" + textwrap.indent(textwrap.dedent(defaults).strip("\n"), "  ") + "\n"
    return head + "rules:\n" + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n"


def compiled(rules: str, *, defaults: str = "", catalog: FeatureCatalog | None = None) -> CompiledPolicy:
    return compile_policy(load_policy(policy_yaml(rules, defaults=defaults)), catalog or make_catalog())


def decide(policy: CompiledPolicy, tokens: Sequence[TokenActivations], prompt: str = ""):
    return policy.evaluate(tokens, prompt)
