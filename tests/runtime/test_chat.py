"""Token alignment with the text a user sees, chat roles, and message validation."""

from __future__ import annotations

import pytest

from safesail_guard.chat import ChatFormatError, encode_chat, encode_text, validate_messages


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
