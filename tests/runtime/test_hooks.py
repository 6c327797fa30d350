"""Hook points on tiny random Llama and Qwen2 models: placement, exactness, removal, early stop, errors."""

from __future__ import annotations

import pytest
import torch

from safesail_guard.hooks import (
    SITES,
    HookError,
    HookPoint,
    attach_hooks,
    capture,
    get_adapter,
    resolve_points,
    run_until_hooks,
)
from tests.tiny_models import make_tiny_model


def _ids(batch: int = 2, seq: int = 7) -> torch.Tensor:
    return torch.randint(3, 400, (batch, seq))


def test_parse_forms_and_errors() -> None:
    assert HookPoint.parse("layers.2.mlp_out") == HookPoint(2, "mlp_out")
    assert HookPoint.parse("2.resid_post") == HookPoint(2, "resid_post")
    assert HookPoint.parse("2:mlp_out").name == "layers.2.mlp_out"
    with pytest.raises(HookError, match="mlp_out, resid_post"):
        HookPoint.parse("layers.2.attn_out")
    with pytest.raises(HookError, match="layers.<layer>.<site>"):
        HookPoint.parse("mlp")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_observing_leaves_logits_bit_identical(family: str) -> None:
    model = make_tiny_model(family)
    ids = _ids()
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        points = [f"layers.{i}.{s}" for i in range(3) for s in SITES]
        with capture(model, points) as acts:
            hooked = model(input_ids=ids).logits
    assert torch.equal(clean, hooked)
    assert all(len(v) == 1 and v[0].shape == (2, 7, 64) for v in acts.values())


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sites_match_reference_computations(family: str) -> None:
    model = make_tiny_model(family)
    ids = _ids()
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        with capture(model, ["layers.0.resid_post", "layers.1.mlp_out", "layers.1.resid_post"]) as acts:
            model(input_ids=ids)
    # hidden_states[i + 1] is the output of decoder layer i (for all but the last layer, which gets the final norm)
    assert torch.equal(acts[HookPoint(0, "resid_post")][0], out.hidden_states[1])
    assert torch.equal(acts[HookPoint(1, "resid_post")][0], out.hidden_states[2])
    # mlp_out is what the MLP adds to the residual stream: resid_post(1) - mid-layer residual
    layer = model.model.layers[1]
    with torch.no_grad():
        mid = out.hidden_states[2] - acts[HookPoint(1, "mlp_out")][0]
        assert torch.allclose(layer.mlp(layer.post_attention_layernorm(mid)), acts[HookPoint(1, "mlp_out")][0], atol=1e-5)


def test_hooks_removed_even_on_error() -> None:
    model = make_tiny_model("llama")
    with pytest.raises(RuntimeError, match="boom"):
        with attach_hooks(model, {"layers.0.mlp_out": lambda p, a: None}):
            assert len(model.model.layers[0].mlp._forward_hooks) == 1
            raise RuntimeError("boom")
    assert len(model.model.layers[0].mlp._forward_hooks) == 0


def test_stop_after_gives_same_activations_and_skips_later_layers() -> None:
    model = make_tiny_model("qwen2")
    ids = _ids()
    seen: list[int] = []
    model.model.layers[2].register_forward_hook(lambda m, i, o: seen.append(2))
    with torch.no_grad():
        with capture(model, ["layers.1.mlp_out"]) as full:
            model(input_ids=ids)
        seen.clear()
        with capture(model, ["layers.1.mlp_out"], stop_after=True) as early:
            assert run_until_hooks(model, input_ids=ids) is None
    assert seen == []
    assert torch.equal(full[HookPoint(1, "mlp_out")][0], early[HookPoint(1, "mlp_out")][0])


def test_replacement_changes_downstream_output() -> None:
    model = make_tiny_model("llama")
    ids = _ids()
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with attach_hooks(model, {"layers.1.mlp_out": lambda p, a: torch.zeros_like(a)}):
            ablated = model(input_ids=ids).logits
    assert not torch.allclose(clean, ablated)


def test_bad_layer_and_unknown_architecture() -> None:
    model = make_tiny_model("llama")
    with pytest.raises(HookError, match=r"layers 0\.\.2"):
        resolve_points(model, ["layers.3.mlp_out"])
    with pytest.raises(HookError, match="at least one"):
        resolve_points(model, [])

    class Strange(torch.nn.Module):
        class config:  # noqa: N801
            model_type = "gpt_neox"

    with pytest.raises(HookError, match="supported: .*llama.*qwen2"):
        get_adapter(Strange())


def test_kv_cache_decode_steps_fire_hooks() -> None:
    model = make_tiny_model("qwen2")
    calls: list[int] = []
    with torch.no_grad(), attach_hooks(model, {"layers.0.mlp_out": lambda p, a: calls.append(a.shape[1])}):
        model.generate(input_ids=_ids(1, 5), max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    # one call for the 5-token prompt, then one per decoded token that needs a forward (max_new_tokens - 1)
    assert calls[0] == 5 and calls[1:] == [1, 1, 1]
