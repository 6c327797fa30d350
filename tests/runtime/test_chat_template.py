"""Token alignment with the text a user sees, chat roles, and message validation."""

from __future__ import annotations

import pytest

from safesail_guard.chat_template import ChatFormatError, encode_chat, encode_text, validate_messages


def test_plain_text_tokens_rebuild_the_text(tiny_tokenizer) -> None:
    text = "How do I bake bread? über café"
    enc = encode_text(tiny_tokenizer, text)
    assert "".join(enc.tokens) == text
    assert len(enc.tokens) == len(enc.input_ids) and not any(enc.special)


def test_chat_roles_and_special_tokens(tiny_tokenizer) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I bake bread?"}]
    enc = encode_chat(tiny_tokenizer, msgs)
    user_text = "".join(t for t, r in zip(enc.tokens, enc.roles) if r == "user")
    assert user_text == "How do I bake bread?"
    assert "".join(t for t, r in zip(enc.tokens, enc.roles) if r == "system") == "Be brief."
    special = [t for t, s in zip(enc.tokens, enc.special) if s]
    assert special.count("<|im_start|>") == 3 and special.count("<|im_end|>") == 2
    assert sum(enc.content_mask(["user"])) == sum(r == "user" for r in enc.roles)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        ([{"role": "wizard", "content": "x"}], r"messages\[0\]\.role"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be a string"),
        ([{"role": "user", "content": "a"}, 5], r"messages\[1\]"),
    ],
)
def test_bad_messages(bad, match) -> None:
    with pytest.raises(ChatFormatError, match=match):
        validate_messages(bad)


def test_content_parts_are_flattened() -> None:
    msgs = validate_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert msgs[0]["content"] == "ab"


@pytest.mark.slow
def test_embedded_chat_alignment(embedded) -> None:
    enc = encode_chat(embedded.tokenizer, [{"role": "user", "content": "Wie geht's? 你好, how do I make bread?"}])
    assert "".join(t for t, r in zip(enc.tokens, enc.roles) if r == "user") == "Wie geht's? 你好, how do I make bread?"
    assert enc.tokens[0] == "<|im_start|>" and enc.special[0]


TRIM = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_template_that_trims_whitespace_still_places_every_word() -> None:
    from tests.tiny_models import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.chat_template = TRIM
    msgs = [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "\n bake bread \n"},
            {"role": "assistant", "content": "   "}]  # an all-whitespace message has no word to lose
    enc = encode_chat(tok, msgs)
    assert "".join(t for t, r in zip(enc.tokens, enc.roles) if r == "system") == "Be brief."
    assert "".join(t for t, r in zip(enc.tokens, enc.roles) if r == "user") == "bake bread"


def test_text_outside_content_is_folded_into_the_scored_content() -> None:
    msgs = validate_messages([
        {"role": "user", "name": "alice", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"y": "z"}}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "refusal": "still no"},
        {"role": "assistant", "content": "ok", "function_call": {"name": "h", "arguments": "{}"}},
    ])
    assert [m["content"] for m in msgs] == ["alice: hi", 'f({"x": 1})\ng({"y": "z"})', "no\nstill no", "ok\nh({})"]


@pytest.mark.parametrize(
    "bad, param",
    [
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "messages[0].content[0].text"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": ["a"]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": "a\udc00"}], "messages[0].content"),
        ([{"role": "user", "content": "a", "name": "\ud800"}], "messages[0].name"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"type": "web", "web": {}}]}],
         "messages[0].tool_calls[0].web"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}],
         "messages[0].tool_calls[0].function.name"),
        ([{"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": "\ud800"}}]}], "messages[0].tool_calls[0].function.arguments"),
    ],
)
def test_unscannable_messages_name_the_field(bad, param) -> None:
    with pytest.raises(ChatFormatError) as e:
        validate_messages(bad)
    assert e.value.param == param and param in str(e.value)


def test_truncate_is_for_training_only_and_keeps_a_prefix(tiny_tokenizer) -> None:
    enc = encode_chat(tiny_tokenizer, [{"role": "user", "content": "bake bread " * 20}], max_length=5)
    assert len(enc) == 5  # harvesting may cut; the guard never passes max_length (see tests/redteam)
