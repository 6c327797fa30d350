"""Cheap, dependency-free language and script detection for the ``multilingual_gap`` rule kind.

The neuron database's safety features were found mostly on English text; in other languages they often stay
dark (see ``docs/results/neuron_db.md``). A ``multilingual_gap`` rule needs to know the prompt's language to
say "this prompt is in a language where our features are weak". Two steps:

1. **Script**: every letter is assigned a script through its Unicode character name (``unicodedata``); the
   script with the most letters wins. Most non-Latin scripts name the language directly (Hangul -> ko, Thai ->
   th, Hebrew -> he, Greek -> el, Han with some Kana -> ja, Han alone -> zh...), with a few letter checks
   inside a script (Ukrainian/Serbian letters in Cyrillic, Persian/Urdu letters in Arabic).
2. **Latin-script languages** are told apart by small stopword profiles (en, it, es, fr, de, pt, nl, vi, tr,
   pl, id), each word weighted by 1/(number of profiles containing it), plus bonuses for tell-tale diacritics
   (Vietnamese tone marks, Turkish ş/ğ/ı, Polish ą/ę/ł, Portuguese ã/õ, Spanish ñ, German ß...).

Short or ambiguous text gives ``"und"`` (undetermined) with a low confidence. :func:`detect_language` never
raises: any unexpected input yields ``"und"``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

UNDETERMINED = "und"


@dataclass(frozen=True)
class LanguageGuess:
    """A language guess: ISO 639-1 ``code`` (or ``"und"``), ISO 15924 ``script`` and ``confidence`` in [0, 1]."""

    code: str
    script: str
    confidence: float

    @property
    def determined(self) -> bool:
        """False for ``"und"``."""
        return self.code != UNDETERMINED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"code": self.code, "script": self.script, "confidence": round(self.confidence, 3)}


# (prefix of the Unicode character name, ISO 15924 script code, language the script implies or None)
_SCRIPTS: tuple[tuple[str, str, str | None], ...] = (
    ("LATIN", "Latn", None),
    ("CJK UNIFIED IDEOGRAPH", "Hani", "zh"),
    ("CJK COMPATIBILITY IDEOGRAPH", "Hani", "zh"),
    ("HIRAGANA", "Kana", "ja"),
    ("KATAKANA", "Kana", "ja"),
    ("HANGUL", "Hang", "ko"),
    ("DEVANAGARI", "Deva", "hi"),
    ("ARABIC", "Arab", "ar"),
    ("CYRILLIC", "Cyrl", "ru"),
    ("THAI", "Thai", "th"),
    ("HEBREW", "Hebr", "he"),
    ("GREEK", "Grek", "el"),
    ("BENGALI", "Beng", "bn"),
    ("TAMIL", "Taml", "ta"),
    ("TELUGU", "Telu", "te"),
    ("GUJARATI", "Gujr", "gu"),
    ("GURMUKHI", "Guru", "pa"),
    ("KANNADA", "Knda", "kn"),
    ("MALAYALAM", "Mlym", "ml"),
    ("GEORGIAN", "Geor", "ka"),
    ("ARMENIAN", "Armn", "hy"),
    ("ETHIOPIC", "Ethi", "am"),
    ("KHMER", "Khmr", "km"),
    ("LAO", "Laoo", "lo"),
    ("MYANMAR", "Mymr", "my"),
    ("SINHALA", "Sinh", "si"),
)
_SCRIPT_LANGUAGE = {code: lang for _, code, lang in _SCRIPTS}
# scripts shared by several languages: the default guess is less certain
_AMBIGUOUS_SCRIPTS = {"Hani", "Arab", "Cyrl", "Deva"}

_STOPWORDS: dict[str, str] = {
    "en": "the and of to a in is it that for you with on this are be was as have not what how can i my do does "
          "your from they we an or but if at by will would should about which there their me please make get "
          "some any who why when where these those has had been were",
    "it": "il lo la i gli le di del della dei delle che e è per non un una uno con sono come mi si ci ma anche "
          "questo questa cosa perché più nel nella al alla da dal ho hai ha essere fare posso puoi qual quale "
          "dove quando molto tutto può sei mio mia tuo questi quello gli anche ancora",
    "es": "el la los las de del que y en un una es por para con no se su al lo como más pero sus le ya o este "
          "esta porque muy sin sobre también me hay donde cómo qué puedo hacer estoy son tengo ser cuando todo "
          "mi yo puedes puede tiene fue hay eso esto usted nosotros",
    "fr": "le la les de des du un une et est en que qui dans pour pas ne sur au aux avec ce cette il elle je "
          "vous nous mais ou sont par plus comme on se son sa ses mon ma être faire comment pourquoi quoi c l d "
          "qu j n très aussi peux peut suis avez sommes cela ça leur",
    "de": "der die das und ist nicht ein eine einen einem zu mit von den dem des auf für sich es ich du sie wir "
          "ihr wie was auch im in an aber oder wenn kann können bitte noch nur sind war hat haben werden wird "
          "mein dein man warum wo bei über mir dir mich dich diese dieser dieses kannst bin",
    "pt": "o a os as de do da dos das que e é em no na nos nas um uma para por com não se mais como mas ao à eu "
          "você ele ela isso isto este esta são está ser fazer muito também quando porque meu minha seu sua "
          "posso onde qual pode podem tem foi há nós vocês",
    "nl": "de het een en van is dat die niet te in op voor met zijn er aan ook als maar om ik je jij we wij hij "
          "zij wat hoe kan kunnen worden wordt naar bij dit deze uit nog geen mijn waarom waar hebben heb heeft "
          "was of dan kun mij jullie",
    "vi": "và của là có không những được cho người một các này với trong để khi đã tôi bạn làm thế nào gì như "
          "từ đến về cũng ra thì sẽ nhưng nếu vì đó hay rất còn lại cách tại sao muốn biết",
    "tr": "ve bir bu da de için ile ne ben sen o var yok mı mi mu mü nasıl neden gibi daha çok ama veya şu "
          "olan olarak kadar sonra her bana beni bunu nedir değil ise en diye ki yapmak nerede",
    "pl": "i w z na nie się to że do jest o jak co a od po dla ale czy tak jestem mnie mi ten ta są być przez "
          "jego jej już tylko może można który która które też bardzo gdzie dlaczego zrobić",
    "id": "yang dan di ini itu dengan untuk dari tidak akan ke ada saya kamu anda apa bagaimana adalah bisa cara "
          "dalam pada juga atau karena seperti mereka kami kita sudah belum harus membuat agar oleh tentang jika "
          "saja lebih sangat mengapa dimana",
}
LATIN_LANGUAGES: tuple[str, ...] = tuple(_STOPWORDS)
"""Latin-script languages told apart by stopword profiles."""

_PROFILES: dict[str, frozenset[str]] = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
_WEIGHTS: dict[str, dict[str, float]] = {}
for _word in {w for ws in _PROFILES.values() for w in ws}:
    _langs = [lang for lang, ws in _PROFILES.items() if _word in ws]
    _WEIGHTS[_word] = {lang: 1.0 / len(_langs) for lang in _langs}
del _word, _langs

# (characters, language, bonus per word containing one of them)
_DIACRITICS: tuple[tuple[str, str, float], ...] = (
    ("ơưđă", "vi", 1.0),
    ("şğı", "tr", 1.0),
    ("ąęłńśźżć", "pl", 1.0),
    ("ãõ", "pt", 1.0),
    ("ñ¿¡", "es", 1.0),
    ("ß", "de", 1.0),
    ("äöü", "de", 0.5),
    ("œêâîûëï", "fr", 0.5),
    ("ìò", "it", 0.5),
)
_VI_EXTENDED = (0x1EA0, 0x1EF9)  # Latin Extended Additional: Vietnamese tone-marked vowels

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_MIN_LETTERS = 3
_MIN_WORDS = 3
_MIN_LATIN_SCORE = 1.5


@lru_cache(maxsize=4096)
def _script_of(ch: str) -> str | None:
    """ISO 15924 code of a letter or combining sign, None for anything else (digits, punctuation, symbols)."""
    if not unicodedata.category(ch).startswith(("L", "M")):
        return None
    name = unicodedata.name(ch, "")
    for prefix, code, _ in _SCRIPTS:
        if name.startswith(prefix):
            return code
    return None


def script_counts(text: str) -> Counter[str]:
    """Number of letters per script in ``text``."""
    counts: Counter[str] = Counter()
    for ch in text:
        code = _script_of(ch)
        if code is not None:
            counts[code] += 1
    return counts


def detect_language(text: Any) -> LanguageGuess:
    """Guess the language and script of ``text``; ``"und"`` with low confidence when unsure. Never raises."""
    try:
        if not isinstance(text, str):
            return LanguageGuess(UNDETERMINED, "Zyyy", 0.0)
        return _detect(text)
    except Exception:  # noqa: BLE001 - a detector must never take the guard down
        return LanguageGuess(UNDETERMINED, "Zyyy", 0.0)


def _detect(text: str) -> LanguageGuess:
    counts = script_counts(text)
    # Han mixed with enough Kana is Japanese
    if counts.get("Kana", 0) and counts["Kana"] >= 0.05 * (counts["Kana"] + counts.get("Hani", 0)):
        counts["Jpan"] = counts.pop("Kana") + counts.pop("Hani", 0)
    total = sum(counts.values())
    if total < _MIN_LETTERS:
        return LanguageGuess(UNDETERMINED, counts.most_common(1)[0][0] if counts else "Zyyy", 0.0)
    script, n = counts.most_common(1)[0]
    dominance = n / total
    if script == "Latn":
        return _detect_latin(text, dominance)
    code = "ja" if script == "Jpan" else _refine_in_script(script, text)
    dense = script in ("Hani", "Jpan", "Hang", "Thai")
    length_factor = min(1.0, n / (6 if dense else 15))
    certainty = 0.9 if script in _AMBIGUOUS_SCRIPTS else 1.0
    return LanguageGuess(code, script, round(dominance * length_factor * certainty, 3))


def _refine_in_script(script: str, text: str) -> str:
    """Tell languages sharing a script apart by letters only some of them use."""
    if script == "Cyrl":
        if any(c in text for c in "ђћџљњј"):
            return "sr"
        if any(c in text for c in "ієїґ") and not any(c in text for c in "ыэъё"):
            return "uk"
    if script == "Arab":
        if any(c in text for c in "ٹڈڑںے"):
            return "ur"
        if any(c in text for c in "پچژگکی"):
            return "fa"
    return _SCRIPT_LANGUAGE.get(script) or UNDETERMINED


def _latin_scores(words: list[str]) -> Counter[str]:
    scores: Counter[str] = Counter()
    for w in words:
        for lang, weight in _WEIGHTS.get(w, {}).items():
            scores[lang] += weight
        if any(_VI_EXTENDED[0] <= ord(c) <= _VI_EXTENDED[1] for c in w):
            scores["vi"] += 1.0
        for chars, lang, bonus in _DIACRITICS:
            if any(c in chars for c in w):
                scores[lang] += bonus
    return scores


def _detect_latin(text: str, dominance: float) -> LanguageGuess:
    words = [w.lower() for w in _WORD.findall(unicodedata.normalize("NFC", text))]
    if len(words) < _MIN_WORDS:
        return LanguageGuess(UNDETERMINED, "Latn", 0.1)
    ranked = _latin_scores(words).most_common(2)
    if not ranked or ranked[0][1] < _MIN_LATIN_SCORE:
        return LanguageGuess(UNDETERMINED, "Latn", 0.1)
    (lang, s1), s2 = ranked[0], (ranked[1][1] if len(ranked) > 1 else 0.0)
    margin = (s1 - s2) / s1
    evidence = min(1.0, s1 / 3.0)
    confidence = margin * evidence * dominance
    if margin < 0.15:
        return LanguageGuess(UNDETERMINED, "Latn", round(min(confidence, 0.2), 3))
    return LanguageGuess(lang, "Latn", round(confidence, 3))
