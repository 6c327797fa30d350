"""Turn plain text or OpenAI-style chat messages into token ids that line up with the text a user sees.

`encode_text` and `encode_chat` return an `EncodedText`: ids plus, per token, the exact substring of the
rendered text it covers, whether it is a special token (BOS, `<|im_start|>`, padding...) and which message
role's *content* it belongs to (`None` for chat-template scaffolding such as role headers). Harvesting uses the
masks to drop special tokens; the guard uses roles to score prompt and response separately; the dashboard
shows `tokens` so that per-token activations sit under the characters they came from.

Fail closed: every piece of client text must reach the tokens the guard scores. `validate_messages` refuses
what cannot be scanned (non-text content parts, lone surrogates) and folds the text an OpenAI message carries
outside ``content`` (``name``, ``tool_calls``, ``function_call``, ``refusal``) into the scored content;
`render_chat` refuses a message the chat template drops or rewrites (leading/trailing whitespace aside).
`normalized_view` is the folded reading of text that hides words with invisible characters, compatibility
forms or homoglyphs (the guard scores it as well and keeps the stricter verdict).

How it connects: the runtime guard (`safesail_guard.runtime.guard`), the proxy's request schema and backends
(`safesail_guard.server`), batch scoring, the policy test cases and the pipeline's harvester
(`safesail_training.harvest`) all tokenise through this module; it imports nothing from the package (the
tokenizer is passed in). Not to be confused with the terminal chat (`safesail chat`, in `safesail_guard.cli`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

VALID_ROLES = ("system", "user", "assistant", "tool", "developer")
TEXT_PART_TYPES = ("text", "refusal")
"""Content part types the guard can read (``{"type": "text", "text": ...}``, ``{"type": "refusal", ...}``)."""


class ChatFormatError(ValueError):
    """Malformed or unscannable chat messages; the message names the offending index and field.

    ``param`` is the field path (``messages[2].content[0].type``) for an API error's ``param``.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def check_text(text: str, where: str) -> None:
    """Refuse text no tokenizer can read faithfully: a lone UTF-16 surrogate (``"\\ud800"`` in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ChatFormatError(
            f"{where} contains a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}, which is not "
            "valid Unicode text; send the character as a proper pair or remove it", param=where) from None


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
    """Check OpenAI-style messages and return clean ``[{role, content: str}]`` copies.

    ``content`` may be a string, null or a list of text parts (joined). Any other part type (image_url,
    input_audio, file...) is refused: the guard reads text only and must not pass what it cannot scan. The
    client text a message carries outside ``content`` is folded into the returned content so that it is
    scored: ``name`` (``"name: content"``), an assistant's ``tool_calls`` / ``function_call`` (one
    ``name(arguments)`` line each) and ``refusal``. Other keys (``tool_call_id``...) are ignored here; the
    server's schema refuses unknown ones. Lone surrogates are refused, naming the field.
    """
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("messages must be a non-empty list of {'role': ..., 'content': ...} objects",
                              param="messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatFormatError(f"messages[{i}] must be an object with 'role' and 'content'", param=f"messages[{i}]")
        role = m.get("role")
        if role not in VALID_ROLES:
            raise ChatFormatError(f"messages[{i}].role must be one of {', '.join(VALID_ROLES)}, got {role!r}",
                                  param=f"messages[{i}].role")
        content = _content_text(m.get("content"), i)
        extras = _side_texts(m, i)
        if extras:
            content = "\n".join([content, *extras]) if content else "\n".join(extras)
        name = m.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise ChatFormatError(f"messages[{i}].name must be a string, got {type(name).__name__}",
                                      param=f"messages[{i}].name")
            check_text(name, f"messages[{i}].name")
            if name.strip():
                content = f"{name}: {content}"
        clean.append({"role": role, "content": content})
    return clean


def _content_text(content: Any, i: int) -> str:
    """The text of one message's ``content`` (string, null or text parts); unscannable parts are errors."""
    where = f"messages[{i}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        check_text(content, where)
        return content
    if not isinstance(content, list):
        raise ChatFormatError(f"{where} must be a string or a list of text parts, got {type(content).__name__}",
                              param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PART_TYPES:
            shown = repr(kind) if isinstance(part, dict) else f"a {type(part).__name__}"
            raise ChatFormatError(
                f"{where}[{j}].type: the guard reads text only and cannot scan a {shown} part; send text "
                "parts only (type 'text')", param=f"{where}[{j}].type")
        text = part.get(kind)
        if not isinstance(text, str):
            raise ChatFormatError(f"{where}[{j}].{kind} must be a string, got {type(text).__name__}",
                                  param=f"{where}[{j}].{kind}")
        check_text(text, f"{where}[{j}].{kind}")
        texts.append(text)
    return "".join(texts)


def _side_texts(m: dict[str, Any], i: int) -> list[str]:
    """Client text of a message outside ``content``: tool calls, a legacy function call, a refusal."""
    out: list[str] = []
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise ChatFormatError(f"messages[{i}].tool_calls must be a list", param=f"messages[{i}].tool_calls")
        for j, call in enumerate(calls):
            out.append(_call_text(call, f"messages[{i}].tool_calls[{j}]"))
    if m.get("function_call") is not None:
        out.append(_call_text({"type": "function", "function": m["function_call"]}, f"messages[{i}]",
                              key="function_call"))
    refusal = m.get("refusal")
    if refusal is not None:
        if not isinstance(refusal, str):
            raise ChatFormatError(f"messages[{i}].refusal must be a string", param=f"messages[{i}].refusal")
        check_text(refusal, f"messages[{i}].refusal")
        if refusal:
            out.append(refusal)
    return out


def _call_text(call: Any, where: str, key: str | None = None) -> str:
    """``name(arguments)`` of one tool call (``function`` or ``custom``); anything else is an error."""
    if not isinstance(call, dict):
        raise ChatFormatError(f"{where} must be an object", param=where)
    kind = call.get("type", "function")
    key = key or kind
    body = call.get(kind) if kind in ("function", "custom") else None
    if not isinstance(body, dict):
        raise ChatFormatError(f"{where}.{key}: the guard can only read tool calls of type 'function' or 'custom' "
                              "with an object body", param=f"{where}.{key}")
    name, args = body.get("name"), body.get("arguments" if kind == "function" else "input", "")
    if not isinstance(name, str):
        raise ChatFormatError(f"{where}.{key}.name must be a string", param=f"{where}.{key}.name")
    if not isinstance(args, str):  # some clients send parsed JSON; score its text all the same
        try:
            args = json.dumps(args, ensure_ascii=False)
        except (TypeError, ValueError):
            raise ChatFormatError(f"{where}.{key}.arguments must be a JSON string",
                                  param=f"{where}.{key}.arguments") from None
    check_text(name, f"{where}.{key}.name")
    check_text(args, f"{where}.{key}.arguments")
    return f"{name}({args})"


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
    """Apply the tokenizer's chat template; return the text and each message's content span `(role, start, end)`.

    Every message's text must appear in the rendered text, in order: the guard scores what the template
    renders, so a message the template drops (a template without a system turn, one that strips earlier
    assistant turns' reasoning...) or rewrites would pass unread. That is a `ChatFormatError` naming the
    message. Only leading and trailing whitespace may be trimmed (it carries no words); an all-whitespace
    message may vanish.
    """
    msgs = validate_messages(list(messages))
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatFormatError("this tokenizer has no chat template; pass plain text instead of messages")
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    spans: list[tuple[str, int, int]] = []
    cursor = 0
    for i, m in enumerate(msgs):
        content = m["content"]
        stripped = content.strip()
        if not stripped:
            continue  # nothing but whitespace: no word to score, whatever the template did with it
        start = text.find(content, cursor)
        if start < 0:  # the template trimmed the content: the words themselves must still be there, in order
            content = stripped
            start = text.find(content, cursor)
        if start < 0:
            raise ChatFormatError(
                f"messages[{i}] ({m['role']}): the chat template dropped or rewrote it, so the guard cannot score "
                f"what the model reads; send it in a form the template keeps verbatim (e.g. merge a "
                f"{m['role']} message the template does not support into a user message)", param=f"messages[{i}]")
        end = start + len(content)
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
    """Keep the first `max_length` tokens (no-op for None).

    For training data only (harvesting, model metrics): the guard never truncates what it scores; `Guard.scan`
    reads long inputs in chunks and generation refuses a prompt longer than the model's context.
    """
    if max_length is None or len(enc) <= max_length:
        return enc
    return EncodedText(
        enc.text, enc.input_ids[:max_length], enc.offsets[:max_length], enc.special[:max_length], enc.roles[:max_length]
    )


# ---------------------------------------------------------------------------------- hidden-text defence

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f\U000e0100-\U000e01ef]")
"""Characters that render as nothing (zero-width space/joiners, word joiner, BOM, soft hyphen, Hangul fillers,
variation selectors, Unicode tags) or only reorder the display (bidi embeddings, overrides and isolates)."""
_TAGS = re.compile("[\U000e0020-\U000e007e]")
"""Unicode tag characters: invisible copies of ASCII that models can read ("ASCII smuggling")."""

# Letters of other scripts that look like (and, inside a Latin word, are read as) a Latin letter
_CONFUSABLES = str.maketrans(
    "аѕԁеһіјӏоԛрсԝхуАВЕНІЈКМОРЅТХУҮӀԚԜЬьαοριυνκχΑΒΕΖΗΙΚΜΝΟΡΤΥΧıɑɡօսհ",
    "asdehijloqpcwxyABEHIJKMOPSTXYYIQWbbaopiuvkxABEZHIKMNOPTYXiagouh")
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLES)
_OVERLAY_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LATINISH = "A-Za-z" + "".join(sorted(_CONFUSABLE_CHARS))
_MARKS_ON_LATIN = re.compile(f"(?<=[{_LATINISH}])[{_OVERLAY_MARKS}]+")
_LETTERS = re.compile(r"[^\W\d_]+")


def normalized_view(text: str) -> str | None:
    """The reading of ``text`` with its disguises removed, or None when it has none (the common, cheap case).

    Invisible and display-only characters are removed (Unicode tags are decoded to the ASCII they hide), the
    text is NFKC-normalised (fullwidth, mathematical and circled letters become ASCII), combining marks that
    do not compose with the Latin letter they sit on (strike-through, Zalgo) are removed, and Cyrillic/Greek
    homoglyphs are folded to Latin inside words that mix them with Latin letters (or that are made only of
    lookalikes in otherwise Latin text), so "b\u200do\u200dm\u200db", "ｂｏｍｂ" and "bоmb" (Cyrillic о) all
    read "bomb". Text in another script (Russian, Greek, Hindi...) is left alone. ASCII text returns None at
    once; other text is only rewritten when one of these disguises is present.
    """
    if text.isascii() or not _suspicious(text):
        return None
    view = _fold(text)
    return None if view == unicodedata.normalize("NFC", text) else view  # composing accents changes no word


def _suspicious(text: str) -> bool:
    """True when ``text`` has a character `_fold` may remove or rewrite."""
    for ch in set(text):
        if ch.isascii():
            continue
        if ch in _CONFUSABLE_CHARS or _INVISIBLE.match(ch):
            return True
        cat = unicodedata.category(ch)
        if cat in ("Cf", "Mn"):
            return True
        folded = unicodedata.normalize("NFKC", ch)
        if folded != ch and any(c.isascii() and c.isalnum() for c in folded):
            return True
    return False


def _fold(text: str) -> str:
    text = _TAGS.sub(lambda m: chr(ord(m.group()) - 0xE0000), text)
    text = _INVISIBLE.sub("", text)
    text = "".join(c for c in text if c.isascii() or unicodedata.category(c) != "Cf")
    text = unicodedata.normalize("NFKC", text)
    text = _MARKS_ON_LATIN.sub("", text)
    if not any(c in _CONFUSABLE_CHARS for c in text):
        return text
    latin_text = any(c.isascii() and c.isalpha() for c in text)

    def fold_word(m: re.Match[str]) -> str:
        word = m.group()
        if not any(c in _CONFUSABLE_CHARS for c in word):
            return word
        mixed = any(c.isascii() for c in word)
        lookalike = latin_text and all(c in _CONFUSABLE_CHARS or c.isascii() for c in word)
        return word.translate(_CONFUSABLES) if mixed or lookalike else word

    return _LETTERS.sub(fold_word, text)


def normalized_messages(messages: Sequence[dict[str, str]]) -> list[dict[str, str]] | None:
    """`normalized_view` of every message's content, or None when no message has a disguise."""
    out, changed = [], False
    for m in messages:
        view = normalized_view(m["content"])
        changed = changed or view is not None
        out.append({"role": m["role"], "content": view if view is not None else m["content"]})
    return out if changed else None
