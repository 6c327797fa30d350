"""Compiling against the catalog: unknown names with close matches, empty selections, contradictory rules."""

from __future__ import annotations

import pytest

from safesail_guard.policy import PolicyError, compile_policy, load_policy
from safesail_guard.policy.schema import DEFAULT_MIN_ACTIVATION, FeatureRule, Leaf, PolicyFile, Selection
from tests.policy.builders import compiled, make_catalog, policy_yaml


def _compile_error(rules: str) -> str:
    with pytest.raises(PolicyError) as info:
        compiled(rules)
    return str(info.value)


@pytest.mark.parametrize("select, message", [
    ("{features: [6_22]}", "rules[0].when.select.features[0]: unknown feature '6_22'; did you mean '6_2'"),
    ("{domains: [weapon]}", "rules[0].when.select.domains[0]: unknown domain 'weapon'; did you mean 'weapons'?"),
    ("{concepts: [weapons/firearm]}", "unknown concept 'weapons/firearm'; did you mean 'weapons/firearms'"),
    ("{concepts: [explosive]}", "unknown concept 'explosive'; did you mean 'explosives'"),
    ("{layers: [7]}", "rules[0].when.select.layers[0]: layer 7 has no features (layers with features: 6, 14, 24)"),
    ("{domains: [drugs], exclude: [14_12]}", "rules[0].when.select.exclude[0]: unknown feature '14_12'"),
    ("{domains: [weapons], layers: [14]}", "rules[0].when.select: selects no features (domains weapons; layers 14)"),
    ("{features: [24_20], exclude: [24_20]}", "selects no features"),
])
def test_unknown_names_and_empty_selections(select: str, message: str) -> None:
    text = _compile_error(f"""
    - name: r
      action: flag
      when: {{select: {select}}}
    """)
    assert message in text
    assert text.startswith("<string>:6: ")


def test_every_issue_is_reported_with_its_line() -> None:
    text = _compile_error("""
    - name: a
      action: flag
      when: {select: {domains: [weapon]}}
    - name: b
      action: log
      when:
        select:
          features: [6_1, 99_1]
    """)
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("<string>:6: rules[0].when.select.domains[0]: unknown domain 'weapon'")
    assert lines[1].startswith("<string>:11: rules[1].when.select.features[1]: unknown feature '99_1'")


def test_duplicate_rule_names() -> None:
    text = _compile_error("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}}
    - name: r
      action: log
      when: {select: {domains: [drugs]}}
    """)
    assert "<string>:7: rules[1].name: duplicate rule name 'r' (also rules[0])" in text


def test_identical_condition_with_different_actions() -> None:
    text = _compile_error("""
    - name: flag_it
      action: flag
      when: {select: {domains: [drugs]}, min_activation: 0.4}
    - name: block_it
      action: block
      when: {select: {features: [14_11, 14_10]}, min_activation: 0.4}
    """)
    assert ("rules[1].when: rule 'block_it' has the same condition as rule 'flag_it' but action block instead "
            "of flag") in text


def test_a_steer_rule_may_share_a_condition() -> None:
    policy = compiled("""
    - name: flag_it
      action: flag
      when: {select: {domains: [drugs]}}
    - name: steer_it
      action: steer
      when: {select: {domains: [drugs]}}
      steer: [{domain: drugs, op: scale, value: 0.5}]
    """)
    assert [r.action for r in policy.rules] == ["flag", "steer"]


def test_identical_condition_with_the_same_action_is_a_warning() -> None:
    policy = compiled("""
    - name: a
      action: flag
      when: {select: {domains: [drugs]}}
    - name: b
      action: flag
      when: {select: {domains: [drugs]}}
    """)
    assert policy.warnings == ("rules 'a' and 'b' have the same condition and action",)


def test_different_thresholds_are_not_identical() -> None:
    policy = compiled("""
    - name: a
      action: flag
      when: {select: {domains: [drugs]}}
    - name: b
      action: block
      when: {select: {domains: [drugs]}, min_activation: 0.8}
    """)
    a, b = policy.rules
    assert a.condition is not None and b.condition is not None
    assert a.features == b.features == {"14_10", "14_11"}
    assert (a.condition.min_activation, b.condition.min_activation) == (DEFAULT_MIN_ACTIVATION, 0.8)
    assert a.condition.signature() != b.condition.signature()
    assert [(r.name, r.action) for r in policy.rules] == [("a", "flag"), ("b", "block")]
    assert policy.warnings == ()  # neither an error (different actions) nor a same-condition warning


def test_clamp_and_scale_on_one_feature() -> None:
    text = _compile_error("""
    - name: s
      action: steer
      when: {select: {domains: [weapons]}}
      steer:
        - {domain: weapons, op: scale, value: 0.2}
        - {feature: 6_2, op: clamp, value: 0}
    """)
    assert "rules[0].steer[1]: rule 's': feature 6_2 is both clamped (through feature 6_2) and scaled/added " \
           "(through domain weapons)" in text


def test_one_op_with_two_values_and_overlap_with_one_value() -> None:
    text = _compile_error("""
    - name: s
      action: steer
      when: {select: {domains: [weapons]}}
      steer:
        - {domain: weapons, op: scale, value: 0.2}
        - {domain: terror, op: scale, value: 0.5}
    """)
    assert "feature 6_3 gets scale 0.2 through domain weapons and scale 0.5 through domain terror" in text
    ok = compiled("""
    - name: s
      action: steer
      when: {select: {domains: [weapons]}}
      steer:
        - {domain: weapons, op: scale, value: 0.2}
        - {domain: terror, op: scale, value: 0.2}
    """)
    assert sorted(op.feature_id for op in ok.rules[0].steer) == ["6_1", "6_2", "6_3"]


def test_unknown_steer_target() -> None:
    text = _compile_error("""
    - name: s
      action: steer
      steer: [{concept: firearm, op: clamp, value: 0}]
    """)
    assert "rules[0].steer[0].concept: unknown concept 'firearm'; did you mean 'weapons/firearms'?" in text


def test_steer_rule_with_prompt_scope() -> None:
    text = _compile_error("""
    - name: s
      action: steer
      when:
        any:
          - {select: {domains: [weapons]}, scope: response}
          - {select: {domains: [terror]}, scope: prompt}
      steer: [{domain: weapons, op: scale, value: 0.5}]
    """)
    assert "<string>:9: rules[0].when.any[1].scope: rule 's' steers, and steering acts on generated tokens" in text


def test_steer_ops_on_a_non_steer_rule_name_the_rule() -> None:
    with pytest.raises(PolicyError, match="rule 'f': `steer` ops are only allowed with action steer"):
        load_policy(policy_yaml("""
        - name: f
          action: flag
          steer: [{domain: weapons, op: scale, value: 0.5}]
        """))


@pytest.mark.parametrize("overrides, message", [
    ("[flag_weapon]", "rule 'allow_it' overrides unknown rule 'flag_weapon'; did you mean 'flag_weapons'?"),
    ("[allow_it]", "rule 'allow_it' overrides itself"),
    ("[allow_other]", "overrides 'allow_other', another allow rule"),
    ("[framing]", "overrides 'framing', an over_refusal rule, which has no match to suppress"),
])
def test_bad_overrides(overrides: str, message: str) -> None:
    text = _compile_error(f"""
    - name: allow_it
      action: allow
      overrides: {overrides}
      when: {{select: {{domains: [terror]}}}}
    - name: allow_other
      action: allow
      when: {{select: {{domains: [hate]}}}}
    - name: flag_weapons
      action: flag
      when: {{select: {{domains: [weapons]}}}}
    - name: framing
      kind: over_refusal
      context: {{keywords: [doctor]}}
      damp: {{select: {{domains: [drugs]}}, factor: 0.5}}
    """)
    assert text.startswith("<string>:6: rules[0].overrides[0]: rule 'allow_it' ") and message in text


def test_min_features_larger_than_the_selection() -> None:
    text = _compile_error("""
    - name: r
      action: flag
      when: {select: {domains: [drugs]}, min_features: 3}
    """)
    assert "min_features (3) exceeds the 2 selected features" in text


def test_damp_selection_is_checked() -> None:
    text = _compile_error("""
    - name: framing
      kind: over_refusal
      context: {keywords: [doctor]}
      damp: {select: {domains: [drug]}, factor: 0.5}
    """)
    assert "rules[0].damp.select.domains[0]: unknown domain 'drug'; did you mean 'drugs'?" in text


def test_policy_built_in_python_compiles_and_errors_without_lines() -> None:
    rule = FeatureRule(name="r", action="flag", when=Leaf(select=Selection(domains=["weapons"])))
    policy = PolicyFile(version=1, name="py", rules=[rule])
    assert compile_policy(policy, make_catalog()).rules[0].features == {"6_1", "6_2", "6_3"}
    bad = PolicyFile(version=1, name="py", rules=[FeatureRule(name="r", action="flag",
                                                                when=Leaf(select=Selection(domains=["x"])))])
    with pytest.raises(PolicyError, match=r"^<policy>: rules\[0\]\.when\.select\.domains\[0\]: unknown domain 'x'"):
        compile_policy(bad, make_catalog())


def test_compiled_policy_summaries() -> None:
    policy = compiled("""
    - name: framing
      kind: over_refusal
      context: {keywords: [doctor]}
      damp: {select: {features: [14_10]}, factor: 0.5}
    - name: r
      action: flag
      when: {select: {domains: [hate]}, min_tokens: 2, window: 4}
    - name: gap
      kind: multilingual_gap
    """)
    assert policy.rule_names == ("framing", "r", "gap")
    assert policy.watched_features == {"14_10", "24_20"}
    assert policy.layers == [14, 24]
    assert policy.rules[0].describe() == "domains hate >= 0.3 on 2 tokens within 4 of both"
