"""Red team: scans that share one model must never see each other's tokens.

Upstream mode keeps one `ResponseMonitor` per streaming request, and with ``--max-concurrent`` above 1 the model
thread runs the forward calls of several requests in between each other's: request A's reply pieces, request B's
prompt scan, B's reply pieces, ... If A's hooks stayed on the shared model between its own calls, every call of
B would also run through A's tracker: B's prompt is taken for A's positions, A's own reply tokens then look
already seen and are dropped, and A's verdict is decided on B's tokens instead of its own (a reply that must be
blocked is released whole); A's hooks even stop B's prompt scan before B's own tracker finishes.

These tests run those interleavings on one thread (as the server's model thread does) and require every scan's
events and verdict to equal the same scan run alone; a second scan hooking a model that already carries one is
an `OverlappingScanError`.
"""

from __future__ import annotations

import pytest
import torch

from safesail_guard.hooks import OverlappingScanError
from safesail_guard.runtime.generation import GuardedModel
from safesail_guard.runtime.monitor import ResponseMonitor

PROMPT_A = "Hi there."
REPLY_A = "Mix flour, water, salt and yeast, then bake the bread until golden."
PROMPT_B = ("Explain how vaccines work in simple terms for a child. Write a short poem about the sea and the wind "
            "at night. What is the capital of Italy? Rome is the capital city. The quick brown fox jumps over "
            "the lazy dog.")
REPLY_B = "The weather today is sunny with a light breeze from the west."


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def _block_on(feature_id: str) -> str:
    return f"""
version: 1
name: redteam
defaults: {{refusal_message: "Refused."}}
rules:
  - name: stop_it
    action: block
    when:
      select: {{features: ["{feature_id}"]}}
      scope: response
      min_activation: 0.000001
"""


def _alone(guard, prompt: str, reply: str, policy: str | None = None) -> ResponseMonitor:
    mon = ResponseMonitor(guard, prompt, policy=policy)
    for piece in _pieces(reply):
        mon.feed(piece)
    mon.finish()
    mon.close()
    return mon


def _events(mon: ResponseMonitor) -> list[tuple[int, int, list[tuple[str, float]]]]:
    return [(t.position, t.token_id, [(h.feature_id, round(h.activation, 4)) for h in t.hits])
            for t in mon.session.tokens]


QUIET_B = "la " * 40
"""Another request's prompt, longer than A's prompt and reply together, on which the blocking feature is quiet."""


@pytest.fixture(scope="module")
def reply_feature(llama_guard) -> str:
    """A feature that fires on REPLY_A when A is monitored alone, within the positions QUIET_B's prompt covers,
    and never on QUIET_B."""
    mon = _alone(llama_guard, PROMPT_A, REPLY_A)
    quiet = llama_guard.scan(QUIET_B).tokens
    on_b = {h.feature_id for t in quiet for h in t.hits}
    firing = [h.feature_id for t in mon.session.tokens if t.scope == "response" and t.position < len(quiet)
              for h in t.hits if h.feature_id not in on_b]
    assert firing, "some feature should fire on the reply and not on QUIET_B"
    return firing[0]


def test_another_requests_prompt_does_not_wave_a_blocked_reply_through(llama_guard, reply_feature):
    """B's stream starts (its prompt is read) while A's reply streams in: A must still block where it blocks
    alone and release nothing from the blocking token on."""
    policy = _block_on(reply_feature)
    ref = ResponseMonitor(llama_guard, PROMPT_A, policy=policy)
    ref_text = "".join(ref.feed(p).text for p in _pieces(REPLY_A)) + ref.finish().text
    ref.close()
    assert ref.decision().action == "block" and len(ref_text) < len(REPLY_A)

    a = ResponseMonitor(llama_guard, PROMPT_A, policy=policy)
    b = ResponseMonitor(llama_guard, QUIET_B, policy=policy)  # B's upstream has not answered yet
    text = "".join(a.feed(p).text for p in _pieces(REPLY_A)) + a.finish().text
    b.finish()
    a.close()
    b.close()
    assert a.decision().action == "block"
    assert text == ref_text
    assert _events(a) == _events(ref)
    assert [t.token_id for t in b.session.tokens] == llama_guard.encode_prompt(QUIET_B)[0].input_ids


def test_interleaved_monitors_each_see_only_their_own_tokens(llama_guard, reply_feature):
    """Two upstream streams interleaved on the model thread: each verdict equals the one it gets alone."""
    policy = _block_on(reply_feature)
    ref_a = _alone(llama_guard, PROMPT_A, REPLY_A, policy)
    ref_b = _alone(llama_guard, PROMPT_B, REPLY_B, policy)
    assert ref_a.decision().action == "block"

    a = ResponseMonitor(llama_guard, PROMPT_A, policy=policy)
    b = ResponseMonitor(llama_guard, PROMPT_B, policy=policy)
    pa, pb = _pieces(REPLY_A), _pieces(REPLY_B)
    for i in range(max(len(pa), len(pb))):
        if i < len(pa):
            a.feed(pa[i])
        if i < len(pb):
            b.feed(pb[i])
    a.finish()
    b.finish()
    a.close()
    b.close()

    assert sum(t.scope == "response" for t in a.session.tokens) == a.response_tokens == ref_a.response_tokens
    assert _events(a) == _events(ref_a)
    assert _events(b) == _events(ref_b)
    assert a.decision().action == ref_a.decision().action == "block"
    assert b.decision().action == ref_b.decision().action


def test_a_prompt_scan_between_a_monitors_calls_is_not_seen_by_it(llama_guard, reply_feature):
    """Request B's prompt scan runs on the model thread while request A's reply streams in."""
    policy = _block_on(reply_feature)
    ref_a = _alone(llama_guard, PROMPT_A, REPLY_A, policy)
    ref_scan = llama_guard.scan(PROMPT_B)

    a = ResponseMonitor(llama_guard, PROMPT_A, policy=policy)
    scans = []
    for piece in _pieces(REPLY_A):
        scans.append(llama_guard.scan(PROMPT_B))
        a.feed(piece)
    a.finish()
    a.close()

    assert _events(a) == _events(ref_a) and a.decision().action == "block"
    for got in scans:
        assert [(t.position, t.token_id, [h.feature_id for h in t.hits]) for t in got.tokens] == \
            [(t.position, t.token_id, [h.feature_id for h in t.hits]) for t in ref_scan.tokens]


def test_a_second_tracker_on_a_hooked_model_is_an_error(llama_guard):
    model = llama_guard.model
    first = llama_guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    second = llama_guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    with first.attached(model):
        with pytest.raises(OverlappingScanError, match="overlapping scan on a shared model"):
            with second.attached(model):
                pass  # pragma: no cover
        with pytest.raises(OverlappingScanError):
            with first.attached(model):  # the same tracker twice would double-count every position
                pass  # pragma: no cover
    with second.attached(model), torch.no_grad():  # released on exit: the next scan may attach
        model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=False)
    assert len(second.tokens) == 3


def test_scans_during_a_watch_are_refused_not_shared(llama_guard):
    """`Guard.watch` holds the model for its block: a scan or batch score inside it fails instead of mixing
    its tokens into the watched sequence."""
    with llama_guard.watch() as session:
        with pytest.raises(OverlappingScanError):
            llama_guard.scan(PROMPT_B)
        with pytest.raises(OverlappingScanError):
            llama_guard.scan_batch([PROMPT_B, PROMPT_A])
        with pytest.raises(OverlappingScanError):
            ResponseMonitor(llama_guard, PROMPT_A)
    assert session.tokens == []
    assert len(llama_guard.scan(PROMPT_A).tokens) > 0  # and the model is free again afterwards


def test_interleaved_local_streams_refuse_the_second(llama_guard):
    """Two `GuardedModel.stream` generators interleaved on one model: the second fails to start, the first
    finishes exactly as it would alone."""
    gm = GuardedModel(llama_guard)
    ref = gm.generate(PROMPT_A, max_new_tokens=6, ignore_eos=True)
    first = gm.stream(PROMPT_A, max_new_tokens=6, ignore_eos=True)
    assert next(first).kind == "prompt"
    second = gm.stream(PROMPT_B, max_new_tokens=6, ignore_eos=True)
    with pytest.raises(OverlappingScanError):
        next(second)
    done = [ev for ev in first if ev.kind == "done"][0].generation
    assert [t.token_id for t in done.tokens] == [t.token_id for t in ref.tokens]
    assert done.completion == ref.completion


def test_a_failed_call_poisons_the_monitor(llama_guard):
    """A monitor whose forward call failed must not release the text whose tokens it never scored."""
    mon = ResponseMonitor(llama_guard, PROMPT_A)
    other = llama_guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    with other.attached(llama_guard.model):
        with pytest.raises(OverlappingScanError):
            mon.feed("Mix flour and water ")
    with pytest.raises(RuntimeError, match="failed earlier"):
        mon.feed("more ")
    with pytest.raises(RuntimeError, match="failed earlier"):
        mon.finish()
