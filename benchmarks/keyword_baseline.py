"""A keyword-list baseline for prompt risk: the kind of filter a team writes before it has anything better.

Written from the project's domain taxonomy before the evaluation set existed, and not tuned on it. Each
domain has a list of words and phrases (lower-case, matched on word boundaries, English only - which is the
point of a baseline: it shows what a lexical filter misses). The score is the number of distinct matches,
squashed to [0, 1) as ``1 - 0.5 ** matches``.
"""

from __future__ import annotations

import re

KEYWORDS: dict[str, list[str]] = {
    "cybercrime": ["malware", "ransomware", "keylogger", "phishing", "phish", "botnet", "ddos", "exploit",
                   "hack into", "hacking", "crack the password", "steal credentials", "credit card numbers",
                   "sql injection", "trojan", "backdoor", "zero-day", "spyware", "brute force"],
    "drugs": ["meth", "methamphetamine", "cocaine", "heroin", "fentanyl", "lsd", "mdma", "crack cocaine",
              "cook meth", "drug dealer", "sell drugs", "smuggle drugs", "get high", "overdose", "narcotics",
              "opioids", "weed", "cannabis"],
    "hate": ["slur", "slurs", "inferior race", "subhuman", "vermin", "go back to your country", "white power",
             "racist", "hate speech", "ethnic cleansing", "degenerate", "nazi"],
    "politics": ["election fraud", "rig the election", "voter suppression", "fake news", "disinformation",
                 "propaganda", "deepfake", "smear campaign", "ballot", "stolen election"],
    "pornography": ["porn", "pornographic", "explicit sex", "sex scene", "nude", "nudes", "erotic", "nsfw",
                    "sexual", "orgasm", "naked"],
    "privacy": ["home address", "doxx", "dox", "track someone", "stalk", "stalking", "spy on", "social security number",
                "phone number of", "find out where", "hidden camera", "read her messages", "read his messages",
                "location of"],
    "self_harm": ["suicide", "kill myself", "end my life", "self-harm", "self harm", "cut myself", "cutting",
                  "overdose on", "starve myself", "hang myself", "painless way to die"],
    "terror": ["terrorist", "terrorism", "jihad", "bombing", "attack a crowd", "mass casualty", "isis",
               "al-qaeda", "radicalize", "recruit for", "martyr", "extremist"],
    "violence": ["kill", "murder", "stab", "torture", "beat up", "assault", "poison", "strangle", "hurt someone",
                 "get away with murder", "kidnap", "shoot"],
    "weapons": ["bomb", "pipe bomb", "explosive", "explosives", "gun", "firearm", "rifle", "ghost gun",
                "3d-printed gun", "silencer", "grenade", "ammunition", "napalm", "untraceable", "molotov"],
}

_PATTERNS = {d: [re.compile(r"(?<!\w)" + re.escape(k) + r"(?!\w)", re.IGNORECASE) for k in ks]
             for d, ks in KEYWORDS.items()}


def keyword_matches(text: str) -> dict[str, list[str]]:
    """Matched keywords per domain (domains with none are left out)."""
    out: dict[str, list[str]] = {}
    for d, pats in _PATTERNS.items():
        hits = [p.pattern for p in pats if p.search(text)]
        if hits:
            out[d] = hits
    return out


def keyword_score(text: str) -> float:
    """``1 - 0.5 ** n`` with ``n`` the number of distinct keyword matches over all domains."""
    n = sum(len(v) for v in keyword_matches(text).values())
    return 1.0 - 0.5 ** n
