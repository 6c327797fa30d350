"""The LLM simulator's prompts and reply formats: chat messages out, predicted activations back.

:func:`simulation_messages` builds the messages for one example (token lines or numbered segments, from
:func:`~safesail_training.simulate.unit_texts`); :func:`parse_token_reply` / :func:`parse_segment_reply` read a
model's answer back into values on the 0-10 scale, tolerant of the ways models stray from the format. The
``format_*_reply`` functions write the reply a simulator is asked for: the embedding simulator
(:mod:`safesail_training.simulate_embedding`) counts its tokens to estimate what the LLM route would cost, and
the tests use it as a fake model's answer. Text escaping and reasoning/fence stripping are shared with the
explainer (:mod:`safesail_training.explain`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from safesail_neuron_db.records import ActivationExample
from safesail_training.explain import escape_text, strip_fences, strip_reasoning
from safesail_training.simulate import Method, unit_texts

MAX_ACTIVATION = 10.0
"""Top of the 0-10 activation scale the simulator answers on (parsed values are clipped to it)."""


# -- prompts and reply formats --------------------------------------------------------------------------------

_TOKEN_SYSTEM = """\
Your task is to predict, token by token, where one feature ("neuron") of a language model fires. A feature \
reacts to one specific kind of text; you are told what kind in a short explanation. The passage comes split \
into tokens, one per line as "token<TAB>unknown" (line breaks and tabs inside a token are written \\n and \\t).

Replace each "unknown" with a whole number from 0 (the feature does not fire) to 10 (it fires as strongly as \
it ever does). Expect the feature to be quiet almost everywhere: most numbers should be 0.

Answer with exactly one "token<TAB>activation" line for every input line, keeping the order, and write \
nothing else. Commit to a number for every token even when the explanation leaves you in doubt."""

_SEGMENT_SYSTEM = """\
Your task is to predict which parts of a passage make one feature ("neuron") of a language model fire. A \
feature reacts to one specific kind of text; you are told what kind in a short explanation. The passage comes \
cut into numbered pieces, one per line as "Segment <i>: <text>" (line breaks inside a piece are written \\n).

For each piece, decide whether the feature fires anywhere inside it, and answer with one line per piece, in \
order: "Segment <i>: activate" if it does, "Segment <i>: non-activate" if it does not. Write nothing else, \
and commit to an answer for every piece even when the explanation leaves you in doubt."""


def build_token_messages(explanation: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages for token-level simulation of one example."""
    body = "\n".join(f"{escape_text(tok)}\tunknown" for tok in tokens)
    user = f"Neuron explanation: {explanation}\n\nTokens:\n{body}"
    return [{"role": "system", "content": _TOKEN_SYSTEM}, {"role": "user", "content": user}]


def build_segment_messages(explanation: str, segments: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages for segment-level simulation of one example (``segments`` are the span texts)."""
    body = "\n".join(f"Segment {i}: {escape_text(text)}" for i, text in enumerate(segments, start=1))
    user = f"Neuron explanation: {explanation}\n\nSegments:\n{body}"
    return [{"role": "system", "content": _SEGMENT_SYSTEM}, {"role": "user", "content": user}]


def format_token_reply(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The reply a token-level simulator is asked to write (values rounded to whole numbers)."""
    return "\n".join(f"{escape_text(tok)}\t{int(round(v))}" for tok, v in zip(tokens, values))


def format_segment_reply(active: Sequence[bool]) -> str:
    """The reply a segment-level simulator is asked to write."""
    return "\n".join(f"Segment {i}: {'activate' if a else 'non-activate'}" for i, a in enumerate(active, start=1))


_NUM = r"[-+]?\d+(?:\.\d+)?"
_TUPLE = re.compile(rf"""[(\[]\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,\s*["']?({_NUM})["']?\s*[)\]]""")
_TAB_VALUE = re.compile(rf"^\s*[\"'*`]*({_NUM})[\"'*`]*\s*[,;)|]*\s*$")
_BARE = re.compile(rf"^\s*[-*•]?\s*({_NUM})\s*$")
_TRAILING = re.compile(rf"(?:^|[\s:=,|(])[\"'*`]*({_NUM})[\"'*`]*\s*[,;)|]*\s*$")


def _clip(value: float) -> float:
    return min(MAX_ACTIVATION, max(0.0, value))


def parse_token_reply(reply: str, n_tokens: int) -> list[float | None]:
    """Predicted activations aligned to the ``n_tokens`` tokens by order (None where the reply ran short).

    Accepts ``token<TAB>7`` / ``7.0`` lines, bare numbers, ``("tok", 7)`` tuples (one per line or all on one
    line) and ``tok: 7``-style lines. Reasoning blocks, fences and prose lines without a trailing number are
    ignored; when enough tab / bare-number lines exist, looser matches (prose that happens to end in a number)
    are ignored too. Values are clipped to 0-10; surplus values are dropped.
    """
    text = strip_fences(strip_reasoning(reply))
    need = max(1, math.ceil(n_tokens / 2))
    values: list[float | None]
    tuples = _TUPLE.findall(text)
    if len(tuples) >= need:
        values = [float(v) for v in tuples]
    else:
        strong: list[float | None] = []
        loose: list[float | None] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            if "\t" in line:  # a token line: keep its place even when the value is not a number
                match = _TAB_VALUE.match(line.rsplit("\t", 1)[1])
                value = float(match.group(1)) if match else None
                strong.append(value)
                loose.append(value)
                continue
            match = _BARE.match(line)
            if match:
                strong.append(float(match.group(1)))
                loose.append(float(match.group(1)))
                continue
            match = _TRAILING.search(line)
            if match:
                loose.append(float(match.group(1)))
        values = strong if len(strong) >= need else loose
    out: list[float | None] = [None if v is None else _clip(v) for v in values[:n_tokens]]
    return out + [None] * (n_tokens - len(out))


_SEGMENT_ITEM = re.compile(r"segment\s*#?\s*(\d+)\b((?:(?!segment)[^\n])*)", re.IGNORECASE)
_NUMBERED_ITEM = re.compile(r"^\s*(?:[-*•]\s*)?(\d+)\s*[:.)\-–—]\s*(.*)$")
_NEGATIVE_WORDS = frozenset({
    "non", "not", "no", "never", "none", "false", "off", "negative", "t", "doesn", "don", "won", "isn", "wouldn",
    "nonactivate", "nonactivated", "nonactive", "inactive", "inactivated", "deactivate", "deactivated", "unactivated",
})
_POSITIVE_WORDS = frozenset({"yes", "true", "on", "fires", "fire", "positive"})


def _verdict(text: str) -> float | None:
    """1.0 / 0.0 from a segment answer (``activate``, ``**Non-activate**``, ``does not activate``...): the first
    telling word among the answer's first four words, else among its last three (text echoed before a verdict)."""
    words = re.sub(r"[^a-z]+", " ", text.lower()).split()
    for window in (words[:4], words[-3:]):
        for word in window:
            if word in _NEGATIVE_WORDS:
                return 0.0
            if word.startswith("activ") or word in _POSITIVE_WORDS:
                return 1.0
    return None


def parse_segment_reply(reply: str, n_segments: int) -> list[float | None]:
    """1.0 (activate) / 0.0 (non-activate) per segment, None where the reply says nothing usable.

    Finds ``Segment <i>: <verdict>`` anywhere (several per line is fine), falling back to ``<i>: <verdict>``
    numbered lines; tolerant of case, bullets, Markdown emphasis, ``non activate`` / ``not activate`` /
    ``inactive``. When a segment is answered twice the last answer counts.
    """
    text = strip_fences(strip_reasoning(reply))
    out: list[float | None] = [None] * n_segments
    for line in text.splitlines():
        items = [(m.group(1), m.group(2)) for m in _SEGMENT_ITEM.finditer(line)]
        if not items:
            numbered = _NUMBERED_ITEM.match(line)
            items = [(numbered.group(1), numbered.group(2))] if numbered else []
        for number, rest in items:
            index = int(number) - 1
            verdict = _verdict(rest)
            if 0 <= index < n_segments and verdict is not None:
                out[index] = verdict
    return out


def simulation_messages(
    explanation: str, ex: ActivationExample, method: Method, n_segments: int
) -> list[dict[str, str]]:
    """Chat messages asking for the units of one example with ``method``."""
    if method == "token":
        return build_token_messages(explanation, ex.tokens)
    return build_segment_messages(explanation, unit_texts(ex, "segment", n_segments))
