"""Times as people type them when filtering the audit log: a duration ago (``45s``, ``30m``, ``1h``, ``2d``,
``1w``) or an ISO 8601 date/time. Shared by `safesail audit` and the dashboard's audit API, which word their
own errors around these."""

from __future__ import annotations

import re
from datetime import datetime

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """Seconds in ``30m``/``1h``/``2d``/``1w``/``45s``, or None when ``text`` is not a duration."""
    m = _DURATION.match(text)
    return float(m.group(1)) * UNITS[m.group(2).lower()] if m else None


def parse_iso(text: str) -> float | None:
    """Seconds since the epoch of an ISO date/time (local time when it has no zone), or None when ``text`` is
    not one. Raises ValueError("... out of range") for a date the clock cannot represent."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    try:
        return (when if when.tzinfo is not None else when.astimezone()).timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is out of range") from None
