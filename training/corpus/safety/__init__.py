"""Labelled safety training set from licensed sources and handwritten items (see ``data/DATA_CARD.md``).

The loader API lives in `load`; `sources` reads the upstream wheels and `handwritten` the handwritten source
files, both used only by the builder ``training/corpus/make_safety_set.py``.
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
