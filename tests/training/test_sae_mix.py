"""The SAE corpus mix: chat-formatted safety text interleaved into the general corpus, nothing dropped."""

from __future__ import annotations

from safesail_training.build_sae import BuildSAEConfig, corpus_records
from safesail_training.corpus.safety import load_safety_items, wrap_in_templates
from safesail_training.corpus.safety.sae_mix import MIX_SOURCE, PROMPT_SOURCES, RESPONSE_SOURCES, safety_mix_records


def test_mix_holds_prompts_wrapped_copies_and_replies_as_chats() -> None:
    mix = safety_mix_records(seed=0)
    prompts = load_safety_items("prompt", sources=PROMPT_SOURCES)
    responses = load_safety_items("response", sources=RESPONSE_SOURCES)
    assert not any("contrast" in r.source for r in mix)  # held out of SAE training
    assert len(mix) == len(prompts) + len(wrap_in_templates(prompts, n_per_item=1, seed=0)) + len(responses)
    assert all(r.kind == "chat" and r.source.startswith(MIX_SOURCE + ":") and r.messages for r in mix)
    replies = [r for r in mix if r.messages[-1]["role"] == "assistant"]
    assert len(replies) == len(responses)
    multi = [r for r in mix if len(r.messages) > 2 or (len(r.messages) == 2 and r.messages[-1]["role"] == "user")]
    assert multi, "multi-turn items keep their turns"


def test_interleave_places_one_mix_record_after_every_n_general_records() -> None:
    plain = corpus_records(BuildSAEConfig(safety_mix=0))
    mixed = corpus_records(BuildSAEConfig(safety_mix=3))
    n_mix = len(safety_mix_records(seed=0))
    assert len(mixed) == len(plain) + n_mix
    assert not any(r.source.startswith(MIX_SOURCE) for r in plain)
    head = mixed[:400]
    assert sum(r.source.startswith(MIX_SOURCE) for r in head) == 100  # every 4th record
    assert [r for r in mixed if not r.source.startswith(MIX_SOURCE)] == plain  # general order unchanged
