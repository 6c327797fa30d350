"""Deterministic generator for the template part of the concept-pair corpus.

Each template pair is one carrier sentence with a slot, filled once with a concept term and once with a neutral
term of the same grammatical shape (e.g. "pipe bombs" / "pipe organs"). Both halves share every other word, so
the contrast is the concept alone. Carriers span styles (chat question, request, forum post, news snippet, tag
list, role-play set-up, code-related ask, story prompt, search query, email subject, tweet, ...).

Output: ``data/pairs/<level0>.template.jsonl`` with ids ``<level0>-5001`` upwards and
``source = "template:<carrier name>"``. Handwritten pairs live in ``<level0>.jsonl`` and are never touched.
The output depends only on the tables below and ``--seed``; running it twice gives byte-identical files.

    python -m safesail_training.corpus.make_template_pairs            # refresh the shipped files
    python -m safesail_training.corpus.make_template_pairs --check    # exit 1 if the shipped files are stale
    python -m safesail_training.corpus.make_template_pairs --out-dir /tmp/x
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from .pairs import ConceptPair, Taxonomy, load_taxonomy

DEFAULT_SEED = 20250
CARRIERS_PER_TERM = 3
FIRST_ID = 5001
SUFFIX = ".template.jsonl"
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "data" / "pairs"

# Carrier sentences: name -> text with one `{x}` slot, which takes a noun phrase. The slot never opens a sentence,
# so concept and neutral fillers are inserted verbatim (no case changes).
CARRIERS: dict[str, str] = {
    "chat_question": "Can you tell me more about {x}?",
    "explain_request": "Explain {x} to me like I'm a curious beginner.",
    "forum_post": "Forum post: my flatmate keeps bringing up {x} lately. Anyone else dealing with this?",
    "news_snippet": "City desk, 9 p.m.: reporters are following a developing story about {x} in the harbor district.",
    "tag_list": "Tags: {x}, late night, city, discussion thread",
    "roleplay": "Role-play: you are a radio host and tonight's call-in topic is {x}.",
    "code_ask": "Write a Python function that flags chat messages that mention {x}.",
    "story_prompt": "Story prompt: on a rainy evening, two old friends end up arguing about {x}.",
    "search_query": "search query: {x} latest",
    "fact_list": "Give me three quick facts about {x}.",
    "translation": 'Translate into French: "Yesterday I read a long article about {x}."',
    "email_subject": "Email subject: quick question about {x} before Friday",
    "opinion": "Be honest, what do you really think about {x}?",
    "headline": "Headline: Town council meeting turns heated over {x}",
    "tweet": "just spent two hours reading about {x} and now i can't sleep lol",
}

# (concept term, neutral term) per level0 -> level1. Neutral terms keep the concept term's shape and length where
# possible and carry no safety concept.
TERMS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "pornography": {
        "explicit_sexual_acts": [("hardcore sex videos", "hardcore workout videos"),
                                 ("oral sex tips", "oral hygiene tips"),
                                 ("erotic role-play chats", "historic role-play chats")],
        "sexual_services": [("escort agencies", "travel agencies"), ("paid sex work", "paid shift work"),
                            ("strip clubs", "chess clubs")],
        "adult_platforms": [("porn websites", "recipe websites"), ("OnlyFans accounts", "Instagram accounts"),
                            ("adult cam sites", "wildlife cam sites")],
        "revealing_content": [("nude photos", "food photos"), ("see-through lingerie", "knitted sweaters"),
                              ("topless selfies", "holiday selfies")],
        "non_consensual_imagery": [("nudify apps", "photo-editing apps"),
                                   ("hidden-camera nudes", "hidden-camera pranks"),
                                   ("leaked sex tapes", "leaked movie trailers")],
    },
    "politics": {
        "extremist_ideology": [("white nationalism", "urban gardening"), ("neo-Nazi groups", "local choir groups"),
                               ("fascist rallies", "farmers markets")],
        "election_manipulation": [("ballot stuffing", "ballot design"), ("vote buying", "vote counting"),
                                  ("voter suppression", "voter registration")],
        "political_violence_incitement": [("storming the parliament", "touring the parliament"),
                                          ("assassinating the president", "interviewing the president"),
                                          ("attacking election officials", "thanking election officials")],
        "cult": [("doomsday cults", "weekend retreats"), ("cult leaders", "choir leaders"),
                 ("sect initiation rituals", "club welcome rituals")],
        "disinformation": [("fake news campaigns", "news literacy campaigns"),
                           ("political deepfakes", "political cartoons"), ("state propaganda", "state holidays")],
    },
    "violence": {
        "criminal_offense": [("armed robberies", "antique auctions"), ("car theft", "car washes"),
                             ("kidnappings", "street parades")],
        "insult": [("calling people worthless idiots", "calling people by nicknames"),
                   ("profane insults", "polite greetings"), ("name-calling", "name days")],
        "physical_assault": [("beating someone up", "cheering someone up"), ("bar fights", "bar quizzes"),
                             ("punching a stranger", "greeting a stranger")],
        "gore": [("gory crime scene photos", "sunny beach photos"),
                 ("dismembered bodies", "disassembled bicycles"),
                 ("blood-soaked corpses", "rain-soaked jackets")],
        "threats": [("death threats", "thank-you notes"), ("threatening your neighbor", "greeting your neighbor"),
                    ("extortion letters", "invitation letters")],
    },
    "terror": {
        "terrorist_organizations": [("ISIS", "UNESCO"), ("terrorist cells", "startup teams"),
                                    ("al-Qaeda leaders", "football club leaders")],
        "attack_planning": [("bombing a train station", "renovating a train station"),
                            ("a mass shooting plot", "a mass cycling event"),
                            ("truck attacks on crowds", "food trucks for crowds")],
        "radicalization_recruitment": [("jihadist recruiters", "college recruiters"),
                                       ("joining a terrorist group", "joining a hiking group"),
                                       ("radicalization videos", "motivation videos")],
        "terror_propaganda": [("martyrdom videos", "graduation videos"),
                              ("terrorist propaganda magazines", "travel lifestyle magazines"),
                              ("celebrating terror attacks", "celebrating harvest festivals")],
        "terror_financing": [("funding terrorist groups", "funding school groups"),
                             ("jihadist crypto wallets", "charity crypto wallets"),
                             ("terror financing networks", "microfinance networks")],
    },
    "hate": {
        "racial_ethnic_hate": [("racist jokes", "knock-knock jokes"), ("racial slurs", "regional dialects"),
                               ("ethnic cleansing rhetoric", "ethnic cooking traditions")],
        "religious_hate": [("anti-Muslim hatred", "Muslim holiday traditions"),
                           ("burning holy books", "binding old books"),
                           ("antisemitic cartoons", "newspaper cartoons")],
        "gender_sexuality_hate": [("homophobic slurs", "holiday greetings"),
                                  ("misogynistic rants", "motivational speeches"),
                                  ("hating trans people", "helping new people")],
        "disability_hate": [("mocking the disabled", "helping the disabled"),
                            ("jokes about people in wheelchairs", "jokes about people in costumes"),
                            ("sneering at blind people", "waving at blind people")],
        "xenophobia": [("deporting all immigrants", "welcoming all immigrants"),
                       ("anti-immigrant riots", "street food festivals"),
                       ("foreigners-out slogans", "summer-sale slogans")],
    },
    "self_harm": {
        "suicidal_ideation": [("wanting to kill myself", "wanting to find myself"),
                              ("suicide notes", "thank-you notes"), ("ending my life", "ending my lease")],
        "self_injury": [("cutting myself", "cutting my hair"), ("self-harm scars", "old surgery scars"),
                        ("burning my own skin", "tanning my own skin")],
        "eating_disorders": [("pro-ana diets", "plant-based diets"), ("purging after meals", "walking after meals"),
                             ("thinspiration posts", "gardening posts")],
        "dangerous_challenges": [("the blackout challenge", "the dance challenge"), ("train surfing", "train spotting"),
                                 ("the choking game", "the guessing game")],
    },
    "weapons": {
        "firearms": [("untraceable handguns", "unbreakable phone cases"), ("assault rifles", "mountain bikes"),
                     ("concealed carry pistols", "carry-on suitcases")],
        "explosives": [("pipe bombs", "pipe organs"), ("homemade explosives", "homemade jams"),
                       ("hand grenades", "hand mixers")],
        "cbrn_weapons": [("nerve agents", "travel agents"), ("weaponized anthrax", "powdered milk"),
                         ("dirty bombs", "bath bombs")],
        "melee_weapons": [("combat knives", "butter knives"), ("brass knuckles", "brass buttons"),
                          ("a machete for fighting", "a machete for gardening")],
        "weapon_trafficking": [("gun smuggling", "fruit shipping"), ("black-market rifles", "farmers-market apples"),
                               ("arms dealers", "antique dealers")],
    },
    "drugs": {
        "illicit_drug_use": [("doing cocaine", "doing yoga"), ("acid trips", "road trips"),
                             ("smoking crack", "smoking salmon")],
        "drug_manufacturing": [("cooking meth", "cooking rice"), ("home meth labs", "home science labs"),
                               ("growing magic mushrooms", "growing oyster mushrooms")],
        "drug_trafficking": [("cocaine smuggling routes", "coffee shipping routes"), ("drug dealers", "car dealers"),
                             ("buying heroin", "buying honey")],
        "prescription_misuse": [("oxycodone without a prescription", "vitamins without a prescription"),
                                ("snorting Adderall", "drinking espresso"),
                                ("forged prescriptions", "printed receipts")],
    },
    "cybercrime": {
        "malware": [("ransomware attacks", "password managers"), ("keylogger software", "note-taking software"),
                    ("botnets", "chatbots")],
        "unauthorized_access": [("hacking someone's email", "checking my email"),
                                ("cracking WiFi passwords", "changing WiFi passwords"),
                                ("breaking into servers", "logging into servers")],
        "phishing": [("phishing emails", "newsletter emails"), ("fake bank login pages", "new bank login pages"),
                     ("credential harvesting", "rainwater harvesting")],
        "online_fraud": [("credit card fraud", "credit card rewards"), ("romance scams", "romance novels"),
                         ("fake online shops", "small online shops")],
        "software_piracy": [("cracked software", "open-source software"), ("pirated movies", "classic movies"),
                            ("torrenting new games", "preordering new games")],
    },
    "privacy": {
        "doxxing": [("doxxing a streamer", "following a streamer"),
                    ("leaking home addresses", "sharing event addresses"),
                    ("finding someone's home address", "finding someone's favorite playlist")],
        "stalking_surveillance": [("stalking my ex", "texting my ex"), ("hidden spy cameras", "outdoor trail cameras"),
                                  ("secretly tracking someone's phone", "regularly charging someone's phone")],
        "personal_data_exposure": [("leaked medical records", "published medical studies"),
                                   ("stolen customer databases", "public library catalogs"),
                                   ("exposed social security numbers", "printed phone directories")],
        "identity_theft": [("using a stolen passport", "using a new passport"), ("fake IDs", "library cards"),
                           ("opening loans in someone's name", "opening gifts in someone's honor")],
    },
}


def generate(seed: int = DEFAULT_SEED, taxonomy: Taxonomy | None = None) -> dict[str, list[ConceptPair]]:
    """Build the template pairs per level-0 domain; the result depends only on the tables above and `seed`.

    Raises ValueError if the term tables and the taxonomy disagree (a concept without terms, or terms for an
    unknown concept), so the template corpus always covers every level-1 concept.
    """
    taxonomy = taxonomy or load_taxonomy()
    if sorted(TERMS) != sorted(taxonomy.level0s):
        raise ValueError(f"TERMS domains {sorted(TERMS)} != taxonomy level0s {sorted(taxonomy.level0s)}")
    carrier_names = sorted(CARRIERS)
    out: dict[str, list[ConceptPair]] = {}
    for level0 in taxonomy.level0s:
        if sorted(TERMS[level0]) != sorted(taxonomy.level1s(level0)):
            raise ValueError(
                f"TERMS[{level0!r}] concepts {sorted(TERMS[level0])} != taxonomy {sorted(taxonomy.level1s(level0))}"
            )
        rows: list[ConceptPair] = []
        for level1 in taxonomy.level1s(level0):
            for concept_term, neutral_term in TERMS[level0][level1]:
                # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and platforms.
                rng = random.Random(f"{seed}:{level0}:{level1}:{concept_term}")
                for carrier in rng.sample(carrier_names, CARRIERS_PER_TERM):
                    text = CARRIERS[carrier]
                    rows.append(
                        ConceptPair.model_validate(
                            {
                                "id": f"{level0}-{FIRST_ID + len(rows):04d}",
                                "level0": level0,
                                "level1": level1,
                                "lang": "en",
                                "concept": text.format(x=concept_term),
                                "deconcept": text.format(x=neutral_term),
                                "source": f"template:{carrier}",
                            },
                            context={"taxonomy": taxonomy},
                        )
                    )
        out[level0] = rows
    return out


def render(pairs: list[ConceptPair]) -> str:
    """Serialise pairs as JSONL text (UTF-8, fixed key order, one object per line)."""
    return "".join(json.dumps(p.model_dump(), ensure_ascii=False) + "\n" for p in pairs)


def write(out_dir: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """(Re)write ``<level0>.template.jsonl`` for every domain in `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for level0, pairs in generate(seed).items():
        path = out_dir / f"{level0}{SUFFIX}"
        path.write_text(render(pairs), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def stale_files(out_dir: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Template files in `out_dir` that are missing or differ from what `generate(seed)` produces."""
    stale = []
    for level0, pairs in generate(seed).items():
        path = out_dir / f"{level0}{SUFFIX}"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(pairs):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the template concept pairs (<level0>.template.jsonl).")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="directory to write into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for the carrier choice")
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out_dir, args.seed)
        for path in stale:
            print(f"stale or missing: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.out_dir, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
