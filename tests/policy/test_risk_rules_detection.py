"""`kind: risk` rules over the detection head: the rule's bar meets the same calibrated risk the verdict reports
for its scope; prompt rules decide when the prompt is complete, response rules while streaming."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch

from safesail_guard.policy import PolicyError, compile_policy, load_policy
from safesail_guard.runtime.detection_head import DetectionHead, MissingHeadTermsError, sigmoid
from safesail_guard.runtime.scoring import RiskHead
from safesail_neuron_db.detection_head import DetectionHeadFile, HeadLayer
from tests.policy.builders import make_catalog, policy_yaml, tok

# named weights: 6_1 (weapons) 2.0, 6_2 (weapons) 1.0, 14_10 (drugs) 3.0, 24_20 (hate) -1.0; all mu = 0 but 6_2's
WEIGHTS = {6: ([1, 2], [2.0, 1.0], [0.0, 0.5]), 14: ([10], [3.0], [0.0]), 24: ([20], [-1.0], [0.0])}


def make_head(kind: str = "mean", window: int = 4, bias: float = -2.0) -> DetectionHead:
    layers = {L: HeadLayer(L, torch.zeros(4), torch.zeros(32), 0.0, torch.tensor(lat), torch.tensor(w),
                           torch.tensor(mu)) for L, (lat, w, mu) in WEIGHTS.items()}
    spec = {"bias": bias, "aggregation": {"kind": kind, "window": window}}
    return DetectionHead(DetectionHeadFile(layers, spec), make_catalog())


def htok(pos: int, remainder: float = 0.0, acts: dict[str, float] | None = None, *, scope: str = "prompt",
         content: bool = True):
    """A builders token (``acts`` normalized, raw = normalized x max_act) whose terms put ``remainder`` on
    layer 6 and 0 elsewhere."""
    return replace(tok(pos, acts, scope=scope, content=content), head_terms={6: remainder, 14: 0.0, 24: 0.0})


def compiled(rules: str, head=None):
    return compile_policy(load_policy(policy_yaml(rules)), make_catalog(), head if head is not None else make_head())


RULE = """
- name: risky
  kind: risk
  action: block
  message: no.
  min_score: 0.5
"""
# with the default head, on raw activations a (normalized x max_act; 6_1's max_act is 2):
# logit = -2 + 2 a(6_1) + 1 (a(6_2) - 0.5) + 3 a(14_10) - a(24_20) + remainder


def test_prompt_rule_decides_on_the_whole_prompt_not_a_prefix():
    p = compiled(RULE)
    # token 0 alone scores logit -2.5 + 4 = 1.5 (risk 0.82); the whole prompt's mean is (1.5 - 3 * 2.5) / 4 = -1.5
    toks = [htok(0, 0.0, {"6_1": 1.0}), htok(1), htok(2), htok(3)]
    run = p.start("")
    assert all(run.observe(t) == [] for t in toks)
    assert run.blocked is None  # nothing is decided on a prefix
    run.end_prompt()
    assert run.blocked is None and run.finish().action == "allow"
    assert make_head().score(toks).score < 0.5
    # the same tokens in the other order: still only decided when the prompt is complete
    late = [htok(0), htok(1), htok(2), htok(3, 12.0)]
    run = p.start("")
    assert all(run.observe(t) == [] for t in late) and run.blocked is None
    run.end_prompt()
    m = run.blocked
    assert m is not None and m.span == (0, 3) and m.scope == "prompt" and m.position == 3
    assert "detection head, mean over 4 tokens of the prompt" in m.reason
    assert run.observe(htok(4, scope="response")) == [m]  # reported once, by the next observe
    assert run.observe(htok(5, scope="response")) == []


def test_first_response_token_and_finish_end_the_prompt():
    p = compiled(RULE)
    run = p.start("")
    run.observe(htok(0, 5.0))
    fired = run.observe(htok(1, -50.0, scope="response"))
    assert [m.rule for m in fired] == ["risky"] and fired[0].span == (0, 0)
    assert p.evaluate([htok(0, 5.0)], "").action == "block"  # a prompt-only scan: decided at finish


@pytest.mark.parametrize("kind", ["mean", "rolling_max"])
def test_prompt_rule_fires_exactly_when_the_verdict_score_reaches_the_bar(kind):
    rng = random.Random(7)
    head = make_head(kind, window=3, bias=-0.5)
    for min_score in (0.3, 0.5, 0.7):
        p = compiled(RULE.replace("0.5", str(min_score)), head)
        for _ in range(40):
            toks = [htok(i, rng.gauss(0, 1.5), {"6_1": rng.random()} if rng.random() < 0.3 else None,
                         content=rng.random() > 0.1) for i in range(rng.randint(1, 12))]
            verdict = head.score(toks)
            if abs(sigmoid(verdict.logit) - min_score) < 1e-9:
                continue
            fired = p.evaluate(toks, "").action == "block"
            assert fired == (sigmoid(verdict.logit) >= min_score)


def test_response_rule_fires_while_streaming_on_a_full_window():
    head = make_head("rolling_max", window=2, bias=0.0)
    p = compiled(RULE + "  scope: response\n", head)
    run = p.start("")
    assert run.observe(htok(0, 40.0)) == []  # prompt tokens never count for a response rule
    logits = [-2.0, -2.0, 3.0, 3.0]  # window means: -2, 0.5 -> crosses at position 3
    fired = [run.observe(htok(1 + i, v - (-0.5), scope="response")) for i, v in enumerate(logits)]
    assert fired[0] == [] and fired[1] == [] and len(fired[2]) == 1
    m = fired[2][0]
    assert m.span == (2, 3) and m.position == 3 and m.scope == "response"
    assert head.score([htok(1 + i, v + 0.5, scope="response") for i, v in enumerate(logits[:3])],
                      scopes=("response",)).score >= 0.5


def test_prompt_rule_ignores_the_response_and_both_reads_both():
    prompt_only = compiled(RULE)
    toks = [htok(0, -5.0), htok(1, 20.0, scope="response")]
    assert prompt_only.evaluate(toks, "").action == "allow"
    both = compiled(RULE + "  scope: both\n")
    run = both.start("")
    run.observe(htok(0, -5.0))
    run.end_prompt()
    assert run.blocked is None  # the prompt alone is below the bar
    fired = run.observe(htok(1, 20.0, scope="response"))  # mean of both: (-7.5 + 17.5) / 2 = 5
    assert len(fired) == 1 and fired[0].scope == "both" and fired[0].span == (0, 1)


def test_domain_rule_compares_the_domains_attribution():
    rule = RULE + "  domain: drugs\n"
    p = compiled(rule)
    # weapons alone: high risk but no drugs contribution
    assert p.evaluate([htok(0, 0.0, {"6_1": 3.0})], "").action == "allow"
    # drugs carries all the positive named contribution: its score is the risk
    d = p.evaluate([htok(0, 0.0, {"14_10": 3.0})], "")
    assert d.action == "block" and [f.id for f in d.matches[0].features] == ["14_10"]
    # both domains: drugs carries 3 / (3 + 8) of the positive named part, times a risk of ~1: below 0.5
    assert p.evaluate([htok(0, 0.0, {"14_10": 1.0, "6_1": 2.0})], "").action == "allow"


def test_match_lists_the_positive_contributors_that_fired():
    d = compiled(RULE).evaluate([htok(0, 0.0, {"6_1": 1.0, "24_20": 1.0}), htok(1, 0.0, {"14_10": 2.0})], "")
    m = d.matches[0]
    assert [f.id for f in m.features] == ["14_10", "6_1"]  # 3 * 1.0 mean, 2 * 0.5 mean; 24_20 is negative
    assert m.features[0].position == 1 and m.features[0].activation == pytest.approx(2.0)
    assert "named" in m.reason and "remainder" in m.reason


def test_over_refusal_damping_scales_the_named_part():
    damped = compiled(RULE + """
- name: medical
  kind: over_refusal
  context: {keywords: [nurse]}
  damp: {select: {domains: [drugs]}, factor: 0.1}
""")
    toks = [htok(0, 0.0, {"14_10": 1.0})]  # logit -2.5 + 3 = 0.5 -> 0.62; damped: -2.5 + 0.3 -> 0.1
    assert damped.evaluate(toks, "what dose").action == "block"
    assert damped.evaluate(toks, "I am a nurse").action == "allow"


def test_a_token_without_terms_raises_instead_of_scoring_zero():
    run = compiled(RULE).start("")
    with pytest.raises(MissingHeadTermsError):
        run.observe(tok(0, {"6_1": 1.0}, scope="prompt", head_terms=None))


def test_compile_with_the_detection_head():
    p = compiled(RULE)
    rule = p.risk_rules[0]
    assert rule.head is not None and rule.scopes == frozenset({"prompt"}) and rule.scope == "prompt"
    assert rule.min_logit == pytest.approx(0.0)
    assert set(p.watched_features) >= {"6_1", "6_2", "14_10", "24_20"}
    with pytest.raises(PolicyError, match="detection head gives no weight to a self_harm feature"):
        compiled(RULE + "  domain: self_harm\n")
    legacy = compile_policy(load_policy(policy_yaml(RULE)), make_catalog(), RiskHead({"6_1": 1.0}, -1.0))
    assert legacy.risk_rules[0].head is None


@pytest.mark.parametrize("scope", ["reply", "all"])
def test_unknown_scope_is_a_clear_error(scope):
    with pytest.raises(PolicyError, match=r"scope.*'prompt', 'response' or 'both'|scope.*prompt.*response.*both"):
        compiled(RULE + f"  scope: {scope}\n")


def test_empty_prompt_scope_scores_the_bias():
    high_bias = make_head(bias=math.log(9))  # risk 0.9 at the training average
    p = compiled(RULE, high_bias)
    d = p.evaluate([htok(0, 0.0, content=False)], "")
    assert d.action == "block" and d.matches[0].features == ()
