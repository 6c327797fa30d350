"""A prompt as the policy reads it: one text that keeps each message's role.

The guard hands a policy run the prompt as one string (:meth:`CompiledPolicy.start
<safesail_guard.policy.run.CompiledPolicy.start>`). For chat prompts that string is built by
:func:`join_segments`: ``role ROLE_SEP text`` per message, messages joined by ``SEGMENT_SEP``. The run
(:mod:`safesail_guard.policy.run`) splits it again with :func:`prompt_segments`, so language detection and
over-refusal framing see each message and a policy's ``roles`` can choose among them. Plain text (no separator)
is one segment without a role. :func:`prompt_text_of` rebuilds such a text from already-scored prompt tokens
(``CompiledPolicy.evaluate`` without a prompt text).

The runtime (``runtime/guard.py``) builds the text from chat messages; nothing here knows about tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from safesail_guard.events import TokenActivations
from safesail_guard.policy.schema import ROLES

SEGMENT_SEP = "\x1e"
"""Separates the messages of a prompt text built by :func:`join_segments` (ASCII record separator)."""
ROLE_SEP = "\x1f"
"""Separates a message's role from its text in a segment (ASCII unit separator)."""
ALL_ROLES = frozenset(ROLES)
"""Every message role a policy's ``roles`` may name."""


def join_segments(messages: Iterable[tuple[str | None, str]]) -> str:
    """One prompt text from ``(role, text)`` pairs that keeps each message's role for a policy run
    (which splits it with :func:`prompt_segments`). Separator characters inside the texts become spaces, so a
    message cannot pose as another role."""
    return SEGMENT_SEP.join(f"{role or ''}{ROLE_SEP}{_unsep(text)}" for role, text in messages)


def prompt_segments(prompt_text: str) -> list[tuple[str | None, str]]:
    """``(role, text)`` per message of a :func:`join_segments` text; plain text is one segment with role None."""
    if ROLE_SEP not in prompt_text:
        return [(None, prompt_text)]
    out: list[tuple[str | None, str]] = []
    for part in prompt_text.split(SEGMENT_SEP):
        role, sep, text = part.partition(ROLE_SEP)
        out.append((role or None, text) if sep else (None, part))
    return out


def prompt_text_of(tokens: Sequence[TokenActivations]) -> str:
    """The prompt text of content tokens, one segment per run of tokens of one role (plain text when there is
    at most one such run)."""
    parts: list[tuple[str | None, str]] = []
    for t in tokens:
        if t.scope != "prompt" or not t.content:
            continue
        if parts and parts[-1][0] == t.role:
            parts[-1] = (t.role, parts[-1][1] + t.text)
        else:
            parts.append((t.role, t.text))
    if len(parts) <= 1:
        return parts[0][1] if parts else ""
    return join_segments(parts)


def _unsep(text: str) -> str:
    return text.replace(SEGMENT_SEP, " ").replace(ROLE_SEP, " ") if ROLE_SEP in text or SEGMENT_SEP in text else text
