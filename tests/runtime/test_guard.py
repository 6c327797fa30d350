"""The runtime guard on tiny random Llama and Qwen2 models with real (random-init) SAEs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from safesail_guard.runtime.encoder import Competition, measure_agreement
from safesail_guard.runtime.generation import GuardedModel
from safesail_guard.runtime.guard import Guard, GuardError
from safesail_neuron_db import ModelMismatchError, NeuronDB
from tests.runtime.guard_factory import layer_acts, make_guard_db

PROMPT = "Explain how vaccines work, and bake bread with flour and yeast."


@pytest.fixture(scope="module")
def guard_db(tiny_loaded, tmp_path_factory):
    path, saes = make_guard_db(tmp_path_factory.mktemp("gdb") / "db", tiny_loaded)
    return path, saes


@pytest.fixture
def guard(tiny_loaded, guard_db):
    return Guard.from_db(guard_db[0], tiny_loaded)


def test_defaults_to_exact_topk_when_competition_ships(guard):
    assert guard.firing == "topk"
    assert guard.layers == [0, 2]
    assert "firing=topk" in repr(guard)


def test_scan_gives_one_event_per_token(guard):
    enc, _ = guard.encode_prompt(PROMPT)
    res = guard.scan(PROMPT)
    assert [t.position for t in res.tokens] == list(range(len(enc)))
    assert [t.token_id for t in res.tokens] == enc.input_ids
    assert {t.scope for t in res.tokens} == {"prompt"}
    assert any(t.hits for t in res.tokens), "random SAEs selected on similar text should fire somewhere"
    assert res.truncation.strategy == "none"
    for t in res.tokens:
        for h in t.hits:
            assert h.activation > 0 and h.normalized == pytest.approx(h.activation / guard.catalog[h.feature_id].max_act, abs=2e-3)


def test_scan_with_response_marks_response_scope(guard):
    res = guard.scan(PROMPT, response="Flour and water.")
    scopes = [t.scope for t in res.tokens]
    assert "response" in scopes and scopes[0] == "prompt"
    assert scopes.index("response") == len([s for s in scopes if s == "prompt"])  # prompt then response
    assert "".join(t.text for t in res.tokens if t.scope == "response").startswith("Flour")


def test_events_match_exact_topk_reference(guard, guard_db, tiny_loaded):
    """Activations the guard reports equal the full SAE's TopK activations at those latents."""
    _, saes = guard_db
    x = layer_acts(tiny_loaded, (0, 2))
    for layer, sae in saes.items():
        enc = guard.encoders[layer].with_firing("topk", Competition(sae.W_enc.detach(), sae.b_enc.detach(), sae.k))
        agr = measure_agreement(x[layer], enc, sae.W_enc.detach(), sae.b_enc.detach(), sae.k)
        assert agr.topk_firings > 0
        assert agr.agreement == 1.0 and agr.act_abs_error < 1e-5
        shipped = measure_agreement(x[layer], guard.encoders[layer], sae.W_enc.detach(), sae.b_enc.detach(), sae.k)
        assert shipped.agreement >= 0.95  # int8 competition -> bf16


def test_threshold_rule_is_measurably_worse_or_equal(guard, guard_db, tiny_loaded):
    _, saes = guard_db
    x = layer_acts(tiny_loaded, (0, 2))
    sae = saes[0]
    thr = measure_agreement(x[0], guard.encoders[0].with_firing("threshold"), sae.W_enc.detach(), sae.b_enc.detach(), sae.k)
    assert 0 <= thr.agreement <= 1 and thr.firing == "threshold"


@pytest.mark.parametrize("use_cache", [True, False])
def test_guarded_generation_sees_every_token(guard, use_cache):
    gm = GuardedModel(guard)
    n_prompt = len(guard.encode_prompt(PROMPT)[0])
    calls = []
    orig = guard.tracker

    def spy(*a, **k):
        t = orig(*a, **k)
        calls.append(t)
        return t

    guard.tracker = spy  # type: ignore[method-assign]
    out = gm.generate(PROMPT, max_new_tokens=6, use_cache=use_cache)
    tracker = calls[-1]
    total = n_prompt + out.completion_tokens
    assert out.completion_tokens >= 1
    assert [t.position for t in out.tokens] == list(range(total))
    for layer in guard.layers:
        assert tracker.stats.encoded_positions[layer] == total
        assert tracker.stats.hook_calls[layer] == tracker.stats.forward_calls == 1 + out.completion_tokens
    assert sum(t.scope == "response" for t in out.tokens) == out.completion_tokens


def test_guarded_greedy_matches_plain_hf_generate(guard):
    gm = GuardedModel(guard)
    out = gm.generate(PROMPT, max_new_tokens=6)
    ids = torch.tensor([guard.encode_prompt(PROMPT)[0].input_ids])
    ref = guard.model.generate(ids, max_new_tokens=out.completion_tokens, do_sample=False, min_new_tokens=out.completion_tokens)
    assert ref[0, ids.shape[1]:].tolist() == [t.token_id for t in out.tokens if t.scope == "response"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_watch_counts_hf_generate_tokens(guard, use_cache):
    ids = torch.tensor([guard.encode_prompt(PROMPT)[0].input_ids])
    with guard.watch() as session:
        out = guard.model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache)
        # generate never feeds its last sampled token back; flush scores it
        assert len(session.tokens) == out.shape[1] - 1
        session.flush(out[0])
    assert [t.position for t in session.tokens] == list(range(out.shape[1]))
    assert [t.token_id for t in session.tokens] == out[0].tolist()
    assert sum(t.scope == "response" for t in session.tokens) == 5


def test_mismatched_model_is_an_error(tiny_loaded, tmp_path):
    path, _ = make_guard_db(tmp_path / "other", tiny_loaded, fingerprint="0" * 64, competition=False, head=False)
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        Guard.from_db(path, tiny_loaded)
    with NeuronDB.open(path) as db, pytest.raises(ModelMismatchError):
        Guard(tiny_loaded.model, tiny_loaded.tokenizer, db, model_fingerprint=tiny_loaded.identity.fingerprint)


def test_long_input_is_chunked_and_says_so(tiny_loaded, guard_db):
    g = Guard.from_db(guard_db[0], tiny_loaded, max_tokens=16)
    text = " ".join([PROMPT] * 4)
    res = g.scan(text)
    n = len(g.encode_prompt(text)[0])
    assert res.truncation.strategy == "chunked" and res.truncation.chunks == -(-n // 16)
    assert [t.position for t in res.tokens] == list(range(n))


def test_bad_inputs_are_clear_errors(guard):
    with pytest.raises(ValueError, match="messages"):
        guard.scan([])
    with pytest.raises(ValueError, match="role"):
        guard.scan([{"role": "robot", "content": "hi"}])
    with pytest.raises(GuardError, match="max_new_tokens"):
        GuardedModel(guard).generate(PROMPT, max_new_tokens=-1)


def test_prompt_longer_than_context_is_refused_for_generation(guard):
    long = "bread " * 400  # the tiny models have a 256-token context
    with pytest.raises(GuardError, match="context"):
        GuardedModel(guard).generate(long, max_new_tokens=2)


@dataclass
class _Op:
    feature_id: str
    layer: int
    op: str
    value: float
    start: int = 0


def test_steering_clamp_to_current_value_changes_nothing_and_add_changes_logits(guard):
    ids = torch.tensor([guard.encode_prompt(PROMPT)[0].input_ids])
    with torch.no_grad():
        base = guard.model(ids).logits
    fid = guard.encoders[0].feature_ids[0]
    tracker = guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    tracker.set_steering([_Op(fid, 0, "scale", 1.0)])  # scale by 1 == identity
    with tracker.attached(guard.model), torch.no_grad():
        same = guard.model(ids).logits
    assert torch.allclose(base, same, atol=1e-5)
    tracker = guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    tracker.set_steering([_Op(fid, 0, "add", 5.0)])
    with tracker.attached(guard.model), torch.no_grad():
        steered = guard.model(ids).logits
    assert (steered - base).abs().max() > 1e-3


def test_steering_clamp_sets_the_feature_activation(guard):
    """After clamping, re-encoding the steered output shows the feature at the clamp value."""
    enc = guard.encoders[2]
    fid, row = enc.feature_ids[0], 0
    from safesail_guard.runtime.tracker import LayerSteering

    x = torch.randn(3, enc.W_enc.shape[1])
    pre, acts = enc.encode(x)
    steer = LayerSteering(torch.tensor([row]), torch.tensor([0]), torch.tensor([0.5]), torch.tensor([0]))
    new = x + steer.delta(enc, acts, torch.arange(3))
    target = 0.5 * float(enc.max_act[row])
    # the decoder row moves the reconstruction by (target - a) along W_dec; its projection on W_dec confirms it
    moved = ((new - x) @ enc.W_dec[row]) / enc.W_dec[row].norm() ** 2
    assert torch.allclose(moved, target - acts[:, row], atol=1e-4)
    assert fid in guard.catalog


def test_scan_batch_equals_one_by_one_and_isolates_bad_items(guard):
    prompts = [PROMPT, "bread", [{"role": "user", "content": "the sea at night"}], [], "Explain vaccines to a child please."]
    batch = guard.scan_batch(prompts, batch_size=2)
    assert isinstance(batch[3], ValueError)
    for p, got in zip(prompts, batch):
        if p == []:
            continue
        ref = guard.scan(p)
        assert [t.token_id for t in got.tokens] == [t.token_id for t in ref.tokens]
        for a, b in zip(got.tokens, ref.tokens):
            assert [h.feature_id for h in a.hits] == [h.feature_id for h in b.hits]
            for ha, hb in zip(a.hits, b.hits):
                assert ha.activation == pytest.approx(hb.activation, abs=1e-4)
        assert got.risk is not None and got.risk.score == pytest.approx(ref.risk.score, abs=1e-4)


def test_system_messages_are_encoded_and_watched(guard):
    """Client-supplied system text is scored like any other role (issue 12: no unread client text)."""
    msgs = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "bread please"}]
    res = guard.scan(msgs)
    roles = {t.role for t in res.tokens}
    assert {"system", "user"} <= roles
    assert "".join(t.text for t in res.tokens if t.role == "system" and t.content) == "You are kind."
    assert any(t.content for t in res.tokens if t.role == "user")


def _response_policy(guard, action_block: str) -> str:
    return f"""
version: 1
name: t
defaults: {{refusal_message: "Refused by test."}}
rules:
{action_block}
"""


def _block_first_firing(gm, lag: int):
    """Block on the first feature that fires in the free reply; returns (its position, feature, resp tokens,
    positions of the deltas shown, final generation)."""
    free = gm.generate(PROMPT, max_new_tokens=12, ignore_eos=True)
    resp = [t for t in free.tokens if t.scope == "response"]
    firing = [(t.position, h.feature_id) for t in resp for h in t.hits]
    assert firing, "some feature should fire somewhere in 12 random-model tokens"
    pos, fid = firing[0]
    policy = _response_policy(gm.guard, f"""
  - name: stop_it
    action: block
    when:
      select: {{features: ["{fid}"]}}
      scope: response
      min_activation: 0.000001
""")
    shown, final = [], None
    for ev in gm.stream(PROMPT, max_new_tokens=12, ignore_eos=True, policy=policy, lag=lag):
        if ev.kind == "delta":
            shown.append(ev.token.position)
        else:
            final = ev.generation
    return pos, fid, resp, shown, final


def test_streaming_block_stops_at_the_firing_token_without_emitting_it(guard):
    """Find a feature that fires on the unguarded reply, block on it, and check where generation stopped."""
    pos, fid, resp, deltas, final = _block_first_firing(GuardedModel(guard), lag=0)
    assert final.finish_reason == "content_filter" and final.blocked_at == pos
    assert final.text == "Refused by test." and final.decision.action == "block"
    assert all(p < pos for p in deltas)  # the blocking token was never shown
    n_before = pos - final.prompt_tokens
    assert final.completion_tokens == n_before
    assert [t.token_id for t in final.tokens if t.scope == "response"][:n_before] == [t.token_id for t in resp][:n_before]
    match = final.decision.matches[0]
    assert match.span[1] == pos and match.features[0].id == fid


def test_policy_steering_changes_generation_from_the_start(guard):
    gm = GuardedModel(guard)
    base = gm.generate(PROMPT, max_new_tokens=8, ignore_eos=True)
    fid = guard.encoders[2].feature_ids[0]
    policy = _response_policy(guard, f"""
  - name: push
    action: steer
    steer:
      - {{feature: "{fid}", op: add, value: 50.0}}
""")
    steered = gm.generate(PROMPT, max_new_tokens=8, ignore_eos=True, policy=policy)
    assert steered.steering and steered.steering[0].feature_id == fid and steered.steering[0].start == 0
    assert steered.decision.action == "steer"
    assert [t.token_id for t in steered.tokens] != [t.token_id for t in base.tokens]


@pytest.mark.parametrize("lag", [1, 3, 8, 16])
def test_micro_batched_firing_gives_the_same_events(guard, lag):
    gm = GuardedModel(guard)
    ref = gm.generate(PROMPT, max_new_tokens=30, ignore_eos=True, lag=0)
    got = gm.generate(PROMPT, max_new_tokens=30, ignore_eos=True, lag=lag)
    assert [t.position for t in got.tokens] == [t.position for t in ref.tokens]
    assert [t.token_id for t in got.tokens] == [t.token_id for t in ref.tokens]
    assert [t.text for t in got.tokens] == [t.text for t in ref.tokens]
    for a, b in zip(got.tokens, ref.tokens):
        assert [h.feature_id for h in a.hits] == [h.feature_id for h in b.hits]
        for ha, hb in zip(a.hits, b.hits):
            assert ha.activation == pytest.approx(hb.activation, abs=1e-4)
    assert got.completion == ref.completion


def test_micro_batches_grow_from_four_tokens_to_the_lag(guard, monkeypatch):
    """Decoded tokens are resolved in batches of 4, 4, 8, 16, 16, ... (lag 16): the first text comes early and
    long replies pay for few competition passes."""
    from safesail_guard.runtime.encoder import LayerEncoder

    sizes: list[int] = []
    orig = LayerEncoder.resolve

    def spy(self, x_c, pre):
        if self.layer == guard.layers[0]:
            sizes.append(int(x_c.shape[0]))
        return orig(self, x_c, pre)

    monkeypatch.setattr(LayerEncoder, "resolve", spy)
    n_prompt = len(guard.encode_prompt(PROMPT)[0])
    GuardedModel(guard).generate(PROMPT, max_new_tokens=50, ignore_eos=True, lag=16)
    # the prompt, then the 50 decoded tokens (each is fed back before it is shown); the last 2 at the end
    assert sizes == [n_prompt, 4, 4, 8, 16, 16, 2]


def test_micro_batched_block_stops_at_the_same_token(guard):
    pos, _, _, shown, final = _block_first_firing(GuardedModel(guard), lag=5)
    assert final.finish_reason == "content_filter" and final.blocked_at == pos
    assert all(p < pos for p in shown) and final.completion_tokens == pos - final.prompt_tokens
    assert max(t.position for t in final.tokens) == pos


def test_negative_lag_is_refused(guard):
    with pytest.raises(GuardError, match="lag"):
        GuardedModel(guard).generate(PROMPT, max_new_tokens=2, lag=-1)


def test_guard_time_is_measured_once_per_nested_call(guard):
    import time

    gm = GuardedModel(guard)
    t = time.perf_counter()
    unguarded = gm.generate(PROMPT, max_new_tokens=12, ignore_eos=True, hooks=False)
    gen = gm.generate(PROMPT, max_new_tokens=12, ignore_eos=True)
    wall = time.perf_counter() - t
    assert unguarded.guard_seconds == 0.0
    assert 0.0 < gen.guard_seconds < wall  # nested hooks (flush inside a layer hook) are not counted twice


def test_every_import_shown_in_a_runtime_docstring_works():
    """Example code in the runtime's docstrings (e.g. `runtime/guard.py`'s) imports names that exist."""
    import ast
    import importlib
    import pkgutil

    import safesail_guard.runtime as runtime

    shown = []
    for info in pkgutil.iter_modules(runtime.__path__, "safesail_guard.runtime."):
        module = importlib.import_module(info.name)
        docs = [ast.get_docstring(n) or "" for n in ast.walk(ast.parse(open(module.__file__).read()))
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))]
        for line in "\n".join(docs).splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "from" and words[2] == "import" and words[1].startswith("safesail"):
                shown.append(line.strip())
                names = [n.strip(" ,") for n in " ".join(words[3:]).split(",")]
                target = importlib.import_module(words[1])
                assert all(hasattr(target, n) for n in names), line.strip()
    assert "from safesail_guard.runtime.guard import Guard" in shown
