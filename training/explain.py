"""Explain what an SAE feature responds to (Safe-SAIL section 2.2.2).

Two explainers share one interface, :class:`Explainer`:

* :class:`OfflineExplainer` (``"offline"``, the default): a deterministic one-line summary built from the
  feature's own data - the words it fires hardest on across its top examples, its concept tags and the context
  of its strongest firing. No LLM; a feature that never fires is ``skipped``, never given invented text.
* :class:`OpenAIExplainer` (``"openai:<model>"``): shows an LLM examples grouped by activation level (0-10,
  :func:`safesail_neuron_db.records.quantize`) with each firing token and its level, and asks for one line
  starting ``Explanation:``; :func:`parse_explanation` pulls that line out of messy replies.

The reply-cleaning helpers :func:`strip_reasoning`, :func:`strip_fences` and :func:`snippet` are shared with
the simulators (:mod:`safesail_training.simulate_prompts`, :mod:`safesail_training.simulate_llm`) and
:mod:`safesail_training.spscore`. The ``explain`` stage of `safesail build-db`
(:mod:`safesail_training.build_db_describe`) picks the explainer and runs ``explain_many``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from safesail_guard.llm_client import LLMClient
from safesail_guard.llm_config import Completion, LLMError
from safesail_neuron_db.records import ActivationExample, Explanation, FeatureRecords, quantize

__all__ = [
    "Explainer",
    "OfflineExplainer",
    "OpenAIExplainer",
    "build_explain_messages",
    "escape_text",
    "firing_examples",
    "parse_explanation",
    "peak_window",
    "snippet",
    "strip_fences",
    "strip_reasoning",
]

MAX_EXPLANATION_CHARS = 400
"""Longer 'explanations' are rambling or a pasted prompt, not an answer; :func:`parse_explanation` rejects them."""

_THINK_BLOCK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think(?:ing)?>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think(?:ing)?>", re.IGNORECASE)
_FENCE_LINE = re.compile(r"^\s*```[\w+.-]*\s*$")
_LABEL = re.compile(r"^[\s>*_#`\-•]*explanation[\s*_`]*[:：][\s*_`]*(.*)$", re.IGNORECASE)
_REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry\b|i can(?:no|')?t\b|i won'?t\b|i'?m (?:not able|unable)|i am (?:not able|unable)"
    r"|as an ai\b|unfortunately,? i\b)",
    re.IGNORECASE,
)
_PLACEHOLDERS = frozenset({"n/a", "na", "none", "unknown", "unclear", "...", "tbd", "<explanation>", "[explanation]"})


# -- shared reply helpers ------------------------------------------------------------------------------------


def strip_reasoning(reply: str) -> str:
    """``reply`` without ``<think>...</think>`` blocks. A lone ``</think>`` keeps only what follows it (the server
    ate the opening tag); a lone ``<think>`` opening the reply means the reasoning never finished: nothing is
    left. (A lone ``<think>`` later on is kept: it may be an echoed token.)"""
    text = _THINK_BLOCK.sub("", reply)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    if _THINK_OPEN.match(text.lstrip()):
        return ""
    return text


def strip_fences(text: str) -> str:
    """``text`` with Markdown code-fence lines (```` ``` ```` / ```` ```json ````) removed, their content kept."""
    return "\n".join(line for line in text.splitlines() if not _FENCE_LINE.match(line))


def snippet(text: str, limit: int = 300) -> str:
    """``text`` on one line, whitespace collapsed, cut to ``limit`` characters (for ``detail`` fields)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def escape_text(text: str) -> str:
    """``text`` with newlines, tabs and other control characters made visible (``\\n``, ``\\t``, ``\\x07``), so a
    token or a text window always prints on one line."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


# -- feature data helpers --------------------------------------------------------------------------------------


def _levels(ex: ActivationExample) -> list[int]:
    """The example's levels, re-quantized from its own acts when the stored levels are missing or all zero."""
    if len(ex.levels) == len(ex.tokens) and any(ex.levels):
        return list(ex.levels)
    peak = max(ex.acts, default=0.0)
    return quantize(list(ex.acts), peak) if peak > 0 else [0] * len(ex.tokens)


def _fires(ex: ActivationExample) -> bool:
    return any(a > 0 for a in ex.acts) or any(lv > 0 for lv in ex.levels)


def firing_examples(feat: FeatureRecords) -> list[ActivationExample]:
    """The feature's examples with at least one firing token, in stored order."""
    return [ex for ex in feat.examples if ex.tokens and _fires(ex)]


def peak_window(
    ex: ActivationExample, before: int = 6, after: int = 3, *, mark: bool = False, ellipsis: bool = True
) -> str:
    """Text around the example's strongest token (``before`` tokens before it, ``after`` after), whitespace
    collapsed, with ``...`` where the window cuts the example (unless ``ellipsis`` is False); ``mark`` wraps the
    peak token in ``[[...]]``."""
    if not ex.tokens:
        return ""
    acts = list(ex.acts) if len(ex.acts) == len(ex.tokens) else [float(v) for v in _levels(ex)]
    peak = max(range(len(acts)), key=lambda i: (acts[i], -i))
    start, end = max(0, peak - before), min(len(ex.tokens), peak + after + 1)
    pieces = list(ex.tokens[start:end])
    if mark:
        i = peak - start
        lead = pieces[i][: len(pieces[i]) - len(pieces[i].lstrip())]
        pieces[i] = f"{lead}[[{pieces[i].strip() or escape_text(pieces[i])}]]"
    text = " ".join("".join(pieces).split())
    if not ellipsis or not text:
        return text
    return ("..." if start > 0 else "") + text + ("..." if end < len(ex.tokens) else "")


# -- offline explainer -----------------------------------------------------------------------------------------


def _normalise_word(word: str) -> str:
    """Casefolded ``word`` without surrounding punctuation/symbols; pure punctuation is kept as is."""
    stripped = word.strip()
    core = stripped
    while core and unicodedata.category(core[0])[0] in "PS":
        core = core[1:]
    while core and unicodedata.category(core[-1])[0] in "PS":
        core = core[:-1]
    return (core or stripped).casefold()


def _strong_words(ex: ActivationExample, *, max_chars: int = 24, grow: int = 12) -> list[tuple[str, int]]:
    """``(word, level)`` for each word the example fires hard on: runs of tokens at >= half the example's peak
    level, widened to whole words when that adds at most ``grow`` characters, split at whitespace."""
    levels = _levels(ex)
    peak = max(levels, default=0)
    if peak <= 0:
        return []
    threshold = max(1, math.ceil(peak / 2))
    text = ex.text
    offsets = [0]
    for tok in ex.tokens:
        offsets.append(offsets[-1] + len(tok))
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(ex.tokens):
        if levels[i] < threshold:
            i += 1
            continue
        j = i
        while j + 1 < len(ex.tokens) and levels[j + 1] >= threshold:
            j += 1
        start, end = offsets[i], offsets[j + 1]
        left, right = start, end
        while 0 < left < len(text) and not text[left].isspace() and not text[left - 1].isspace():
            left -= 1
        while 0 < right < len(text) and not text[right - 1].isspace() and not text[right].isspace():
            right += 1
        if (start - left) + (right - end) <= grow:
            start, end = left, right
        run_level = max(levels[i : j + 1])
        for word in text[start:end].split():
            norm = _normalise_word(word)[:max_chars]
            if norm:
                out.append((norm, run_level))
        if text[start:end] and not text[start:end].strip():  # a firing whitespace-only token (e.g. a newline)
            out.append((escape_text(text[start:end]), run_level))
        i = j + 1
    return out


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


class OfflineExplainer:
    """Deterministic explanations from the feature's own top examples and concept tags (no LLM).

    Shape: ``Fires on "stab", "knife", "attacked" in violence / physical assault contexts, e.g. "...a man
    used a knife to stab..."``. Words are ranked by how many times they are among the firing words of the top
    examples (ties: summed level, then first seen).
    """

    name = "offline"

    def __init__(self, *, n_words: int = 3, n_concepts: int = 3, context_chars: int = 100) -> None:
        self.n_words = n_words
        self.n_concepts = n_concepts
        self.context_chars = context_chars

    def explain(self, feat: FeatureRecords) -> Explanation:
        """One explanation; ``skipped`` when the feature has no firing example."""
        firing = firing_examples(feat)
        if not firing:
            return Explanation(
                feat.feature_id, None, "skipped", self.name, detail=f"no firing examples among {len(feat.examples)}"
            )
        top = [ex for ex in firing if ex.kind == "top"] or firing
        counts: Counter[str] = Counter()
        level_sum: Counter[str] = Counter()
        first_seen: dict[str, int] = {}
        for ex in top:
            for word, level in _strong_words(ex):
                counts[word] += 1
                level_sum[word] += level
                first_seen.setdefault(word, len(first_seen))
        words = sorted(counts, key=lambda w: (-counts[w], -level_sum[w], first_seen[w]))[: self.n_words]
        concepts: list[str] = []
        for hit in feat.concepts:
            tag = f"{hit.level0} / {hit.level1}"
            if tag not in concepts:
                concepts.append(tag)
        strongest = max(top, key=lambda ex: max(ex.acts, default=0.0))
        context = peak_window(strongest)
        if len(context) > self.context_chars:
            context = context[: self.context_chars].rstrip() + "..."
        parts = [f"Fires on {', '.join(_quote(w) for w in words)}" if words else "Fires"]
        if concepts:
            parts.append(f"in {'; '.join(concepts[: self.n_concepts])} contexts")
        text = " ".join(parts)
        if context:
            text += f", e.g. {_quote(context)}" if (words or concepts) else f" on text like {_quote(context)}"
        return Explanation(feat.feature_id, text, "ok", self.name)

    def explain_many(
        self,
        features: Sequence[FeatureRecords],
        *,
        progress: bool = True,
        on_result: Callable[[Explanation], None] | None = None,
    ) -> list[Explanation]:
        """Explain every feature in order; ``on_result`` gets each explanation as soon as it exists."""
        from tqdm.auto import tqdm

        out: list[Explanation] = []
        for feat in tqdm(features, desc="explanations", unit="feature", disable=not progress):
            result = self.explain(feat)
            out.append(result)
            if on_result is not None:
                on_result(result)
        return out


# -- LLM explainer -------------------------------------------------------------------------------------------

_SYSTEM_PROMPT = """\
You are helping to interpret the hidden features ("neurons") of a language model. Each neuron reacts to \
some particular kind of text, and you will work out what from examples.

Every example is a short passage the model read. Its activation is given per token as a level from 0 (silent) \
to 10 (the strongest this neuron gets); after each passage the tokens with a level above 0 are listed as \
"token<TAB>level". Examples are grouped by their peak level, strongest first; passages where the neuron stays \
silent may follow, for contrast.

Find what the high-level tokens share: particular words or their variants, a topic, a kind of request or \
intent, a writing style, a position in the sentence. Be short and specific: name the concrete words or \
patterns when they matter, and the kind of context the neuron needs. Avoid vague answers such as "various \
words" or "language".

You may think first, but end your reply with a single line of the form
Explanation: <one sentence saying what the neuron responds to>"""


def _prompt_examples(feat: FeatureRecords, max_examples: int) -> list[ActivationExample]:
    """Top examples first (up to half the budget), then one per level bin round-robin from the highest, then
    any remaining top examples; a fifth of the budget goes to silent examples when there are any."""
    firing = firing_examples(feat)
    quiet = [ex for ex in feat.examples if ex.tokens and not _fires(ex)]
    n_quiet = min(len(quiet), max_examples // 5)
    budget = max_examples - n_quiet
    top = [ex for ex in firing if ex.kind == "top"]
    rest = [ex for ex in firing if ex.kind != "top"]
    n_top = min(len(top), math.ceil(budget / 2))
    chosen = top[:n_top]
    by_level: dict[int, list[ActivationExample]] = {}
    for ex in rest:
        by_level.setdefault(max(_levels(ex), default=0), []).append(ex)
    queues = [by_level[level] for level in sorted(by_level, reverse=True)]
    while len(chosen) < budget and any(queues):
        for queue in queues:
            if queue and len(chosen) < budget:
                chosen.append(queue.pop(0))
    chosen += top[n_top : n_top + max(0, budget - len(chosen))]
    return chosen + quiet[:n_quiet]


def build_explain_messages(feat: FeatureRecords, *, max_examples: int = 10) -> list[dict[str, str]]:
    """Chat messages asking an LLM to explain ``feat`` from up to ``max_examples`` of its examples."""
    chosen = _prompt_examples(feat, max_examples)
    firing = [ex for ex in chosen if _fires(ex)]
    quiet = [ex for ex in chosen if not _fires(ex)]
    groups: dict[int, list[ActivationExample]] = {}
    for ex in firing:
        groups.setdefault(max(_levels(ex)), []).append(ex)
    lines: list[str] = []
    number = 0
    for level in sorted(groups, reverse=True):
        lines.append(f"== Peak level {level} ==")
        for ex in groups[level]:
            number += 1
            lines.append(f"Example {number}: {escape_text(ex.text)}")
            for tok, lv in zip(ex.tokens, _levels(ex)):
                if lv > 0:
                    lines.append(f"{escape_text(tok)}\t{lv}")
            lines.append("")
    if quiet:
        lines.append("== Silent (level 0 everywhere) ==")
        for ex in quiet:
            number += 1
            lines.append(f"Example {number}: {escape_text(ex.text)}")
        lines.append("")
    lines.append('What does this neuron respond to? Finish with one line starting "Explanation:".')
    return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


_WRAPPERS = (("**", "**"), ("__", "__"), ('"', '"'), ("'", "'"), ("`", "`"), ("“", "”"), ("‘", "’"),
             ("*", "*"), ("_", "_"))


def _clean_answer(text: str) -> str:
    """``text`` on one line without wrapping quotes or Markdown emphasis (only when the wrapper is not also
    used inside, so ``"stab" or "knife"`` keeps its quotes)."""
    text = " ".join(text.split())
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            inner = text[len(left) : len(text) - len(right)]
            if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right) \
                    and left not in inner and right not in inner:
                text = inner.strip()
                changed = True
    return text


def parse_explanation(reply: str) -> str | None:
    """The explanation in an LLM reply, or None when there is no usable one.

    Reasoning blocks and code fences are dropped; the last line labelled ``Explanation:`` wins (its text, or the
    next non-empty line when the label stands alone); an unlabelled reply is accepted only when it is a single
    line. Surrounding quotes / Markdown emphasis are removed. Empty, placeholder, refusal-like or longer than
    :data:`MAX_EXPLANATION_CHARS` answers give None.
    """
    lines = [line.strip() for line in strip_fences(strip_reasoning(reply)).splitlines()]
    lines = [line for line in lines if line]
    answer: str | None = None
    for i, line in enumerate(lines):
        match = _LABEL.match(line)
        if match:
            found = match.group(1).strip()
            if not _clean_answer(found) and i + 1 < len(lines):
                found = lines[i + 1]
            answer = found
    if answer is None:
        if len(lines) != 1:
            return None
        answer = lines[0]
    answer = _clean_answer(answer)
    if not answer or len(answer) > MAX_EXPLANATION_CHARS:
        return None
    if answer.casefold().strip(" .") in _PLACEHOLDERS or _REFUSAL.search(answer):
        return None
    return answer


def _label_complete(reply: str) -> bool:
    """Whether the last ``Explanation:`` line of a cut-off reply ended before the cut (a newline follows it)."""
    text = strip_fences(strip_reasoning(reply))
    lines = text.splitlines(keepends=True)
    for i in range(len(lines) - 1, -1, -1):
        if _LABEL.match(lines[i].strip()):
            return lines[i].endswith("\n") and i + 1 < len(lines) and bool("".join(lines[i + 1 :]).strip())
    return False


class OpenAIExplainer:
    """LLM explanations through an OpenAI-compatible endpoint, requests sent concurrently by ``client``.

    ``max_examples`` bounds the examples shown per feature; ``max_tokens`` bounds each reply (reasoning models
    need room to think before the ``Explanation:`` line; None leaves it to the client config). A reply cut at
    ``max_tokens`` before its ``Explanation:`` line ended is ``unparseable``.
    """

    def __init__(self, client: LLMClient, *, max_examples: int = 10, max_tokens: int | None = 2048) -> None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        self.client = client
        self.max_examples = max_examples
        self.max_tokens = max_tokens
        self.name = f"openai:{client.config.model}"

    def _result(self, feat: FeatureRecords, result: Completion | LLMError) -> Explanation:
        if isinstance(result, LLMError):
            return Explanation(feat.feature_id, None, "failed", self.name, detail=str(result))
        tokens = {"prompt_tokens": result.prompt_tokens or 0, "completion_tokens": result.completion_tokens or 0}
        text = parse_explanation(result.text)
        if result.finish_reason == "length" and not _label_complete(result.text):
            text = None
            detail = f"reply cut at the max_tokens limit; raise max_tokens: {snippet(result.text)}"
        else:
            detail = f"no usable 'Explanation:' line in reply: {snippet(result.text)}"
        if text is None:
            return Explanation(feat.feature_id, None, "unparseable", self.name, detail=detail, **tokens)
        return Explanation(feat.feature_id, text, "ok", self.name, **tokens)

    def explain_many(
        self,
        features: Sequence[FeatureRecords],
        *,
        progress: bool = True,
        on_result: Callable[[Explanation], None] | None = None,
    ) -> list[Explanation]:
        """Explain every feature (input order kept); ``on_result`` gets each explanation as its reply arrives.
        Features without firing examples are ``skipped`` without a request; LLM errors become ``failed``."""
        results: list[Explanation | None] = [None] * len(features)
        todo: list[int] = []
        for i, feat in enumerate(features):
            if firing_examples(feat):
                todo.append(i)
                continue
            results[i] = Explanation(
                feat.feature_id, None, "skipped", self.name, detail=f"no firing examples among {len(feat.examples)}"
            )
            if on_result is not None:
                on_result(results[i])

        def done(index: int, result: Completion | LLMError) -> None:
            explanation = self._result(features[todo[index]], result)
            results[todo[index]] = explanation
            if on_result is not None:
                on_result(explanation)

        messages = [build_explain_messages(features[i], max_examples=self.max_examples) for i in todo]
        if messages:
            params = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
            self.client.complete_many(messages, progress=progress, on_result=done, desc="explanations", **params)
        return [r for r in results if r is not None]


class Explainer(Protocol):
    """Anything that turns features into explanations (``name`` goes into ``Explanation.method``)."""

    name: str

    def explain_many(
        self,
        features: Sequence[FeatureRecords],
        *,
        progress: bool = True,
        on_result: Callable[[Explanation], None] | None = None,
    ) -> list[Explanation]: ...
