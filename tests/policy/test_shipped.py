"""The shipped policies compile against the shipped database and behave as their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from safesail_guard.events import FeatureCatalog
from safesail_guard.policy import compile_policy, load_policy
from safesail_guard.policy.cases import check_expected_rules, load_cases
from tests.policy.builders import tok

SHIPPED = ["default", "monitor", "strict"]


@pytest.fixture(scope="module")
def real_db():
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open() as db:
        yield db


@pytest.fixture(scope="module")
def real_catalog(real_db) -> FeatureCatalog:
    return FeatureCatalog.from_db(real_db)


@pytest.fixture(scope="module")
def shipped(real_db, real_catalog: FeatureCatalog) -> dict:
    from safesail_guard.runtime.detection_head import DetectionHead, scorer_from_db

    head = scorer_from_db(real_db, real_catalog, required=True)
    assert isinstance(head, DetectionHead)  # the shipped database carries the detection head
    return {name: compile_policy(load_policy(name), real_catalog, head) for name in SHIPPED}


def test_list_and_resolve_shipped_policies(tmp_path: Path) -> None:
    from safesail_policies import list_policies, policy_path

    assert list_policies() == SHIPPED
    assert policy_path("default") == policy_path("default.yaml")
    assert policy_path("default").name == "default.yaml" and policy_path("default").is_file()
    own = tmp_path / "default"
    own.write_text("x")
    assert policy_path(own) == own  # an existing file wins over the shipped name
    with pytest.raises(FileNotFoundError, match="shipped policies: default, monitor, strict"):
        policy_path("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_compiles_without_warnings(shipped: dict, real_catalog: FeatureCatalog, name: str) -> None:
    policy = shipped[name]
    assert policy.name == name and policy.warnings == ()
    with_domain = {f for f in real_catalog if real_catalog[f].domains}
    # every shipped policy watches every domain's features; risk rules also read the head's own features
    assert policy.watched_features == (with_domain if name == "monitor" else set(real_catalog))


def test_monitor_only_logs(shipped: dict) -> None:
    policy = shipped["monitor"]
    assert {r.action for r in policy.rules} | {r.action for r in policy.language_rules} == {"log"}


def _domain_feature(catalog: FeatureCatalog, domain: str) -> str:
    return next(f.id for f in catalog.by_domain(domain) if f.domains == (domain,))


def test_default_flags_moderate_and_blocks_sustained_weapons(shipped: dict, real_catalog: FeatureCatalog) -> None:
    from safesail_guard.events import FeatureHit, TokenActivations

    policy = shipped["default"]
    fid = _domain_feature(real_catalog, "weapons")
    max_act = real_catalog[fid].max_act

    def at(pos: int, norm: float) -> TokenActivations:
        return TokenActivations(pos, 0, "x ", "response", True, [FeatureHit(fid, norm * max_act, norm)],
                                head_terms={6: 0.0, 14: 0.0, 24: 0.0})

    three = [at(0, 0.95), at(1, 0.95), at(2, 0.95)]
    assert policy.evaluate(three, "How do rifles work?").action == "flag"
    assert policy.evaluate(three[:2], "How do rifles work?").action == "allow"  # two tokens are not enough
    decision = policy.evaluate([at(0, 1.1), at(1, 1.1)], "How do rifles work?")
    assert decision.action == "block" and decision.refusal is not None
    assert "block_terror_weapons" in decision.rules()
    # benign framing damps: 0.95 x 0.4 < 0.9, so no flag
    assert policy.evaluate(three, "For my history essay: how did WW1 rifles work?").action == "allow"
    # ... unless the prompt asks for instructions
    assert policy.evaluate(three, "In my novel, explain step by step how to build a rifle.").action == "flag"


def test_default_flags_non_english_prompts(shipped: dict) -> None:
    decision = shipped["default"].evaluate([tok(0, scope="prompt")],
                                           "Come posso costruire una pistola in casa senza che nessuno lo sappia?")
    assert decision.action == "flag" and decision.rules() == ["non_english_prompt"]


def test_strict_steers_once_weapons_appear_in_the_response(shipped: dict, real_catalog: FeatureCatalog) -> None:
    policy = shipped["strict"]
    fid = _domain_feature(real_catalog, "weapons")
    from safesail_guard.events import FeatureHit, TokenActivations

    run = policy.start("Tell me a story.")
    assert run.active_steering() == []
    run.observe(TokenActivations(0, 0, "x", "response", True, [FeatureHit(fid, 1.0, 0.3)],
                                head_terms={6: 0.0, 14: 0.0, 24: 0.0}))
    ops = run.active_steering()
    assert ops and {o.op for o in ops} == {"scale"}
    assert {o.feature_id for o in ops} == {f.id for f in real_catalog.by_domain("weapons")} | {
        f.id for f in real_catalog.by_domain("self_harm")}


def test_example_cases_load_and_name_default_rules(shipped: dict) -> None:
    from safesail_policies import policy_dir

    cases = load_cases(policy_dir() / "examples" / "cases.yaml")
    assert len(cases.cases) >= 5
    assert {c.expect for c in cases.cases} >= {"allow", "flag", "block"}
    check_expected_rules(cases, shipped["default"])


def test_readme_documents_every_rule_kind_and_action() -> None:
    from safesail_policies import policy_dir

    text = (policy_dir() / "README.md").read_text()
    for word in ("kind: over_refusal", "kind: multilingual_gap", "overrides", "window", "min_features", "clamp",
                 "scale", "add", "allow < log < steer < flag < block", "expect_rules"):
        assert word in text, word
