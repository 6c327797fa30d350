"""What the guard reads of a prompt: the input type, which tokens count, and the prompt as text.

A guard input (:data:`Prompt`) is plain text or OpenAI-style chat messages. The guard (``runtime/guard.py``),
guarded generation (``runtime/generation.py``), the monitor and the server all read it the same way through this
module:

- :func:`watched_mask` says which tokens of an encoding (``chat_template.EncodedText``) policies and scores count: the
  non-special content of every message role (:data:`WATCHED_ROLES`).
- :func:`policy_prompt_text` is the prompt as a policy run reads it (plain text, or each message tagged with its
  role by :func:`safesail_guard.policy.segments.join_segments`).
- :func:`plain_prompt_text` is the prompt as a translator reads it (the messages' contents, one per line).

Messages are validated with ``chat_template.validate_messages`` first, so every helper here fails closed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safesail_guard.chat_template import VALID_ROLES, EncodedText, validate_messages
from safesail_guard.policy.segments import join_segments

Prompt = str | Sequence[dict[str, Any]]
"""A guard input: plain text, or chat messages (``{"role": ..., "content": ...}``)."""

WATCHED_ROLES = (*VALID_ROLES, "text")
"""Roles whose content tokens policies and scores count: every message role (system and developer included:
a client of the proxy writes those too) and "text" (plain text). A policy's ``roles`` narrows what its rules
read; the risk score reads them all."""


def watched_mask(enc: EncodedText) -> list[bool]:
    """Per token: non-special content of a watched role (see `WATCHED_ROLES`)."""
    return enc.content_mask(WATCHED_ROLES)


def policy_prompt_text(prompt: Prompt) -> str:
    """The prompt as the policy engine reads it: plain text, or every message tagged with its role (see
    `safesail_guard.policy.segments`) so that language detection and over-refusal framing see each message,
    system and developer ones included, and a policy's ``roles`` can choose among them."""
    if isinstance(prompt, str):
        return prompt
    return join_segments([(m["role"], m["content"]) for m in validate_messages(list(prompt))])


def plain_prompt_text(prompt: Prompt) -> str:
    """The prompt's text for a translator: plain text, or the messages' contents one after the other."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in validate_messages(list(prompt)) if m["content"].strip())
