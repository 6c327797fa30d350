"""Loading policy YAML: every error names the file, the line and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from safesail_guard.policy import PolicyError, load_policy
from safesail_guard.policy.schema import FeatureRule, Leaf, MultilingualGapRule, OverRefusalRule

GOOD = """\
version: 1
name: good
defaults:
  min_activation: 0.4
rules:
  - name: flag_weapons
    action: flag
    when:
      select: {domains: [weapons]}
  - name: framing
    kind: over_refusal
    context: {keywords: [doctor]}
    damp: {select: {domains: [drugs]}, factor: 0.5}
  - name: gap
    kind: multilingual_gap
"""


def _error(text: str, tmp_path: Path | None = None) -> PolicyError:
    source: str | Path = text
    if tmp_path is not None:
        source = tmp_path / "x.yaml"
        source.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(source)
    return info.value


def test_good_policy_loads_each_rule_kind() -> None:
    policy = load_policy(GOOD)
    assert [type(r) for r in policy.rules] == [FeatureRule, OverRefusalRule, MultilingualGapRule]
    assert policy.defaults.min_activation == 0.4
    rule = policy.rules[0]
    assert isinstance(rule, FeatureRule) and isinstance(rule.when, Leaf)
    assert rule.when.scope == "both" and rule.when.min_tokens == 1
    assert policy.rules[2].strong_languages == ["en"]  # type: ignore[union-attr]


def test_range_error_names_file_line_and_path(tmp_path: Path) -> None:
    text = GOOD.replace("      select: {domains: [weapons]}",
                        "      select: {domains: [weapons]}\n      min_activation: 1.5")
    err = _error(text, tmp_path)
    expected = "rules[0].when.min_activation: Input should be less than or equal to 1"
    assert str(err) == f"{tmp_path / 'x.yaml'}:10: {expected}"
    assert err.issues[0].line == 10 and err.issues[0].path == "rules[0].when.min_activation"


def test_nested_condition_errors_point_into_the_combinator() -> None:
    text = GOOD.replace(
        "      select: {domains: [weapons]}",
        "      any:\n        - select: {domains: [weapons]}\n        - all:\n            - select: {}\n"
        "              min_activaton: 0.2",
    )
    err = _error(text)
    lines = str(err).splitlines()
    assert "<string>:12: rules[0].when.any[1].all[0].select: select needs at least one of" in lines[0]
    assert lines[1].startswith("<string>:13: rules[0].when.any[1].all[0].min_activaton: unknown field "
                               "'min_activaton'; did you mean 'min_activation'?")


def test_unknown_top_level_key_and_rule_key() -> None:
    err = _error(GOOD.replace("name: good\n", "name: good\nrulez: []\n").replace("    action: flag\n",
                                                                                "    action: flag\n    colour: red\n"))
    text = str(err)
    assert "<string>:3: rulez: unknown field 'rulez'" in text
    assert "<string>:9: rules[0].colour: unknown field 'colour'" in text


def test_missing_required_field_points_at_the_rule() -> None:
    err = _error(GOOD.replace("    action: flag\n", ""))
    assert str(err) == "<string>:6: rules[0].action: required field 'action' is missing"


def test_bad_kind_lists_valid_kinds() -> None:
    err = _error(GOOD.replace("kind: multilingual_gap", "kind: multilingual"))
    assert "<string>:15: rules[2].kind: unknown rule kind 'multilingual'" in str(err)
    assert "over_refusal" in str(err)


def test_over_refusal_fields_are_checked() -> None:
    err = _error(GOOD.replace("factor: 0.5", "factor: 2").replace("keywords: [doctor]", "patterns: ['(unclosed']"))
    text = str(err)
    assert "<string>:12: rules[1].context.patterns: " in text and "not a valid regular expression" in text
    assert "<string>:13: rules[1].damp.factor: Input should be less than or equal to 1" in text


def test_yaml_syntax_error_has_a_line() -> None:
    err = _error("version: 1\nname: x\nrules:\n  - name: a\n    action: [flag\n")
    assert str(err).startswith("<string>:6: YAML syntax error")


def test_duplicate_keys_are_errors() -> None:
    err = _error(GOOD.replace("    action: flag\n", "    action: flag\n    action: block\n"))
    assert str(err) == "<string>:8: rules[0].action: duplicate key 'action' (first set on line 7)"


def test_feature_ids_stay_strings_and_no_is_not_false() -> None:
    policy = load_policy(GOOD.replace("{domains: [weapons]}", "{features: [14_4828, 6_9]}")
                         .replace("kind: multilingual_gap", "kind: multilingual_gap\n    strong_languages: [en, no]"))
    assert policy.rules[0].when.select.features == ["14_4828", "6_9"]  # type: ignore[union-attr]
    assert policy.rules[2].strong_languages == ["en", "no"]  # type: ignore[union-attr]


def test_single_rule_consistency_checks() -> None:
    windowed = "select: {domains: [weapons]}\n      min_tokens: 3\n      window: 2"
    assert "window (2) is smaller than min_tokens (3)" in str(
        _error(GOOD.replace("select: {domains: [weapons]}", windowed)))
    assert "action steer needs a `steer` list" in str(_error(GOOD.replace("action: flag", "action: steer")))
    assert "only allowed with action steer" in str(
        _error(GOOD.replace("    action: flag\n",
                            "    action: flag\n    steer: [{feature: 6_1, op: clamp, value: 0}]\n")))
    assert "only allow rules can override" in str(
        _error(GOOD.replace("    action: flag\n", "    action: flag\n    overrides: [gap]\n")))
    assert "exactly one of feature, domain, concept (got feature, domain)" in str(
        _error(GOOD.replace("    action: flag\n",
                            "    action: steer\n    steer: [{feature: 6_1, domain: drugs, op: clamp, value: 0}]\n")))
    assert "`message` is the refusal text of a block rule" in str(
        _error(GOOD.replace("    action: flag\n", "    action: flag\n    message: nope\n")))


def test_empty_file_and_non_mapping() -> None:
    assert "the file is empty" in str(_error("# nothing\n"))
    assert "top level must be a mapping" in str(_error("- a\n- b\n"))


def test_missing_file_and_shipped_name() -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(Path("/nonexistent/policy.yaml"))
    assert load_policy("default").name == "default"


def test_loading_from_path_records_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert load_policy(path).name == "good" and load_policy(str(path)).name == "good"
