"""Extractors for the three file sets read from the ``pyrit==1.1.0`` wheel (MIT).

`extract_pyrit_templates`: jailbreak templates with a single prompt slot whose upstream licence allows
redistribution; `extract_pyrit_airt`: the AI Red Team's seed objectives (single- and multi-turn);
`extract_pyrit_harm`: prompt-response rows with graded human harm scores. Each reads the wheel through
`wheels` (forbidden paths refused), applies the screens of `screens`, tags language and style with `_text`, and
returns an `Extract` for the builder ``make_safety_set``. The other wheels' extractors are in `sources`.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import PurePosixPath
from typing import Any

import yaml

from ._text import guess_lang, guess_style
from .load import PLACEHOLDER
from .screens import MINOR_SCREEN, WITHHELD, is_high_hazard, sexual_with_minor_words
from .wheels import WHEELS, Extract, members, read_member

__all__ = ["extract_pyrit_airt", "extract_pyrit_harm", "extract_pyrit_templates"]


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
    for name in members(zf, _TEMPLATE_ROOT, ".yaml"):
        ex.read += 1
        rel = name[len(_TEMPLATE_ROOT):]
        doc = yaml.safe_load(read_member(zf, name)) or {}
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
        doc = yaml.safe_load(read_member(zf, name)) or {}
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
    for name in members(zf, _HARM_ROOT, ".csv"):
        lines = read_member(zf, name).splitlines(keepends=True)
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
            ex.drop(WITHHELD)
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

