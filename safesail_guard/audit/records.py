"""One guard decision as the proxy hands it over (`AuditRecord`) and as the log gives it back (`AuditRow`).

`encode_record` validates a record and turns it into the column values of the ``records`` table: lists and
dicts become JSON text, the judged text becomes its sha256 (and the text itself only under
``store_text="full"``). Validation fails closed: an unknown stage or action, or a value JSON cannot hold, is an
`AuditError` naming the field, never a silently wrong row.
"""

from __future__ import annotations

import hashlib
import json
import math
import time as _time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from safesail_guard.audit.config import AuditError
from safesail_guard.policy.decision import ACTIONS

STAGES: tuple[str, ...] = ("prompt", "response", "final")
"""Stages of one request: the prompt check, the response check and the final verdict released to the client."""

MODES: tuple[str, ...] = ("local", "upstream")
"""Where the completion came from: the guard's own model or an upstream OpenAI-compatible API."""

COLUMNS: tuple[str, ...] = ("time", "request_id", "stage", "action", "policy", "rules", "features", "concepts",
                            "score", "key_id", "model", "mode", "endpoint", "text", "text_sha256", "latency_ms",
                            "extra")
"""Columns of the ``records`` table after ``id``, in insert order."""

_JSON_COLUMNS = ("rules", "features", "concepts", "extra")


@dataclass
class AuditRecord:
    """One guard decision, as the proxy logs it.

    ``features`` are the top fired features, each ``{"id", "layer", "activation", "normalized",
    "explanation"}`` (objects with ``to_dict()``, e.g. `FiredFeature`, are accepted); ``concepts`` maps a
    concept (risk domain) to its score in [0, 1]; ``text`` is the text this decision judged, stored according
    to `AuditConfig.store_text`; ``key_id`` is the client key's *id*, never the key itself.
    """

    request_id: str
    stage: str
    action: str
    policy: str = ""
    rules: list[str] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    concepts: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    key_id: str | None = None
    model: str = ""
    mode: str = "local"
    endpoint: str = ""
    text: str | None = None
    latency_ms: float | None = None
    time: float = field(default_factory=_time.time)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRow:
    """A stored decision: the row ``id`` (increasing, never reused), the record's fields and ``text_sha256``.

    ``text`` is None unless the log stored full text; ``text_sha256`` is None under ``store_text="none"`` or
    when the record had no text.
    """

    id: int
    time: float
    request_id: str
    stage: str
    action: str
    policy: str
    rules: list[str]
    features: list[dict[str, Any]]
    concepts: dict[str, float]
    score: float | None
    key_id: str | None
    model: str
    mode: str
    endpoint: str
    text: str | None
    text_sha256: str | None
    latency_ms: float | None
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @property
    def top_feature(self) -> dict[str, Any] | None:
        """The feature with the highest ``normalized`` activation (else ``activation``), or None."""
        def key(f: dict[str, Any]) -> float:
            v = f.get("normalized", f.get("activation"))
            return float(v) if isinstance(v, int | float) else -math.inf

        return max(self.features, key=key, default=None)

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> AuditRow:
        """Decode a ``SELECT id, <COLUMNS>`` row."""
        values = dict(zip(("id", *COLUMNS), row, strict=True))
        for name in _JSON_COLUMNS:
            values[name] = json.loads(values[name])
        return cls(**values)


def text_sha256(text: str) -> str:
    """Hex sha256 of ``text`` as UTF-8 (lone surrogates kept as-is, so every str has a hash)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode_record(record: AuditRecord, store_text: Literal["full", "hash", "none"]) -> tuple[Any, ...]:
    """Validate ``record`` and return its column values in `COLUMNS` order; bad fields raise `AuditError`."""
    if not isinstance(record, AuditRecord):
        raise AuditError(f"expected an AuditRecord, got {type(record).__name__}")
    _check_str(record.request_id, "request_id", allow_empty=False)
    _check_choice(record.stage, "stage", STAGES)
    _check_choice(record.action, "action", ACTIONS)
    _check_choice(record.mode, "mode", MODES)
    for name in ("policy", "model", "endpoint"):
        _check_str(getattr(record, name), name)
    if record.key_id is not None:
        _check_str(record.key_id, "key_id")
    if not isinstance(record.rules, list | tuple) or not all(isinstance(r, str) for r in record.rules):
        raise AuditError(f"audit record {record.request_id}: rules must be a list of rule names")
    features = _plain(list(record.features) if isinstance(record.features, list | tuple) else record.features,
                      "features")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise AuditError(f"audit record {record.request_id}: features must be a list of dicts")
    concepts = _plain(record.concepts, "concepts")
    if not isinstance(concepts, dict) or not all(v is None or isinstance(v, int | float) for v in concepts.values()):
        raise AuditError(f"audit record {record.request_id}: concepts must map concept names to numbers")
    extra = _plain(record.extra, "extra")
    if not isinstance(extra, dict):
        raise AuditError(f"audit record {record.request_id}: extra must be a dict")
    when = _number(record.time, "time")
    if when is None:
        raise AuditError(f"audit record {record.request_id}: time must be a finite number (seconds since the epoch)")
    text, digest = None, None
    if record.text is not None:
        if not isinstance(record.text, str):
            raise AuditError(f"audit record {record.request_id}: text must be a str or None")
        if store_text != "none":
            digest = text_sha256(record.text)
        if store_text == "full":
            text = record.text.encode("utf-8", "replace").decode("utf-8")  # SQLite text must be valid UTF-8
    return (when, record.request_id, record.stage, record.action, record.policy, _dumps(list(record.rules)),
            _dumps(features), _dumps(concepts), _number(record.score, "score"), record.key_id, record.model,
            record.mode, record.endpoint, text, digest, _number(record.latency_ms, "latency_ms"), _dumps(extra))


def _check_str(value: object, name: str, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise AuditError(f"audit record: {name} must be a {'non-empty ' if not allow_empty else ''}str, "
                         f"got {value!r}")


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AuditError(f"audit record: unknown {name} {value!r}; valid: {', '.join(choices)}")


def _number(value: object, name: str) -> float | None:
    """A finite float, or None for None / NaN / inf (SQLite would store NaN as NULL anyway)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, int | float):
        value = value.item()  # numpy scalars, 0-d tensors
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuditError(f"audit record: {name} must be a number or None, got {type(value).__name__}")
    return float(value) if math.isfinite(value) else None


def _plain(value: Any, name: str) -> Any:
    """``value`` as plain JSON types: numpy scalars unwrapped, ``to_dict()`` objects expanded, NaN/inf -> None."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, name) for v in value]
    for method in ("to_dict", "item", "tolist"):
        fn = getattr(value, method, None)
        if callable(fn):
            return _plain(fn(), name)
    raise AuditError(f"audit record: {name} holds a {type(value).__name__}, which cannot be stored as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
