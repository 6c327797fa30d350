"""Turn plain text or OpenAI-style chat messages into token ids that line up with the text a user sees.

`encode_text` and `encode_chat` return an `EncodedText`: ids plus, per token, the exact substring of the
rendered text it covers, whether it is a special token (BOS, `<|im_start|>`, padding...) and which message
role's *content* it belongs to (`None` for chat-template scaffolding such as role headers). Harvesting uses the
masks to drop special tokens; the guard uses roles to score prompt and response separately; the dashboard
shows `tokens` so that per-token activations sit under the characters they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

VALID_ROLES = ("system", "user", "assistant", "tool", "developer")


class ChatFormatError(ValueError):
    """Malformed chat messages; the message names the offending index and field."""


@dataclass
class EncodedText:
    """Token ids with per-token alignment to the rendered text."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    roles: list[str | None] = field(default_factory=list)

    @property
    def tokens(self) -> list[str]:
        """The new characters of `text` each token covers.

        Byte-level BPE can split one character over several tokens, which then share an offset span; the
        character is shown under the first of them and the rest get ''. Joining the pieces gives back the
        covered text exactly, with no character repeated.
        """
        # start at the first token's own offset: a chunk cut from a longer text must not claim what precedes it
        pieces, covered = [], (self.offsets[0][0] if self.offsets else 0)
        for a, b in self.offsets:
            start = max(a, covered)
            pieces.append(self.text[start:b] if b > start else "")
            covered = max(covered, b)
        return pieces

    def __len__(self) -> int:
        return len(self.input_ids)

    def content_mask(self, roles: Sequence[str] | None = None) -> list[bool]:
        """True for non-special tokens inside message content (of `roles`, if given)."""
        keep = set(roles) if roles else None
        return [
            (not s) and r is not None and (keep is None or r in keep) for s, r in zip(self.special, self.roles)
        ]


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Check OpenAI-style messages: a non-empty list of {role, content: str}; returns a clean copy."""
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatFormatError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in VALID_ROLES:
            raise ChatFormatError(f"messages[{i}].role must be one of {', '.join(VALID_ROLES)}, got {role!r}")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ChatFormatError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        clean.append({"role": role, "content": content})
    return clean


def _tokenize(tokenizer: Any, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), offsets


def _special_flags(tokenizer: Any, ids: list[int]) -> list[bool]:
    special_ids = set(tokenizer.all_special_ids)
    return [i in special_ids for i in ids]


def encode_text(tokenizer: Any, text: str, *, max_length: int | None = None) -> EncodedText:
    """Encode plain text (no chat template); every token gets the role `"text"`."""
    ids, offsets = _tokenize(tokenizer, text, add_special_tokens=True)
    enc = EncodedText(text, ids, offsets, _special_flags(tokenizer, ids), ["text"] * len(ids))
    return truncate(enc, max_length)


def render_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
) -> tuple[str, list[tuple[str, int, int]]]:
    """Apply the tokenizer's chat template; return the text and each message's content span `(role, start, end)`."""
    msgs = validate_messages(list(messages))
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatFormatError("this tokenizer has no chat template; pass plain text instead of messages")
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    spans: list[tuple[str, int, int]] = []
    cursor = 0
    for m in msgs:
        if not m["content"]:
            continue
        start = text.find(m["content"], cursor)
        if start < 0:  # template rewrote the content (e.g. stripped it); fall back to a stripped search
            stripped = m["content"].strip()
            start = text.find(stripped, cursor) if stripped else -1
            if start < 0:
                continue
            end = start + len(stripped)
        else:
            end = start + len(m["content"])
        spans.append((m["role"], start, end))
        cursor = end
    return text, spans


def encode_chat(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    max_length: int | None = None,
) -> EncodedText:
    """Render `messages` with the chat template and encode them with per-token roles."""
    text, spans = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    ids, offsets = _tokenize(tokenizer, text, add_special_tokens=False)
    roles: list[str | None] = []
    for a, b in offsets:
        role = None
        for r, s, e in spans:
            if a < e and b > s:  # token overlaps the content span
                role = r
                break
        roles.append(role)
    enc = EncodedText(text, ids, offsets, _special_flags(tokenizer, ids), roles)
    return truncate(enc, max_length)


def truncate(enc: EncodedText, max_length: int | None) -> EncodedText:
    """Keep the first `max_length` tokens (no-op for None)."""
    if max_length is None or len(enc) <= max_length:
        return enc
    return EncodedText(
        enc.text, enc.input_ids[:max_length], enc.offsets[:max_length], enc.special[:max_length], enc.roles[:max_length]
    )
