"""`kind: risk` rules: act on the risk head's score, token by token, with the contributing features."""

from __future__ import annotations

import math

import pytest

from safesail_guard.policy import PolicyError, compile_policy, load_policy
from safesail_guard.runtime.scoring import RiskHead
from tests.policy.builders import make_catalog, policy_yaml, seq, tok

HEAD = RiskHead({"6_1": 2.0, "6_2": 1.0, "14_10": 3.0}, -2.0)


def compiled(rules: str, head=HEAD):
    return compile_policy(load_policy(policy_yaml(rules)), make_catalog(), head)


RULE = """
- name: risky
  kind: risk
  action: flag
  min_score: 0.5
"""


def test_fires_at_the_token_where_the_score_crosses_the_bar():
    p = compiled(RULE)
    # logit = -2 + 2*x(6_1) + 1*x(6_2): 0.6 -> -0.8 (no); 14_11 has no weight; 6_2 at 1.0 -> +0.2 (yes)
    toks = seq({"6_1": 0.6}, {"14_11": 0.9}, {"6_2": 1.0}, {"6_1": 0.9}, scope="prompt")
    run = p.start("")
    fired = [run.observe(t) for t in toks]
    assert fired[0] == [] and fired[1] == [] and len(fired[2]) == 1 and fired[3] == []
    d = run.finish()
    m = d.matches[0]
    assert d.action == "flag" and m.kind == "risk" and m.span == (0, 2)
    assert [f.id for f in m.features] == ["6_1", "6_2"]  # contributions 1.2 and 1.0, largest first
    assert "risk score 0.55 >= 0.5" in m.reason


def test_response_tokens_do_not_count_for_a_prompt_scoped_rule_and_damping_applies():
    p = compiled(RULE)
    assert p.evaluate(seq({"14_10": 1.0}, scope="response"), "").action == "allow"
    assert p.evaluate(seq({"14_10": 1.0}, scope="prompt"), "").action == "flag"
    both = compiled(RULE + "  scope: both\n")
    assert both.evaluate(seq({"14_10": 1.0}, scope="response"), "").action == "flag"
    damped = compiled(RULE + """
- name: medical
  kind: over_refusal
  context: {keywords: [nurse]}
  damp: {select: {domains: [drugs]}, factor: 0.1}
""")
    assert damped.evaluate(seq({"14_10": 1.0}, scope="prompt"), "I am a nurse").action == "allow"


def test_domain_scores_use_only_that_domains_features():
    p = compiled(RULE.replace("min_score: 0.5", "min_score: 0.5\n  domain: drugs"))
    assert p.evaluate(seq({"6_1": 1.0, "6_2": 1.0}, scope="prompt"), "").action == "allow"  # weapons only
    assert p.evaluate(seq({"14_10": 0.7}, scope="prompt"), "").action == "flag"  # -2 + 2.1 > 0


def test_block_carries_the_refusal_and_allow_can_override():
    p = compiled(RULE.replace("flag", "block") + "  message: no.\n")
    d = p.evaluate(seq({"14_10": 1.0}, scope="prompt"), "")
    assert d.action == "block" and d.refusal == "no."
    o = compiled(RULE + """
- name: trusted
  action: allow
  overrides: [risky]
  when: {select: {features: [24_20]}, min_activation: 0.1}
""")
    d = o.evaluate([tok(0, {"24_20": 0.5}, scope="prompt"), tok(1, {"14_10": 1.0}, scope="prompt")], "")
    assert d.action == "allow" and d.suppressed[0].rule == "risky"


@pytest.mark.parametrize("rule, head, message", [
    (RULE, None, "needs the database's risk head"),
    (RULE + "  domain: weapon\n", HEAD, "unknown domain 'weapon'; did you mean 'weapons'"),
    (RULE + "  domain: hate\n", HEAD, "no weight to a hate feature"),
    (RULE.replace("flag", "steer"), HEAD, "cannot steer"),
    (RULE.replace("0.5", "1.0"), HEAD, "less than 1"),
])
def test_compile_errors(rule, head, message):
    with pytest.raises(PolicyError, match=message):
        compiled(rule, head)


def test_bar_is_the_logit_of_min_score():
    p = compiled(RULE.replace("0.5", "0.8"))
    assert p.risk_rules[0].min_logit == pytest.approx(math.log(4))
    assert set(p.watched_features) >= {"6_1", "6_2", "14_10"}


def test_a_bias_alone_over_the_bar_fires_on_the_first_content_token():
    p = compiled(RULE, RiskHead({"6_1": 1.0}, 1.0))
    d = p.evaluate([tok(0, {}, scope="prompt", content=False), tok(1, {}, scope="prompt")], "")
    assert d.action == "flag" and d.matches[0].span == (1, 1) and d.matches[0].features == ()
