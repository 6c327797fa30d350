"""The detection head at run time: remainder terms from the guard's own TopK, per-token logits against the full
fp32 SAE, aggregation, explanations, fail-closed scoring, and the guard / verdict / generation wiring."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from safesail_guard.events import FeatureCatalog, FeatureHit, FeatureInfo, TokenActivations
from safesail_guard.hooks import capture, run_until_hooks
from safesail_guard.runtime.batch_score import result_record
from safesail_guard.runtime.detection_head import (
    DetectionHead,
    DetectionScore,
    MissingHeadTermsError,
    RiskAggregate,
    TokenParts,
    sigmoid,
)
from safesail_guard.runtime.encoder import Competition
from safesail_guard.runtime.generation import GuardedModel
from safesail_guard.runtime.guard import Guard, GuardError
from safesail_guard.runtime.monitor import ResponseMonitor
from safesail_guard.runtime.scoring import RiskHead
from safesail_guard.runtime.verdict import Verdict
from safesail_neuron_db import NeuronDB
from safesail_neuron_db.detection_head import DetectionHeadFile, HeadLayer, head_bytes
from safesail_neuron_db.publish import add_files
from tests.runtime import guard_factory

PROMPT = "Explain how vaccines work, and bake bread with flour and yeast."
RESPONSE = "Flour and water."
LAYERS = (0, 2)
WINDOW = 8
SPEC = {"bias": -0.2, "aggregation": {"kind": "rolling_max", "window": WINDOW}}


# ------------------------------------------------------------------------------------------- fixtures


def _biased_saes(d: int, layers: tuple[int, ...], **kw):
    """The factory's random SAEs with nonzero b_dec / b_enc, so centring mistakes cannot hide."""
    out = _ORIGINAL_TINY_SAES(d, layers, **kw)
    g = torch.Generator().manual_seed(5)
    for sae in out.values():
        with torch.no_grad():
            sae.b_dec.copy_(0.05 * torch.randn(sae.b_dec.shape, generator=g))
            sae.b_enc.copy_(0.02 * torch.randn(sae.b_enc.shape, generator=g))
    return out


_ORIGINAL_TINY_SAES = guard_factory.tiny_saes


def make_head_layers(path: Path, saes, *, per_layer: int = 4, seed: int = 1) -> dict[int, HeadLayer]:
    """Random head weights over ``per_layer`` database features of each layer, ``v = W_dec w_e`` exactly."""
    with NeuronDB.open(path) as db:
        ids = db.feature_ids()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for L, sae in saes.items():
        w_e = torch.randn(sae.d_in, generator=g)
        lat = torch.tensor(sorted(int(f.split("_")[1]) for f in ids if f.startswith(f"{L}_"))[:per_layer])
        out[L] = HeadLayer(L, w_e, sae.W_dec.detach() @ w_e, 0.3 + 0.1 * L, lat,
                           torch.randn(len(lat), generator=g), 0.1 * torch.rand(len(lat), generator=g))
    return out


def build_db(directory: Path, loaded, *, competition: bool = True, head: bool = True):
    """A guard database (random SAEs with biases) for ``loaded``, with a detection head when asked."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard_factory, "tiny_saes", _biased_saes)
        path, saes = guard_factory.make_guard_db(directory, loaded, layers=LAYERS, competition=competition)
    layers = make_head_layers(path, saes)
    if head:
        add_files(path, {"detection_head.safetensors": head_bytes(layers, SPEC, loaded.identity.fingerprint)})
    return path, saes, layers


@pytest.fixture(scope="module")
def head_db(tiny_llama, tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("dhead") / "db", tiny_llama)


@pytest.fixture(scope="module")
def guard(tiny_llama, head_db):
    return Guard.from_db(head_db[0], tiny_llama)


@pytest.fixture(scope="module")
def exact_guard(tiny_llama, head_db):
    """The same database with an fp32 competition (the full SAE's own encoder rows)."""
    path, saes, _ = head_db
    comp = {L: Competition(s.W_enc.detach(), s.b_enc.detach(), s.k) for L, s in saes.items()}
    return Guard(tiny_llama.model, tiny_llama.tokenizer, NeuronDB.open(path),
                 model_fingerprint=tiny_llama.identity.fingerprint, competition=comp)


def hook_acts(loaded, ids: list[int]) -> dict[int, torch.Tensor]:
    """mlp_out activations ``[T, d]`` of one sequence at the guarded layers."""
    with capture(loaded.model, [f"layers.{L}.mlp_out" for L in LAYERS]) as store, torch.no_grad():
        run_until_hooks(loaded.model, input_ids=torch.tensor([ids]))
    return {p.layer: acts[0][0].float() for p, acts in store.items()}


def reference_logits(x: dict[int, torch.Tensor], saes, layers: dict[int, HeadLayer], bias: float) -> torch.Tensor:
    """``s_t`` straight from the full fp32 SAE: ``z = sae.encode(x)``, ``e = x - sae.decode(z)``, and
    ``s_t = bias + sum_L [ w_z . (z_head - mu) + w_e . e + w_e . b_dec - c ]`` (the file's remainder,
    ``w_e . x - v . z - c``, written with the error)."""
    out = None
    for L, hl in layers.items():
        sae = saes[L]
        with torch.no_grad():
            code = sae.encode(x[L])
            z = sae.dense(code)
            e = x[L] - sae.decode(code)
        s = (z[:, hl.latents] - hl.mu_z) @ hl.w_z + e @ hl.w_e + float(hl.w_e @ sae.b_dec.detach()) - hl.c
        out = s.double() if out is None else out + s.double()
    return out + bias


# ------------------------------------------------------------------------------------------- per token


def test_remainder_function_equals_the_sae_error_term(head_db, tiny_llama, guard):
    path, saes, layers = head_db
    enc, _ = guard.encode_prompt(PROMPT)
    x = hook_acts(tiny_llama, enc.input_ids)
    for L in LAYERS:
        sae, hl = saes[L], layers[L]
        terms = guard.detection_head.layer_terms(L, sae.b_dec.detach())
        with torch.no_grad():
            code = sae.encode(x[L])
            e = x[L] - sae.decode(code)
            got = terms.remainder(x[L], sae.pre_acts(x[L]), sae.k)
        want = e @ hl.w_e + float(hl.w_e @ sae.b_dec.detach()) - hl.c
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_token_logit_matches_the_full_fp32_sae_exactly_with_an_fp32_competition(exact_guard, head_db, tiny_llama):
    _, saes, layers = head_db
    res = exact_guard.scan(PROMPT, response=RESPONSE, normalize=False)
    enc, _ = exact_guard.encode_prompt(PROMPT, RESPONSE)
    ref = reference_logits(hook_acts(tiny_llama, enc.input_ids), saes, layers, SPEC["bias"])
    got = torch.tensor([exact_guard.detection_head.token_logit(t) for t in res.tokens], dtype=torch.float64)
    assert len(got) == len(ref) and ref.std() > 0.05
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


def test_token_logit_with_the_shipped_competition_is_exact_where_topk_agrees(guard, head_db, tiny_llama):
    """The shipped competition is 12-bit rows restored to fp16: where its TopK set equals the fp32 one the
    logit matches to the fp16 rounding of the values; a swap at the k-th place moves it by ~ v_i * z_k."""
    _, saes, layers = head_db
    res = guard.scan(PROMPT, response=RESPONSE, normalize=False)
    enc, _ = guard.encode_prompt(PROMPT, RESPONSE)
    x = hook_acts(tiny_llama, enc.input_ids)
    ref = reference_logits(x, saes, layers, SPEC["bias"])
    got = torch.tensor([guard.detection_head.token_logit(t) for t in res.tokens], dtype=torch.float64)
    same = torch.ones(len(ref), dtype=torch.bool)
    for L in LAYERS:
        sae, comp = saes[L], guard.competition[L]
        x_c = x[L] - sae.b_dec.detach()
        fp32 = sae.pre_acts(x[L]).detach().topk(sae.k).indices.sort().values
        fp16 = comp.pre_all(x_c).topk(sae.k).indices.sort().values
        same &= (fp32 == fp16).all(-1)
    assert same.float().mean() >= 0.8
    err = (got - ref).abs()
    assert float(err[same].max()) < 2e-3, err[same].max()


def test_named_plus_remainder_plus_bias_is_the_logit(guard):
    res = guard.scan(PROMPT, response=RESPONSE, normalize=False)
    risk = res.risk
    assert isinstance(risk, DetectionScore)
    assert risk.bias + risk.named + risk.remainder == pytest.approx(risk.logit, abs=1e-9)
    assert risk.score == pytest.approx(sigmoid(risk.logit), abs=1e-6)
    head = guard.detection_head
    agg = head.aggregate()
    for t in res.tokens:
        if t.content and t.scope == "prompt":
            agg.push(head.token_parts(t))
    named, rem = head.contributions(agg.winner())
    assert set(named) == set(head.feature_ids)
    assert head.bias + math.fsum(named.values()) + rem == pytest.approx(risk.logit, abs=1e-9)
    total = math.fsum(abs(c) for c in named.values()) + abs(rem)
    assert risk.named_share + risk.remainder_share == pytest.approx(1.0)
    assert risk.remainder_share == pytest.approx(abs(rem) / total, abs=1e-9)
    contribs = [abs(f["contribution"]) for f in risk.top_features]
    assert contribs == sorted(contribs, reverse=True)
    for f in risk.top_features:
        assert f["share"] == pytest.approx(abs(named[f["id"]]) / total, abs=1e-6)
        assert f["layer"] == guard.catalog[f["id"]].layer and f["latent"] == guard.catalog[f["id"]].latent
        assert f["domains"] == list(guard.catalog[f["id"]].domains)
    # the winning window is WINDOW content tokens of the prompt
    n_prompt = sum(t.content and t.scope == "prompt" for t in res.tokens)
    assert risk.tokens == min(WINDOW, n_prompt) and risk.scope_tokens == n_prompt


def test_domain_scores_are_the_positive_named_share_times_the_risk(guard):
    risk = guard.scan(PROMPT, normalize=False).risk
    head = guard.detection_head
    agg = head.aggregate()
    for t in guard.scan(PROMPT, normalize=False).tokens:
        if t.content and t.scope == "prompt":
            agg.push(head.token_parts(t))
    named, _ = head.contributions(agg.winner())
    positive = {f: c for f, c in named.items() if c > 0}
    assert positive, "pick head weights with some positive contribution"
    for d in guard.catalog.domains:
        part = sum(c for f, c in positive.items() if d in guard.catalog[f].domains) / sum(positive.values())
        assert risk.concepts[d] == pytest.approx(part * risk.score, abs=1e-5)
        assert head.domain_risk(agg, d) == pytest.approx(part * risk.score, abs=1e-5)


# ------------------------------------------------------------------------------------------- aggregation


def _tiny_head(kind: str, window: int = 3, bias: float = 0.0) -> DetectionHead:
    """A one-layer head over two catalog features (w = 1, 2; mu = 0), for hand-built tokens."""
    cat = FeatureCatalog([FeatureInfo("3_1", 3, 1, ("weapons",), ("weapons/a",), "guns", 1.0),
                          FeatureInfo("3_2", 3, 2, ("drugs",), ("drugs/b",), "pills", 1.0)])
    layer = HeadLayer(3, torch.zeros(4), torch.zeros(8), 0.0, torch.tensor([1, 2]), torch.tensor([1.0, 2.0]),
                      torch.zeros(2))
    return DetectionHead(DetectionHeadFile({3: layer}, {"bias": bias, "aggregation": {"kind": kind, "window": window}}),
                         cat)


def _tok(pos: int, remainder: float, hits: dict[str, float] | None = None, *, scope: str = "prompt",
         terms: bool = True) -> TokenActivations:
    return TokenActivations(pos, pos, f"t{pos}", scope, True,  # type: ignore[arg-type]
                            [FeatureHit(f, a, a) for f, a in (hits or {}).items()], "user",
                            {3: remainder} if terms else None)


def _naive(s: list[float], kind: str, window: int) -> float:
    if kind == "mean" or len(s) <= window:
        return sum(s) / len(s)
    return max(sum(s[i:i + window]) / window for i in range(len(s) - window + 1))


def test_mean_and_rolling_max_on_a_hand_sequence():
    logits = [0, 0, 0, 0, 5, 5, 0, 0]
    toks = [_tok(i, v) for i, v in enumerate(logits)]
    assert _tiny_head("mean").score(toks).logit == pytest.approx(1.25)
    roll = _tiny_head("rolling_max", window=2).score(toks)
    assert roll.logit == pytest.approx(5.0) and roll.span == (4, 5) and roll.tokens == 2
    assert _tiny_head("rolling_max", window=3).score(toks).logit == pytest.approx(10 / 3)
    # fewer tokens than the window: the plain mean
    assert _tiny_head("rolling_max", window=20).score(toks).logit == pytest.approx(1.25)
    # named part: a hit of 3_2 at 0.5 adds w * a = 1.0 at that token
    one = _tiny_head("mean").score([_tok(0, 0.0, {"3_2": 0.5})])
    assert one.logit == pytest.approx(1.0) and one.top_features[0]["id"] == "3_2"
    assert one.concepts == {"drugs": pytest.approx(sigmoid(1.0), abs=1e-6), "weapons": 0.0}


@pytest.mark.parametrize("kind", ["mean", "rolling_max"])
def test_streaming_aggregate_equals_the_naive_reference(kind):
    rng = random.Random(3)
    for trial in range(30):
        window = rng.randint(1, 9)
        s = [rng.gauss(0, 2) for _ in range(rng.randint(1, 60))]
        agg = RiskAggregate(kind, window)
        for i, v in enumerate(s):
            agg.push(TokenParts(i, v, v, ()))
            assert agg.value == pytest.approx(_naive(s[:i + 1], kind, window), abs=1e-9)
        win = agg.winner()
        assert win.logit_sum / win.n == pytest.approx(agg.value, abs=1e-9)


def test_empty_scope_scores_the_bias():
    score = _tiny_head("rolling_max", bias=-1.5).score([_tok(0, 3.0, scope="response")], scopes=("prompt",))
    assert score.logit == -1.5 and score.tokens == 0 and score.top_features == [] and score.named_share == 0


def test_long_benign_text_does_not_drift_up(guard):
    """20,000 characters of repeated text: the score over the whole text equals the score over its first
    4,000 characters (a length-growing aggregate would keep rising), and never follows one token."""
    text = ("The weather today is sunny with a light breeze from the west. " * 400)[:20_000]
    full = guard.scan(text, normalize=False)
    assert full.truncation.strategy == "chunked"
    head = guard.detection_head
    prefix = guard.scan(text[:4_000], normalize=False)
    mean_head = DetectionHead(replace(head.file, spec={"bias": SPEC["bias"], "aggregation": {"kind": "mean"}}),
                              guard.catalog)
    logits = [head.token_logit(t) for t in full.tokens if t.content]
    spread = max(logits) - min(logits)
    assert len(logits) > 4 * sum(t.content for t in prefix.tokens) and spread > 0.1
    first = head.score([t for t in full.tokens if t.content][:WINDOW])
    for h in (head, mean_head):
        assert h.score(full.tokens).logit - h.score(prefix.tokens).logit < 0.05 * spread
    assert full.risk.logit - first.logit < 0.25 * spread  # no upward drift against the first window
    assert full.risk.logit < max(logits) - 0.25 * spread  # and not the largest single token


# ------------------------------------------------------------------------------------------- fail closed


def test_a_token_without_terms_makes_scoring_raise(guard):
    res = guard.scan(PROMPT, normalize=False)
    head = guard.detection_head
    i = next(i for i, t in enumerate(res.tokens) if t.content and i > 3)
    stripped = [replace(t, head_terms=None) if j == i else t for j, t in enumerate(res.tokens)]
    with pytest.raises(MissingHeadTermsError, match="no detection-head terms"):
        head.score(stripped)
    partial = [replace(t, head_terms={0: 0.1}) for t in res.tokens]
    with pytest.raises(MissingHeadTermsError, match="layer 2"):
        head.score(partial)
    with pytest.raises(MissingHeadTermsError):
        Verdict.of("prompt", None, stripped, risk_head=head, text=PROMPT)
    with pytest.raises(MissingHeadTermsError):
        _tiny_head("mean").score([_tok(0, 0.0, terms=False)])


def test_guard_with_a_head_but_no_competition_refuses_to_start(tiny_llama, tmp_path):
    path, _, _ = build_db(tmp_path / "db", tiny_llama, competition=False)
    with pytest.raises(GuardError, match="detection head.*competition"):
        Guard.from_db(path, tiny_llama)
    assert Guard.from_db(path, tiny_llama, risk_head=False).detection_head is None


def test_guard_with_a_head_refuses_threshold_firing(tiny_llama, head_db):
    with pytest.raises(GuardError, match="firing='threshold'"):
        Guard.from_db(head_db[0], tiny_llama, firing="threshold")


# ------------------------------------------------------------------------------------------- wiring


def test_guard_loads_the_head_and_every_path_carries_terms(guard):
    assert guard.detection_head is guard.risk_head and isinstance(guard.risk_head, DetectionHead)
    assert all(guard.encoders[L].head is not None for L in LAYERS)
    scan = guard.scan(PROMPT, normalize=False)
    assert all(set(t.head_terms) == set(LAYERS) for t in scan.tokens)
    assert scan.tokens[0].to_dict()["head_terms"].keys() == {"0", "2"}
    batch = guard.scan_batch([PROMPT, "The quick brown fox."], pivot=False)
    assert [round(t.head_terms[2], 4) for t in batch[0].tokens] == [round(t.head_terms[2], 4) for t in scan.tokens]
    assert batch[0].risk.score == pytest.approx(scan.risk.score, abs=1e-4)
    rec = result_record("a", batch[0])
    assert rec["head"] == "detection" and 0 <= rec["named_share"] <= 1 and "share" in rec["top_features"][0]
    d = scan.risk.to_dict()
    assert {"score", "concepts", "top_features"} <= set(d) and d["head"] == "detection"
    assert {"named_share", "remainder_share"} <= set(d)


@pytest.mark.parametrize("lag", [0, 4])
def test_generation_events_carry_terms_in_the_batched_and_unbatched_paths(guard, lag):
    out = GuardedModel(guard).generate(PROMPT, max_new_tokens=6, lag=lag)
    assert out.completion_tokens >= 1
    assert all(t.head_terms is not None and set(t.head_terms) == set(LAYERS) for t in out.tokens)
    scan = guard.scan(PROMPT, normalize=False)
    for a, b in zip(scan.tokens, out.tokens):
        assert a.head_terms[0] == pytest.approx(b.head_terms[0], abs=1e-4)


def test_final_verdict_risk_reads_response_tokens_only(guard):
    res = guard.scan(PROMPT, response=RESPONSE, normalize=False)
    # make the prompt look very risky: if the final stage read it, its risk would be ~1
    loud = [replace(t, head_terms={L: 25.0 for L in LAYERS}) if t.scope == "prompt" else t for t in res.tokens]
    final = Verdict.of("final", None, loud, risk_head=guard.risk_head, text=RESPONSE)
    response_only = guard.detection_head.score([t for t in loud if t.scope == "response"], scopes=("response",))
    assert final.risk.score == pytest.approx(response_only.score) and final.risk.score < 0.9
    assert Verdict.of("prompt", None, loud, risk_head=guard.risk_head, text=PROMPT).risk.score > 0.99
    assert final.risk.span[0] >= sum(t.scope == "prompt" for t in loud)


BLOCK_PROMPT = """version: 1
name: t
rules:
  - name: risky_prompt
    kind: risk
    action: block
    message: no.
    min_score: 0.000001
"""


def test_prompt_rule_blocks_before_anything_is_generated(guard):
    events = list(GuardedModel(guard).stream(PROMPT, policy=BLOCK_PROMPT, max_new_tokens=5))
    assert [e.kind for e in events] == ["done"]
    gen = events[-1].generation
    assert gen.finish_reason == "content_filter" and gen.completion_tokens == 0 and gen.text == "no."
    n_prompt = len(guard.encode_prompt(PROMPT)[0])
    assert gen.decision.matches[0].span[1] == n_prompt - 1 and len(gen.tokens) == n_prompt


def test_response_rule_blocks_while_streaming(guard):
    policy = BLOCK_PROMPT.replace("min_score: 0.000001", "min_score: 0.000001\n    scope: response")
    gen = GuardedModel(guard).generate(PROMPT, policy=policy, max_new_tokens=5)
    n_prompt = len(guard.encode_prompt(PROMPT)[0])
    assert gen.finish_reason == "content_filter" and gen.blocked_at == n_prompt and gen.completion_tokens == 0
    m = gen.decision.matches[0]
    assert m.scope == "response" and m.span == (n_prompt, n_prompt) and "detection head" in m.reason


def test_monitor_decides_the_prompt_rule_after_the_prompt(guard):
    with ResponseMonitor(guard, PROMPT, policy=BLOCK_PROMPT) as mon:
        assert mon.session.run.blocked is not None
        step = mon.feed("Flour and water. ")
        assert step.blocked and step.text == ""


def test_old_database_keeps_the_sparse_risk_head(llama_guard):
    assert llama_guard.detection_head is None and isinstance(llama_guard.risk_head, RiskHead)
    assert all(e.head is None for e in llama_guard.encoders.values())
    res = llama_guard.scan(PROMPT, normalize=False)
    assert all(t.head_terms is None and "head_terms" not in t.to_dict() for t in res.tokens)
    assert set(res.risk.to_dict()) == {"score", "concepts", "top_features"}
    assert "head" not in result_record("a", res)
