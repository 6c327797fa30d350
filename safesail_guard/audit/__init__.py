"""The proxy's durable audit log: every guard decision, append-only, in one SQLite file (WAL mode).

* :mod:`~safesail_guard.audit.config` - `AuditConfig` (path, what is kept of the text, retention, fsync level),
  `default_audit_path`, `AuditError`;
* :mod:`~safesail_guard.audit.records` - `AuditRecord` (what the proxy logs) and `AuditRow` (what it reads back);
* :mod:`~safesail_guard.audit.schema` - the SQLite schema, its version and the append-only triggers;
* :mod:`~safesail_guard.audit.store` - `AuditLog`: append (committed on return), query, stats, retention.

The server appends one record per stage of a request before it releases the response; `safesail audit`
(:mod:`safesail_guard.cli.audit`) lists, shows, counts and purges them. API keys are never stored, only key ids.
"""

from __future__ import annotations

from pathlib import Path

from safesail_guard.audit.config import AUDIT_DB_ENV, AuditConfig, AuditError, default_audit_path
from safesail_guard.audit.records import MODES, STAGES, AuditRecord, AuditRow, text_sha256
from safesail_guard.audit.schema import SCHEMA_VERSION
from safesail_guard.audit.store import CONCEPT_THRESHOLD, AuditLog

__all__ = [
    "AUDIT_DB_ENV", "CONCEPT_THRESHOLD", "DEFAULT_AUDIT_PATH", "MODES", "SCHEMA_VERSION", "STAGES", "AuditConfig",
    "AuditError", "AuditLog", "AuditRecord", "AuditRow", "default_audit_path", "text_sha256",
]


def __getattr__(name: str) -> Path:
    """``DEFAULT_AUDIT_PATH`` is computed on access from `default_audit_path` (so it follows the environment)."""
    if name == "DEFAULT_AUDIT_PATH":
        return default_audit_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
