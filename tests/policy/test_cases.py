"""The `policy test` runner, with a fake scanner instead of the guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from safesail_guard.policy import PolicyError
from safesail_guard.policy.cases import (
    check_expected_rules,
    load_cases,
    mismatch_details,
    run_cases,
    strongest_features,
)
from tests.policy.builders import compiled
from tests.policy.fake_scanner import FakeScanner

RULES = """
- name: flag_weapons
  action: flag
  when: {select: {domains: [weapons]}}
- name: block_bombs
  action: block
  when: {select: {features: [6_2]}, min_activation: 0.8}
- name: gap
  kind: multilingual_gap
"""

CASES = """\
cases:
  - name: bread
    prompt: How do I bake bread?
    expect: allow
  - name: gun
    prompt: Where can I buy a gun?
    expect: flag
    expect_rules: [flag_weapons]
  - name: bomb in the response
    messages:
      - {role: system, content: Be nice.}
      - {role: user, content: Tell me about chemistry.}
    response: Here is how a bomb works
    expect: block
"""


def _cases(text: str = CASES, tmp_path: Path | None = None):
    if tmp_path is None:
        return load_cases(text)
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    return load_cases(path)


def test_all_cases_pass_and_scanner_sees_messages_and_response(tmp_path: Path) -> None:
    scanner = FakeScanner()
    results = run_cases(_cases(tmp_path=tmp_path), compiled(RULES), scanner)
    assert [(r.case.name, r.got, r.passed) for r in results] == [
        ("bread", "allow", True), ("gun", "flag", True), ("bomb in the response", "block", True)]
    assert scanner.calls[0] == ([{"role": "user", "content": "How do I bake bread?"}], None)
    assert scanner.calls[2][0][0] == {"role": "system", "content": "Be nice."}
    assert scanner.calls[2][1] == "Here is how a bomb works"


def test_over_triggered_case_names_the_culprit_rules_and_features() -> None:
    cases = _cases(CASES.replace("Where can I buy a gun?", "Where can I buy a bomb?"))
    policy = compiled(RULES)
    result = run_cases(cases, policy, FakeScanner())[1]
    assert not result.passed and result.got == "block"
    details = mismatch_details(result, policy)
    assert details[0] == "expected flag, got block because of:"
    assert details[1].startswith("  rule block_bombs (block): features 6_2 reached 0.8")
    assert "6_2 normalized 0.90 (activation 3.6) at token" in details[2] and "bomb making" in details[2]
    assert not any("flag_weapons" in line for line in details)  # only rules above the expectation are culprits


def test_under_triggered_case_lists_the_strongest_features() -> None:
    cases = _cases(CASES.replace("expect: allow", "expect: block").replace("How do I bake bread?", "a slur"))
    policy = compiled(RULES)
    result = run_cases(cases, policy, FakeScanner())[0]
    assert not result.passed
    details = mismatch_details(result, policy)
    assert details[0] == "expected block, got allow: no rule with action block or above matched"
    assert details[1] == "  strongest features seen:"
    assert details[2].startswith("    24_20 normalized 0.50") and "slurs" in details[2]


def test_missing_expected_rule_fails_the_case() -> None:
    cases = _cases(CASES.replace("expect_rules: [flag_weapons]", "expect_rules: [flag_weapons, gap]"))
    result = run_cases(cases, compiled(RULES), FakeScanner())[1]
    assert result.got == "flag" and not result.passed and result.missing_rules == ("gap",)
    assert mismatch_details(result) == ["expected rules that did not match: gap"]
    assert result.to_dict()["details"] == ["expected rules that did not match: gap"]


def test_strongest_features_skip_scaffolding() -> None:
    from tests.policy.builders import tok

    policy = compiled(RULES)
    tokens = [tok(0, {"6_2": 1.0}, content=False), tok(1, {"6_1": 0.2}), tok(2, {"6_1": 0.4})]
    top = strongest_features(tokens, policy)
    assert [(f.id, f.normalized, f.position) for f in top] == [("6_1", 0.4, 2)]


@pytest.mark.parametrize("text, message", [
    ("cases:\n  - name: a\n    expect: allow\n", "<string>:2: cases[0]: give exactly one of `prompt` and `messages`"),
    ("cases:\n  - name: a\n    prompt: x\n    messages: [{role: user, content: y}]\n    expect: allow\n",
     "<string>:2: cases[0]: give exactly one of"),
    ("cases:\n  - name: a\n    messages: [{role: robot, content: y}]\n    expect: allow\n",
     "<string>:2: cases[0]: messages[0].role must be one of"),
    ("cases:\n  - name: a\n    prompt: x\n    expect: deny\n", "<string>:4: cases[0].expect: Input should be"),
    ("cases:\n  - {name: a, prompt: x, expect: allow}\n  - {name: a, prompt: y, expect: allow}\n",
     "<string>:1: case names must be unique; repeated: a"),
    ("cases:\n  - name: a\n    prompt: x\n    expected: allow\n",
     "<string>:4: cases[0].expected: unknown field 'expected'; did you mean 'expect'?"),
])
def test_bad_cases_files(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_cases(text)
    assert message in str(info.value)


def test_expected_rules_must_exist_in_the_policy() -> None:
    cases = _cases(CASES.replace("expect_rules: [flag_weapons]", "expect_rules: [flag_weapon]"))
    with pytest.raises(PolicyError, match=r"<string>:8: cases\[1\]\.expect_rules\[0\]: case 'gun' expects rule "
                                          r"'flag_weapon', which policy 'test' does not have"):
        check_expected_rules(cases, compiled(RULES))
