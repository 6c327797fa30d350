"""Evaluating compiled policies token by token: conditions, windows, combinators, actions, overrides, steering."""

from __future__ import annotations

import json

import pytest

from tests.policy.builders import compiled, seq, tok

FLAG_WEAPONS = """
- name: flag_weapons
  action: flag
  when: {select: {domains: [weapons]}}
"""


# -- leaf conditions ------------------------------------------------------------------------------------------

def test_default_threshold_is_point_three_and_inclusive() -> None:
    policy = compiled(FLAG_WEAPONS)
    assert policy.evaluate(seq({"6_1": 0.29})).action == "allow"
    assert policy.evaluate(seq({"6_1": 0.3})).action == "flag"


def test_defaults_min_activation_and_rule_override() -> None:
    policy = compiled(FLAG_WEAPONS, defaults="min_activation: 0.5")
    assert policy.evaluate(seq({"6_1": 0.45})).action == "allow"
    assert policy.evaluate(seq({"6_1": 0.5})).action == "flag"
    own = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_activation: 0.2}
    """, defaults="min_activation: 0.5")
    assert own.evaluate(seq({"6_1": 0.25})).action == "flag"


def test_selection_by_feature_concept_layer_and_exclude() -> None:
    def fires(select: str, acts: dict[str, float]) -> bool:
        policy = compiled(f"""
        - name: r
          action: flag
          when: {{select: {select}}}
        """)
        return policy.evaluate(seq(acts)).action == "flag"

    assert fires("{features: [6_2]}", {"6_2": 0.9}) and not fires("{features: [6_2]}", {"6_1": 0.9})
    assert fires("{concepts: [weapons/explosives]}", {"6_3": 0.9})
    assert fires("{concepts: [explosives]}", {"6_2": 0.9}) and not fires("{concepts: [explosives]}", {"6_1": 0.9})
    assert fires("{layers: [14]}", {"14_11": 0.9}) and not fires("{layers: [14]}", {"6_1": 0.9})
    assert fires("{domains: [weapons, drugs], layers: [14]}", {"14_11": 0.9})
    assert not fires("{domains: [weapons, drugs], layers: [14]}", {"6_1": 0.9})
    assert not fires("{domains: [weapons], exclude: [6_1]}", {"6_1": 0.9})


def test_scope_prompt_ignores_response_tokens() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, scope: prompt}
    """)
    assert policy.evaluate(seq({"6_1": 0.9}, scope="response")).action == "allow"
    assert policy.evaluate(seq({"6_1": 0.9}, scope="prompt")).action == "flag"


def test_non_content_tokens_never_count() -> None:
    policy = compiled(FLAG_WEAPONS)
    assert policy.evaluate([tok(0, {"6_1": 0.9}, content=False)]).action == "allow"


def test_min_tokens_counts_over_the_whole_run_without_window() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_tokens: 3}
    """)
    assert policy.evaluate(seq({"6_1": 0.5}, None, {"6_2": 0.5})).action == "allow"
    tokens = seq({"6_1": 0.5}, *[None] * 50, {"6_2": 0.5}, None, {"6_1": 0.4})
    decision = policy.evaluate(tokens)
    assert decision.action == "flag"
    assert decision.matches[0].span == (0, 53)


def test_window_requires_the_tokens_close_together() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_tokens: 3, window: 4}
    """)
    spread = seq({"6_1": 0.5}, None, None, None, {"6_1": 0.5}, None, None, None, {"6_1": 0.5})
    assert policy.evaluate(spread).action == "allow"
    close = seq({"6_1": 0.5}, None, None, None, {"6_1": 0.5}, None, {"6_1": 0.5}, {"6_2": 0.5})
    decision = policy.evaluate(close)
    assert decision.action == "flag"
    assert decision.matches[0].span == (4, 7)  # the three qualifying tokens inside the 4-token window
    assert decision.matches[0].position == 7


def test_window_counts_only_content_tokens_of_the_scope() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, scope: response, min_tokens: 2, window: 2}
    """)
    tokens = [tok(0, {"6_1": 0.5}), tok(1, content=False), tok(2, scope="prompt"), tok(3, {"6_1": 0.5})]
    # positions 1 (scaffolding) and 2 (another scope) do not widen the gap: 0 and 3 are consecutive tokens
    assert policy.evaluate(tokens).action == "flag"


def test_min_features_counts_distinct_features() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_features: 2}
    """)
    assert policy.evaluate(seq({"6_1": 0.5}, {"6_1": 0.9})).action == "allow"
    assert policy.evaluate(seq({"6_1": 0.5}, {"6_2": 0.1}, {"6_2": 0.4})).action == "flag"
    assert policy.evaluate(seq({"6_1": 0.5, "6_2": 0.5})).action == "flag"


def test_min_features_with_window_forgets_old_features() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_features: 2, window: 3}
    """)
    assert policy.evaluate(seq({"6_1": 0.5}, None, None, {"6_2": 0.5})).action == "allow"
    assert policy.evaluate(seq({"6_1": 0.5}, None, {"6_2": 0.5})).action == "flag"


def test_window_state_stays_bounded() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_tokens: 5, window: 5, min_features: 3}
    """)
    run = policy.start("")
    for i in range(500):
        run.observe(tok(i, {"6_1": 0.5}))  # one feature only: never enough features
    leaf = run._pending[0].leaves[0]
    assert len(leaf.entries) == 5 and leaf.feature_counts == {"6_1": 5}
    assert run.finish().action == "allow"


# -- combinators ------------------------------------------------------------------------------------------------

COMBO = """
- name: r
  action: block
  when:
    any:
      - {select: {features: [24_20]}, min_activation: 0.8}
      - all:
          - {select: {domains: [terror]}, scope: prompt}
          - {select: {domains: [drugs]}, scope: response, min_tokens: 2}
"""


def test_any_fires_on_one_child() -> None:
    decision = compiled(COMBO).evaluate(seq({"24_20": 0.85}))
    assert decision.action == "block"
    assert decision.matches[0].reason.startswith("features 24_20 reached 0.8 on 1 token")


def test_all_needs_every_child_but_not_at_the_same_token() -> None:
    policy = compiled(COMBO)
    prompt = seq({"6_3": 0.6}, scope="prompt")
    assert policy.evaluate(prompt + seq({"14_10": 0.5}, start=1)).action == "allow"
    assert policy.evaluate(seq({"14_10": 0.5}, {"14_10": 0.5})).action == "allow"
    decision = policy.evaluate(prompt + seq({"14_10": 0.5}, None, {"14_11": 0.9}, start=1))
    assert decision.action == "block"
    match = decision.matches[0]
    assert match.span == (0, 3) and match.scope == "both"
    assert match.reason.startswith("all of: (domains terror reached")
    assert [f.id for f in match.features] == ["14_11", "6_3", "14_10"]


# -- actions, decisions, the run API ----------------------------------------------------------------------------

SEVERAL = """
- name: log_drugs
  action: log
  when: {select: {domains: [drugs]}}
- name: flag_weapons
  action: flag
  when: {select: {domains: [weapons]}}
- name: block_hate
  action: block
  when: {select: {domains: [hate]}, min_activation: 0.7}
- name: block_self_harm
  action: block
  message: Please reach out to someone you trust.
  when: {select: {domains: [self_harm]}}
"""


def test_decision_is_the_most_severe_match() -> None:
    policy = compiled(SEVERAL)
    assert policy.evaluate(seq({"14_10": 0.5})).action == "log"
    assert policy.evaluate(seq({"14_10": 0.5}, {"6_1": 0.5})).action == "flag"
    decision = policy.evaluate(seq({"24_20": 0.9}, {"14_10": 0.5}, {"6_1": 0.5}))
    assert decision.action == "block" and decision.rules() == ["block_hate", "log_drugs", "flag_weapons"]
    assert decision.refusal == "I can't help with that request."


def test_block_message_and_first_block_wins() -> None:
    policy = compiled(SEVERAL, defaults="refusal_message: Not here.")
    decision = policy.evaluate(seq({"24_21": 0.5}, {"24_20": 0.9}))
    assert decision.refusal == "Please reach out to someone you trust."
    assert policy.evaluate(seq({"24_20": 0.9}, {"24_21": 0.5})).refusal == "Not here."


def test_observe_reports_each_match_once_at_its_token() -> None:
    run = compiled(SEVERAL).start("hello")
    assert run.observe(tok(0, {"6_1": 0.2})) == []
    new = run.observe(tok(1, {"6_1": 0.6}, text="gun"))
    assert [m.rule for m in new] == ["flag_weapons"] and new[0].position == 1 and new[0].span_text == "gun"
    assert run.observe(tok(2, {"6_1": 0.9})) == []
    assert run.blocked is None
    new = run.observe(tok(3, {"24_20": 0.95}))
    assert [m.rule for m in new] == ["block_hate"] and run.blocked is new[0]
    decision = run.finish()
    assert decision.tokens_seen == 4 and run.finish() is decision
    with pytest.raises(RuntimeError):
        run.observe(tok(4))


def test_out_of_order_positions_are_refused() -> None:
    run = compiled(SEVERAL).start("")
    run.observe(tok(5))
    with pytest.raises(ValueError, match="increasing position order"):
        run.observe(tok(5))


def test_match_evidence_features_and_json() -> None:
    decision = compiled(FLAG_WEAPONS).evaluate([tok(0, {"6_2": 0.7, "6_1": 0.4}, text="bomb")])
    feats = decision.matches[0].features
    assert [(f.id, f.layer, f.explanation) for f in feats] == [("6_2", 6, "bomb making"), ("6_1", 6, "guns and rifles")]
    assert feats[0].activation == pytest.approx(2.8) and feats[0].normalized == pytest.approx(0.7)
    doc = json.loads(json.dumps(decision.to_dict()))
    assert doc["action"] == "flag" and doc["matches"][0]["span"] == [0, 0]
    assert doc["matches"][0]["features"][0]["id"] == "6_2" and doc["language"]["code"] == "und"
    text = decision.explain()
    assert "decision: FLAG" in text and "flag_weapons" in text and "6_2 0.70" in text and "bomb making" in text


def test_long_span_text_is_clipped() -> None:
    policy = compiled("""
    - name: r
      action: flag
      when: {select: {domains: [weapons]}, min_tokens: 2}
    """)
    tokens = [tok(0, {"6_1": 0.5}, text="start ")] + [tok(i, text="x" * 10) for i in range(1, 100)]
    tokens.append(tok(100, {"6_1": 0.5}, text=" end"))
    text = policy.evaluate(tokens).matches[0].span_text
    assert len(text) <= 201 and text.startswith("start ") and text.endswith(" end") and " … " in text


def test_evaluate_derives_prompt_text_from_prompt_tokens() -> None:
    policy = compiled("""
    - name: gap
      kind: multilingual_gap
    """)
    words = "Come posso fare una torta per il compleanno del mio amico?".split()
    tokens = [tok(i, scope="prompt", text=w + " ") for i, w in enumerate(words)]
    decision = policy.evaluate(tokens)
    assert decision.language.code == "it" and decision.action == "flag"


# -- overrides --------------------------------------------------------------------------------------------------

OVERRIDE = """
- name: allow_attack_history
  action: allow
  overrides: [flag_weapons]
  when: {select: {domains: [terror]}, scope: prompt}
- name: flag_weapons
  action: flag
  when: {select: {features: [6_1, 6_2]}}
"""


def test_allow_override_suppresses_later_matches() -> None:
    policy = compiled(OVERRIDE)
    decision = policy.evaluate(seq({"6_3": 0.5}, scope="prompt") + seq({"6_1": 0.9}, start=1))
    assert decision.action == "allow" and decision.rules() == ["allow_attack_history"]
    assert [(m.rule, m.suppressed_by) for m in decision.suppressed] == [("flag_weapons", "allow_attack_history")]
    assert "suppressed: flag_weapons (flag) overridden by allow_attack_history" in decision.explain()


def test_allow_override_at_the_same_token_counts_whatever_the_file_order() -> None:
    allow_last = OVERRIDE.split("- name: flag_weapons")
    reordered = "- name: flag_weapons" + allow_last[1] + allow_last[0]
    for rules in (OVERRIDE, reordered):
        decision = compiled(rules).evaluate(seq({"6_3": 0.5, "6_1": 0.9}, scope="prompt"))
        assert decision.action == "allow" and len(decision.suppressed) == 1


def test_allow_override_does_not_undo_earlier_matches() -> None:
    decision = compiled(OVERRIDE).evaluate(seq({"6_1": 0.9}, {"6_3": 0.5}, scope="prompt"))
    assert decision.action == "flag" and decision.rules() == ["flag_weapons", "allow_attack_history"]
    assert decision.suppressed == ()


def test_without_the_allow_rule_the_flag_stands() -> None:
    decision = compiled(OVERRIDE).evaluate(seq({"6_1": 0.9}, scope="prompt"))
    assert decision.action == "flag"


# -- steering ---------------------------------------------------------------------------------------------------

def test_unconditional_steer_is_active_from_the_start() -> None:
    policy = compiled("""
    - name: always_damp_drugs
      action: steer
      steer: [{domain: drugs, op: scale, value: 0.5}]
    """)
    run = policy.start("")
    ops = run.active_steering()
    assert [(o.feature_id, o.op, o.value) for o in ops] == [("14_10", "scale", 0.5), ("14_11", "scale", 0.5)]
    assert [m.rule for m in run.matches] == ["always_damp_drugs"]
    assert [m.rule for m in run.observe(tok(0))] == ["always_damp_drugs"]  # reported once, by the first observe
    assert run.observe(tok(1)) == []
    decision = run.finish()
    assert decision.action == "steer" and len(decision.steer) == 2


def test_steer_applies_from_the_firing_token() -> None:
    policy = compiled("""
    - name: steer_weapons
      action: steer
      when: {select: {domains: [weapons]}, scope: response, min_activation: 0.5}
      steer:
        - {feature: 6_2, op: clamp, value: 0.0}
        - {concept: firearms, op: add, value: -0.5}
    """)
    run = policy.start("")
    run.observe(tok(0, {"6_2": 0.9}, scope="prompt"))
    assert run.active_steering() == []
    run.observe(tok(1, {"6_1": 0.4}))
    assert run.active_steering() == []
    run.observe(tok(2, {"6_2": 0.6}))
    ops = run.active_steering()
    assert [(o.feature_id, o.op, o.value, o.layer, o.latent, o.rule) for o in ops] == [
        ("6_2", "clamp", 0.0, 6, 2, "steer_weapons"), ("6_1", "add", -0.5, 6, 1, "steer_weapons")]
    assert ops[1].absolute_value == pytest.approx(-1.0)  # -0.5 x max_act 2.0
    assert run.finish().steer == tuple(ops)


# -- over-refusal damping ---------------------------------------------------------------------------------------

DAMP = """
- name: medical
  kind: over_refusal
  context:
    keywords: [doctor, side effects]
    patterns: ['patients?']
    unless: [step by step]
  damp: {select: {domains: [drugs]}, factor: 0.5}
- name: flag_drugs
  action: flag
  when: {select: {domains: [drugs]}, min_activation: 0.4}
"""


def test_damping_applies_when_the_context_is_present() -> None:
    policy = compiled(DAMP)
    tokens = seq({"14_10": 0.6})
    assert policy.evaluate(tokens, "How do I get high?").action == "flag"
    decision = policy.evaluate(tokens, "My Doctor mentioned side effects for her PATIENTS.")
    assert decision.action == "allow"
    assert len(decision.damped) == 1
    d = decision.damped[0]
    assert (d.rule, d.context, d.factor, d.n_features) == ("medical", ("doctor", "side effects", "patients"), 0.5, 2)
    assert "damped by medical" in decision.explain()
    # damped values are what the rules see and what the match reports
    strong = policy.evaluate(seq({"14_10": 0.9}), "ask a doctor")
    assert strong.action == "flag" and strong.matches[0].features[0].normalized == pytest.approx(0.45)


def test_damping_keywords_are_whole_words_and_unless_cancels() -> None:
    policy = compiled(DAMP)
    tokens = seq({"14_10": 0.6})
    assert policy.evaluate(tokens, "the doctoral thesis").action == "flag"
    assert policy.evaluate(tokens, "doctor, tell me step by step").action == "flag"


def test_damping_does_not_touch_other_features() -> None:
    policy = compiled(DAMP + """
- name: flag_weapons
  action: flag
  when: {select: {domains: [weapons]}, min_activation: 0.4}
""")
    assert policy.evaluate(seq({"6_1": 0.6}), "doctor").action == "flag"


def test_factor_zero_means_never_count_even_at_threshold_zero() -> None:
    policy = compiled("""
    - name: fiction
      kind: over_refusal
      context: {keywords: [novel]}
      damp: {select: {features: [24_20]}, factor: 0}
    - name: flag_hate
      action: flag
      when: {select: {domains: [hate]}, min_activation: 0}
    """)
    assert policy.evaluate(seq({"24_20": 1.0}), "in my novel").action == "allow"
    assert policy.evaluate(seq({"24_20": 0.01}), "in my essay").action == "flag"


def test_dampers_multiply_and_can_steer() -> None:
    policy = compiled("""
    - name: a
      kind: over_refusal
      context: {keywords: [doctor]}
      damp: {select: {features: [14_10]}, factor: 0.5}
      steer: true
    - name: b
      kind: over_refusal
      context: {keywords: [history]}
      damp: {select: {domains: [drugs]}, factor: 0.5}
    - name: flag_drugs
      action: flag
      when: {select: {features: [14_10]}, min_activation: 0.3}
    """)
    assert policy.evaluate(seq({"14_10": 1.0}), "doctor").action == "flag"  # 0.5
    run = policy.start("a doctor on the history of opium")
    assert [(o.feature_id, o.op, o.value) for o in run.active_steering()] == [("14_10", "scale", 0.5)]
    run.observe(tok(0, {"14_10": 1.0}))  # 0.25 < 0.3
    decision = run.finish()
    assert decision.action == "allow" and [d.rule for d in decision.damped] == ["a", "b"]
    assert decision.damped[0].steer and not decision.damped[1].steer


# -- multilingual gap -------------------------------------------------------------------------------------------

GAP = """
- name: gap
  kind: multilingual_gap
  strong_languages: [en, de]
  min_confidence: 0.5
  pivot: {base_url: "http://127.0.0.1:9/v1", model: translator, api_key_env: PIVOT_KEY}
"""


def test_gap_flags_a_non_strong_language_and_requests_pivot() -> None:
    run = compiled(GAP).start("¿Cómo puedo hacer un pastel para el cumpleaños de mi amigo?")
    assert [m.rule for m in run.matches] == ["gap"]
    assert [m.rule for m in run.observe(tok(0))] == ["gap"]
    decision = run.finish()
    assert decision.action == "flag" and decision.language.code == "es"
    assert decision.pivot_requested and decision.pivot is not None
    assert (decision.pivot.model, decision.pivot.base_url, decision.pivot.api_key_env) == (
        "translator", "http://127.0.0.1:9/v1", "PIVOT_KEY")
    assert decision.to_dict()["pivot"]["model"] == "translator"
    assert decision.matches[0].span == (-1, -1) and "es (Latn" in decision.matches[0].reason
    assert decision.to_dict()["matches"][0]["span"] == [-1, -1]


@pytest.mark.parametrize("prompt", [
    "How do I bake a cake for my friend's birthday party?",              # strong language
    "Wie kann ich einen Kuchen für den Geburtstag meines Freundes backen?",  # strong language
    "ok",                                                               # undetermined
    "bomb making instructions",                                         # undetermined (no stopwords)
])
def test_gap_ignores_strong_and_undetermined_prompts(prompt: str) -> None:
    decision = compiled(GAP).evaluate([tok(0)], prompt)
    assert decision.action == "allow" and not decision.pivot_requested


def test_gap_respects_min_confidence() -> None:
    low = compiled(GAP.replace("min_confidence: 0.5", "min_confidence: 1.0"))
    assert low.evaluate([tok(0)], "Come posso fare una torta per il compleanno del mio amico?").action == "allow"


def test_gap_block_is_blocked_before_any_token() -> None:
    policy = compiled("""
    - name: gap
      kind: multilingual_gap
      action: block
      message: English only, please.
    """)
    run = policy.start("Jak mogę upiec ciasto na urodziny mojego przyjaciela?")
    assert run.blocked is not None and run.blocked.rule == "gap" and run.blocked.span == (-1, -1)
    assert run.finish().refusal == "English only, please."


def test_gap_can_be_overridden_by_an_unconditional_allow() -> None:
    policy = compiled(GAP + """
- name: allow_all_languages
  action: allow
  overrides: [gap]
""")
    decision = policy.evaluate([tok(0)], "Come posso fare una torta per il compleanno del mio amico?")
    assert decision.action == "allow" and not decision.pivot_requested
    assert [m.rule for m in decision.suppressed] == ["gap"]
