"""Where the audit log lives and how it stores decisions: `AuditConfig`, `default_audit_path`, `AuditError`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AUDIT_DB_ENV = "SAFESAIL_AUDIT_DB"
"""Environment variable that overrides the default audit log path."""

AUDIT_FILE_NAME = "audit.sqlite"


class AuditError(ValueError):
    """The audit log cannot be opened, read or written; the message names the file and what to do."""


def default_audit_path() -> Path:
    """``$SAFESAIL_AUDIT_DB`` if set, else ``$XDG_STATE_HOME/safesail/audit.sqlite`` (XDG default ``~/.local/state``).

    Read on every call (never cached), so it is the one source of truth for the proxy, the CLI and the tests.
    """
    override = os.environ.get(AUDIT_DB_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state).expanduser() if state and Path(state).expanduser().is_absolute() else (
        Path.home() / ".local" / "state")  # the XDG spec says to ignore a relative XDG_STATE_HOME
    return base / "safesail" / AUDIT_FILE_NAME


class AuditConfig(BaseModel):
    """How the proxy's audit log is stored."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(default_factory=default_audit_path,
                       description="SQLite file of the audit log (default: $SAFESAIL_AUDIT_DB, else "
                                   "$XDG_STATE_HOME/safesail/audit.sqlite). Parent directories are created.")
    store_text: Literal["full", "hash", "none"] = Field(
        "hash", description="What is kept of the judged text: 'full' = the text and its sha256, 'hash' = only the "
                            "sha256 of its UTF-8 bytes, 'none' = neither.")
    retention_days: float | None = Field(
        30.0, gt=0, description="Records older than this many days are deleted when the log is opened and by "
                                "AuditLog.apply_retention(); null keeps records forever.")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL", description="SQLite synchronous level in WAL mode. FULL fsyncs the WAL on every commit (a "
                            "committed decision survives a power cut); NORMAL survives a killed process but may "
                            "lose the last commits on power loss.")
    busy_timeout_s: float = Field(
        10.0, ge=0, description="How long a write waits for another process (e.g. `safesail audit purge`) that "
                                "holds the database lock before failing.")

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()
