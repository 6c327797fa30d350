"""Every forward call is placed in its sequence by evidence, whatever the keyword; what cannot be placed fails.

transformers 5.x passes the KV cache as ``cache=`` (no ``cache_position``), 4.56+ as ``past_key_values=`` with
``cache_position``; callers may also pass the cache positionally, or only ``position_ids``, or re-run the
whole sequence uncached. Each convention must score every position exactly once; a call the tracker cannot
place (no evidence where it matters, evidence that disagrees, a gap, a rewritten prefix, an unknown cache
object) is a `PlacementError`, never a silent drop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from transformers import DynamicCache

from safesail_guard.hooks import HookError
from safesail_guard.runtime.guard import Guard
from safesail_guard.runtime.tracker import PlacementError, SequenceTracker, cache_kwargs, place_call
from tests.runtime.guard_factory import make_guard_db

PROMPT = "Explain how vaccines work, and bake bread with flour and yeast."
N_DECODE = 6


@pytest.fixture(scope="module")
def guard(tiny_loaded, tmp_path_factory) -> Guard:
    path, _ = make_guard_db(tmp_path_factory.mktemp("placement") / "db", tiny_loaded)
    return Guard.from_db(path, tiny_loaded)


@pytest.fixture(scope="module")
def sequence(guard) -> torch.Tensor:
    """Prompt ids followed by N_DECODE greedy tokens: ``[1, T]``."""
    ids = torch.tensor([guard.encode_prompt(PROMPT)[0].input_ids])
    with torch.no_grad():
        return guard.model.generate(ids, max_new_tokens=N_DECODE, min_new_tokens=N_DECODE, do_sample=False)


def _tracker(guard: Guard) -> SequenceTracker:
    return guard.tracker(lambda pos, tid: (str(tid), "prompt", True, "user"))


def _reference(guard: Guard, seq: torch.Tensor) -> SequenceTracker:
    """One uncached pass over the whole sequence."""
    t = _tracker(guard)
    with t.attached(guard.model), torch.no_grad():
        guard.model(input_ids=seq, use_cache=False)
    return t


def _assert_every_position_once(t: SequenceTracker, seq: torch.Tensor, ref: SequenceTracker | None = None) -> None:
    assert [e.position for e in t.tokens] == list(range(seq.shape[1]))
    assert [e.token_id for e in t.tokens] == seq[0].tolist()
    for layer in t.encoders:
        assert t.stats.encoded_positions[layer] == seq.shape[1]
    if ref is not None:
        for a, b in zip(t.tokens, ref.tokens):
            assert [h.feature_id for h in a.hits] == [h.feature_id for h in b.hits]
            for ha, hb in zip(a.hits, b.hits):
                assert ha.activation == pytest.approx(hb.activation, abs=1e-4)


@contextmanager
def _native(model: torch.nn.Module, hidden_cache: object = None) -> Iterator[None]:
    """Simulate a convention whatever transformers is installed: a pre-hook registered after the tracker's (so
    the tracker sees the call as the test wrote it) hands the model the cache under its own keyword, and
    ``hidden_cache`` when given (a cache the tracker must not see)."""
    native = next(iter(cache_kwargs(model, None)))

    def hook(_mod: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        for name in ("cache", "past_key_values"):
            if name != native and name in kwargs:
                kwargs[native] = kwargs.pop(name)
        if hidden_cache is not None:
            kwargs[native] = hidden_cache
        return args, kwargs

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _decode(guard: Guard, seq: torch.Tensor, n_prompt: int, step_kwargs) -> SequenceTracker:
    """Prefill ``seq[:, :n_prompt]`` then feed one token per call with ``step_kwargs(cache, start, end)``."""
    t = _tracker(guard)
    cache = DynamicCache()
    with t.attached(guard.model), _native(guard.model), torch.no_grad():
        for start, end in [(0, n_prompt), *((p, p + 1) for p in range(n_prompt, seq.shape[1]))]:
            args, kwargs = step_kwargs(cache, start, end)
            if not args:
                kwargs = {"input_ids": seq[:, start:end], **kwargs}
            guard.model(*args, use_cache=True, **kwargs)
    return t


@pytest.mark.parametrize("convention", ["past_key_values", "cache", "positional", "v4_full"])
def test_cached_decoding_is_placed_by_the_cache_whatever_its_keyword(guard, sequence, convention):
    """``cache=`` (transformers 5.x generate) dropped every decoded token before the fix."""
    n_prompt = sequence.shape[1] - N_DECODE

    def step(cache, start, end):
        if convention == "positional":  # forward(input_ids, attention_mask, position_ids, cache/past_key_values)
            return (sequence[:, start:end], None, torch.arange(start, end)[None], cache), {}
        if convention == "v4_full":  # what 4.56+ generate passes: the cache, cache_position and position_ids
            pos = torch.arange(start, end)
            return (), {**cache_kwargs(guard.model, cache), "cache_position": pos, "position_ids": pos[None]}
        return (), {convention: cache}

    t = _decode(guard, sequence, n_prompt, step)
    _assert_every_position_once(t, sequence, _reference(guard, sequence))
    assert t.stats.forward_calls == 1 + N_DECODE


@pytest.mark.parametrize("key", ["cache_position", "position_ids"])
def test_a_call_is_placed_by_positions_alone(guard, sequence, key):
    """The tracker sees no cache object, only positions (the model gets its cache behind the tracker's back)."""
    t = _tracker(guard)
    n_prompt = sequence.shape[1] - N_DECODE
    with t.attached(guard.model), _native(guard.model, hidden_cache=DynamicCache()), torch.no_grad():
        for start, end in [(0, n_prompt), *((p, p + 1) for p in range(n_prompt, sequence.shape[1]))]:
            pos = torch.arange(start, end)
            guard.model(input_ids=sequence[:, start:end], use_cache=True,
                        **{key: pos if key == "cache_position" else pos[None]})
    _assert_every_position_once(t, sequence, _reference(guard, sequence))


def test_hf_generate_is_placed_with_and_without_cache(guard, sequence):
    """Whatever this transformers version's generate passes, every fed position is scored once."""
    n_prompt = sequence.shape[1] - N_DECODE
    for use_cache in (True, False):
        t = _tracker(guard)
        with t.attached(guard.model), torch.no_grad():
            out = guard.model.generate(sequence[:, :n_prompt], max_new_tokens=N_DECODE, min_new_tokens=N_DECODE,
                                       do_sample=False, use_cache=use_cache)
        assert out[0].tolist() == sequence[0].tolist()
        _assert_every_position_once(t, sequence[:, :-1])  # generate never feeds its last token back


def test_uncached_reruns_score_only_new_positions(guard, sequence):
    t = _tracker(guard)
    n_prompt = sequence.shape[1] - N_DECODE
    with t.attached(guard.model), torch.no_grad():
        for end in range(n_prompt, sequence.shape[1] + 1):
            guard.model(input_ids=sequence[:, :end], use_cache=False)
    _assert_every_position_once(t, sequence, _reference(guard, sequence))


def test_a_call_with_no_evidence_after_a_prefill_cannot_be_placed(guard, sequence):
    """One token, no cache, no positions, after a prefill: a new sequence or a cached step under an unknown
    convention. Before the fix it was taken as position 0 (already seen) and dropped."""
    t = _tracker(guard)
    n_prompt = sequence.shape[1] - N_DECODE
    with t.attached(guard.model), torch.no_grad():
        guard.model(input_ids=sequence[:, :n_prompt], use_cache=False)
        with pytest.raises(PlacementError, match="cannot place a call over 1 token"):
            guard.model(input_ids=sequence[:, n_prompt:n_prompt + 1], use_cache=False)
    assert len(t.tokens) == n_prompt


def test_disagreeing_evidence_is_an_error(guard, sequence):
    t = _tracker(guard)
    cache = DynamicCache()
    with t.attached(guard.model), torch.no_grad():
        guard.model(input_ids=sequence[:, :4], use_cache=True, **cache_kwargs(guard.model, cache))
        with pytest.raises(PlacementError, match="disagrees"):
            guard.model(input_ids=sequence[:, 4:5], use_cache=True, position_ids=torch.tensor([[7]]),
                        **cache_kwargs(guard.model, cache))
    assert len(t.tokens) == 4


def test_a_cache_filled_before_attaching_is_a_gap(guard, sequence):
    """Positions the guard never saw (a prefilled cache) are not skipped silently."""
    cache = DynamicCache()
    with torch.no_grad():
        guard.model(input_ids=sequence[:, :5], use_cache=True, **cache_kwargs(guard.model, cache))
    t = _tracker(guard)
    with t.attached(guard.model), torch.no_grad(), pytest.raises(PlacementError, match="never scored"):
        guard.model(input_ids=sequence[:, 5:6], use_cache=True, **cache_kwargs(guard.model, cache))
    assert t.tokens == []


def test_rewriting_scored_positions_is_an_error(guard, sequence):
    """A re-run whose prefix differs from what was scored (another sequence, a rewound cache) fails."""
    t = _tracker(guard)
    other = sequence.clone()
    other[0, 2] = (int(other[0, 2]) + 1) % 300
    with t.attached(guard.model), torch.no_grad():
        guard.model(input_ids=sequence[:, :6], use_cache=False)
        with pytest.raises(PlacementError, match="other than the ones already scored"):
            guard.model(input_ids=other[:, :8], use_cache=False)
    assert len(t.tokens) == 6


def test_unknown_cache_objects_are_refused(guard, sequence):
    legacy = ((torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16)),)  # a pre-Cache tuple: no get_seq_length
    t = _tracker(guard)
    with t.attached(guard.model), torch.no_grad(), pytest.raises(PlacementError, match="unknown cache convention"):
        guard.model(input_ids=sequence[:, :2], past_key_values=legacy)
    assert issubclass(PlacementError, HookError)


def test_place_call_reads_evidence_by_value_not_name():
    class Fake:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_seq_length(self) -> int:
            return self.n

    class Model(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, position_ids=None, kv=None):  # noqa: D102
            return input_ids

    assert place_call(Model, (), {"kv_state": Fake(5)}, 1) == {"cache": 5}
    assert place_call(Model, (None, None, torch.tensor([[5]]), Fake(5)), {}, 1) == {"cache": 5, "position_ids": 5}
    assert place_call(Model, (), {"cache_position": torch.tensor([3, 4])}, 2) == {"cache_position": 3}
    assert place_call(Model, (), {}, 3) == {}
    with pytest.raises(PlacementError, match="different lengths"):
        place_call(Model, (), {"a": Fake(1), "b": Fake(2)}, 1)
    with pytest.raises(PlacementError, match="count up by one"):
        place_call(Model, (), {"position_ids": torch.tensor([[0, 2]])}, 2)
    with pytest.raises(PlacementError, match="shape"):
        place_call(Model, (), {"cache_position": torch.tensor([0, 1, 2])}, 2)


def test_cache_kwargs_follows_the_models_forward(guard):
    class Old(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None):  # noqa: D102
            return input_ids

    assert list(cache_kwargs(Old(), "c")) == ["past_key_values"]
    import inspect

    names = inspect.signature(type(guard.model).forward).parameters
    assert list(cache_kwargs(guard.model, "c")) == (["cache"] if "cache" in names else ["past_key_values"])
