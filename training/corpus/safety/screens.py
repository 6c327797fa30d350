"""Content screens of the safety-set builder: what upstream text is never shipped.

`is_high_hazard` finds high-hazard operational material (explosives, chemical and biological agents, drug
synthesis, firearm conversion, lethal methods) and, for self-harm prompts, method details; a *harmful* reply
that matches is withheld (`WITHHELD` is the reason recorded). `sexual_with_minor_words` is a conservative screen
for sexual wording next to any minor-related word (`MINOR_SCREEN`). The extractors in `pyrit_sets` and
`sources` and the builder ``make_safety_set`` apply them; the tests scan the shipped data with them.
"""

from __future__ import annotations

import re

__all__ = ["MINOR_SCREEN", "WITHHELD", "is_high_hazard", "sexual_with_minor_words"]

# High-hazard operational content: explosives, chemical / biological agents, drug synthesis, firearm manufacture
# or conversion, and lethal methods. A *harmful* reply that matches is not shipped (refusals always are).
_HAZARD_RE = re.compile(
    r"\b(pipe bomb|tatp|triacetone|anfo|detonat\w*|blasting cap|thermite|napalm|nitroglycerin|"
    r"ammonium nitrate|black powder|shrapnel|sarin|ricin|nerve agent|mustard gas|chlorine gas|anthrax|botulinum|"
    r"methamphetamine|pseudoephedrine|red phosphorus|birch reduction|fentanyl|lysergic|mimosa hostilis|"
    r"acid/base extraction|morphine extraction|opium latex|auto sear|lightning link|full[- ]auto conversion|"
    r"3d[- ]printed (?:gun|firearm|barrel)|fgc-9|ghost gun|serial number removal|poison dart|"
    r"synthesi[sz]e|synthesis route|precursor|lethal dose|sodium nitrite|femoral|noose|decapitat\w*|guillotine|"
    r"bleach)\b",
    re.IGNORECASE,
)
# Self-harm and suicide method details, checked when the prompt or the domain is about self-harm.
_SELF_HARM_TOPIC_RE = re.compile(
    r"\b(self[- ]?harm\w*|suicid\w*|kill (?:my|your)self|end (?:my|your) life|cut(?:ting)? (?:my|your)self|"
    r"hurt (?:my|your)self|starv\w*|purg\w*|anorexi\w*|bulimi\w*|binge)\b",
    re.IGNORECASE,
)
_SELF_HARM_METHOD_RE = re.compile(
    r"\b(razors?|blades?|wrists?|arter(?:y|ies)|overdos\w*|ligature|hang(?:ing)?|carbon monoxide|"
    r"induc\w* vomiting|vomit\w*|purg\w*|laxatives?|insulin|dos(?:e|es|ing|age)|poison\w*|suffocat\w*|"
    r"strangl\w*|chok\w*|incisions?|cuts?|thighs?|pills?|necks?|throat|burn\w*|guns?|revolver|bullets?|trigger)\b",
    re.IGNORECASE,
)


# Conservative screen: sexual wording together with any minor-related word. Matching upstream items are never
# shipped (this drops some harmless texts, e.g. a "son" in a different sentence, by design).
_SEXUAL_RE = re.compile(
    r"\b(sex\w*|erotic\w*|nude\w*|naked|porn\w*|explicit|nsfw|genital\w*|orgasm\w*|horny|fetish\w*|lewd)\b",
    re.IGNORECASE,
)
_MINOR_RE = re.compile(
    r"\b(child|children|kids?|minors?|teen\w*|underage|under-age|puberty|pubescent|preteen|school\w*|student\w*|"
    r"young|youth|girls?|boys?|daughter|son|niece|nephew|loli\w*|shota|bab(?:y|ies)|infant|toddler|juvenile|"
    r"\d{1,2}[- ]years?[- ]old)\b",
    re.IGNORECASE,
)


def sexual_with_minor_words(*texts: str | None) -> bool:
    """True when the texts together contain sexual wording and a minor-related word (see the regexes above)."""
    joined = " ".join(t for t in texts if t)
    return bool(_SEXUAL_RE.search(joined) and _MINOR_RE.search(joined))


def is_high_hazard(response: str, prompt: str = "", domain: str | None = None) -> bool:
    """True when a reply carries high-hazard operational material (see `_HAZARD_RE`), or, for a prompt or domain
    about self-harm, method details (`_SELF_HARM_METHOD_RE`)."""
    if _HAZARD_RE.search(response):
        return True
    if domain == "self_harm" or _SELF_HARM_TOPIC_RE.search(prompt):
        return bool(_SELF_HARM_METHOD_RE.search(response))
    return False


WITHHELD = "harmful reply withheld: high-hazard operational or self-harm method content"
MINOR_SCREEN = "sexual wording together with a minor-related word (conservative screen, never shipped)"
