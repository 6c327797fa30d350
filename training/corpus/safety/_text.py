"""Small text helpers shared by the safety-set builder, loader and tests.

* `word_ngrams` / `jaccard`: the near-duplicate measure used against the held-out guard evaluation set
  (lowercase word 5-grams, punctuation dropped, every CJK / kana / Hangul character counted as one word, a text
  shorter than n words is a single n-gram). It follows the convention of `benchmarks/data/make_guard_eval.py`.
* `normalise`: the key used for exact de-duplication (case, whitespace and punctuation folded).
* `guess_lang` / `guess_style`: cheap heuristics that tag upstream items that carry no language or style field.
  They are approximate by design and only used for slicing reports; handwritten items carry their own tags.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["guess_lang", "guess_style", "jaccard", "normalise", "word_ngrams", "NearDupIndex"]

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+", re.UNICODE)


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())


def word_ngrams(text: str, n: int = 5) -> frozenset[tuple[str, ...]]:
    """Lowercase word n-grams of `text` (CJK characters count as words); short texts give one n-gram."""
    words = _tokens(text)
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|, 0.0 when both are empty."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def normalise(text: str) -> str:
    """Exact-duplicate key: NFKC, lowercase, punctuation dropped, whitespace collapsed."""
    return " ".join(_tokens(text))


class NearDupIndex:
    """Finds, for a query text, the highest word-5-gram Jaccard similarity to any indexed text.

    An inverted index over n-grams keeps this fast: only texts that share at least one n-gram are compared.
    """

    def __init__(self, texts: Iterable[str], n: int = 5) -> None:
        self.n = n
        self.grams: list[frozenset] = []
        self._index: dict[tuple[str, ...], list[int]] = {}
        for i, text in enumerate(texts):
            g = word_ngrams(text, n)
            self.grams.append(g)
            for gram in g:
                self._index.setdefault(gram, []).append(i)

    def best(self, text: str) -> tuple[float, int | None]:
        """(highest Jaccard, index of that text) over the indexed texts; (0.0, None) when nothing is shared."""
        g = word_ngrams(text, self.n)
        candidates: set[int] = set()
        for gram in g:
            candidates.update(self._index.get(gram, ()))
        best, where = 0.0, None
        for i in sorted(candidates):
            j = jaccard(g, self.grams[i])
            if j > best:
                best, where = j, i
        return best, where


# ------------------------------------------------------------------------------------------------ language

_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the and is are you to of a in that it for how what with my i can this do be on as if at by from an or not "
        "no all any was were will would should could have has had they them their there then than so but about into "
        "out up more most some such only also just like get your me we our us he she his her who which why when "
        "where does did don't it's i'm".split()
    ),
    "es": frozenset("el la los las que y en un una por para cómo es mi con del al qué lo pero muy está tengo".split()),
    "fr": frozenset("le la les des et un une est que pour comment je mon ma dans avec du au qui pas ne vous tu".split()),
    "de": frozenset(
        "der die das und ist ich nicht ein eine wie mit zu den für mein meine auf sich dem des du wird kann im ohne "
        "darf wo oder aber auch".split()
    ),
    "it": frozenset(
        "il lo gli di che è un una per come non mi con del della sono ho questo si nel dei tra cosa quanto senza".split()
    ),
    "pt": frozenset("não um uma para como é meu minha com da em os você isso mais ao pelo me ensina faz".split()),
}


def guess_lang(text: str) -> str:
    """ISO 639-1 guess from the script, then (for Latin script) from common function words; default "en"."""
    counts = {"han": 0, "kana": 0, "hangul": 0, "cyr": 0, "arab": 0, "deva": 0, "latin": 0, "thai": 0, "greek": 0}
    for ch in text:
        o = ord(ch)
        if 0x3040 <= o <= 0x30FF:
            counts["kana"] += 1
        elif 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
            counts["han"] += 1
        elif 0xAC00 <= o <= 0xD7AF:
            counts["hangul"] += 1
        elif 0x0400 <= o <= 0x04FF:
            counts["cyr"] += 1
        elif 0x0600 <= o <= 0x06FF:
            counts["arab"] += 1
        elif 0x0900 <= o <= 0x097F:
            counts["deva"] += 1
        elif 0x0E00 <= o <= 0x0E7F:
            counts["thai"] += 1
        elif 0x0370 <= o <= 0x03FF:
            counts["greek"] += 1
        elif ch.isalpha() and o < 0x0250:
            counts["latin"] += 1
    letters = sum(counts.values()) or 1
    if counts["kana"] > 0.05 * letters:
        return "ja"
    if (counts["han"]) > 0.3 * letters:
        return "zh"
    if counts["hangul"] > 0.3 * letters:
        return "ko"
    if counts["cyr"] > 0.5 * letters:
        return "ru"
    if counts["arab"] > 0.5 * letters:
        return "fa" if re.search("[پچژگک]", text) else "ar"
    if counts["deva"] > 0.5 * letters:
        return "hi"
    if counts["thai"] > 0.5 * letters:
        return "th"
    if counts["greek"] > 0.5 * letters:
        return "el"
    words = [w for w in _tokens(text) if w.isalpha()]
    if not words:
        return "en"
    scores = {lang: sum(w in sw for w in words) for lang, sw in _STOPWORDS.items()}
    best = max(scores, key=lambda k: (scores[k], k == "en"))
    # Prefer English unless another language is clearly ahead (short English texts share "a", "de", ...), or is
    # the only one with function words in a text with accented letters.
    if best != "en" and scores[best] >= max(2, 1.5 * scores["en"]):
        return best
    accented = any(ch.isalpha() and 0x00C0 <= ord(ch) < 0x0250 for ch in text)
    if best != "en" and scores[best] >= 1 and scores["en"] == 0 and accented:
        return best
    return "en"


# --------------------------------------------------------------------------------------------------- style

_LEET_RE = re.compile(r"\b\w*[a-z]\w*\d\w*[a-z]\w*\b|\b[0-9]+[a-z]+[0-9]+\b", re.IGNORECASE)
_SPACED_RE = re.compile(r"(?:\b\w\b ){6,}")
_ROLEPLAY_RE = re.compile(
    r"\b(pretend|role-?play|roleplay|you are (?:now )?(?:a|an|my)|act as|in character|imagine you|"
    r"write a (?:short )?(?:story|scene|novel|poem|monologue|script|dialogue)|fictional|in the style of|"
    r"as my (?:therapist|grandmother|grandma)|let'?s play)\b",
    re.IGNORECASE,
)
_INSTRUCTION_RE = re.compile(
    r"^(?:please\s+)?(write|create|give|tell|describe|generate|provide|explain|list|detail|compose|teach|"
    r"instruct|help|make|draft|show|outline|design|develop|produce|suggest|summari[sz]e|translate|build|"
    r"find|recommend|share|craft|output|reveal|recite|complete|continue|infer|rewrite|add|now)\b",
    re.IGNORECASE,
)
_INDIRECT_RE = re.compile(
    r"\b(hypothetically|asking for a friend|a friend of mine|my friend wants|in theory|theoretically|"
    r"for a (?:novel|book|story|research|class|paper)|just curious|what would happen if|someone|people who)\b",
    re.IGNORECASE,
)


def guess_style(text: str) -> str:
    """One of direct / instruction / roleplay / indirect / obfuscated for an upstream prompt (heuristic)."""
    stripped = text.strip()
    if _SPACED_RE.search(stripped + " ") or len(_LEET_RE.findall(stripped)) >= 2:
        return "obfuscated"
    if _ROLEPLAY_RE.search(stripped):
        return "roleplay"
    if _INSTRUCTION_RE.match(stripped):
        return "instruction"
    if _INDIRECT_RE.search(stripped):
        return "indirect"
    return "direct"
