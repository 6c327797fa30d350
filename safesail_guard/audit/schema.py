"""The audit log's SQLite schema, its version, and opening a file safely (`connect`).

``records`` holds one row per decision; ``retention`` is a one-row table whose ``delete_before`` is NULL
except inside `AuditLog.purge_before`'s transaction. Triggers make the log append-only:

* any UPDATE of ``records`` aborts;
* a DELETE of ``records`` aborts unless the row's ``time`` is older than ``retention.delete_before``
  (so only the retention transaction, which sets and resets that cutoff, can delete, and only old rows);
* the ``retention`` row cannot be deleted (a missing cutoff refuses every delete).

Triggers guard against accidents and bugs in this process, not against someone with write access to the file
(who can drop them): protect the file with permissions, and ship it elsewhere if tamper evidence matters.

Permissions: the log may hold full prompts and responses (``store_text="full"``), so `connect` creates the file
0600 and any directory it has to create 0700, whatever the umask; SQLite gives the ``-wal`` and ``-shm`` files
the main file's mode. An existing file that group or others may read or write is reported with a warning on
the ``safesail.audit`` logger and left as it is (see `_warn_if_shared`).

The schema version is ``PRAGMA user_version``; the file is tagged with ``PRAGMA application_id``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from pathlib import Path

from safesail_guard.audit.config import AuditError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53534147  # "SSAG": safesail audit guard
FILE_MODE = 0o600
"""Mode of a new audit log (and so of its -wal/-shm files): owner read/write only."""
DIR_MODE = 0o700
"""Mode of each directory `connect` creates for a new audit log."""

log = logging.getLogger("safesail.audit")

_DDL = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: ids are never reused after retention
    time REAL NOT NULL,                     -- seconds since the epoch (UTC)
    request_id TEXT NOT NULL,
    stage TEXT NOT NULL,                    -- prompt | response | final
    action TEXT NOT NULL,                   -- allow | log | steer | flag | block
    policy TEXT NOT NULL,
    rules TEXT NOT NULL,                    -- JSON list of rule names
    features TEXT NOT NULL,                 -- JSON list of {id, layer, activation, normalized, explanation}
    concepts TEXT NOT NULL,                 -- JSON object concept -> score
    score REAL,
    key_id TEXT,                            -- the client key's id, never the key
    model TEXT NOT NULL,
    mode TEXT NOT NULL,                     -- local | upstream
    endpoint TEXT NOT NULL,
    text TEXT,                              -- only under store_text = full
    text_sha256 TEXT,                       -- under store_text = full or hash
    latency_ms REAL,
    extra TEXT NOT NULL                     -- JSON object
);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE INDEX IF NOT EXISTS records_request_id ON records(request_id);
CREATE INDEX IF NOT EXISTS records_action_time ON records(action, time);
CREATE INDEX IF NOT EXISTS records_key_time ON records(key_id, time);

CREATE TABLE IF NOT EXISTS retention (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    delete_before REAL                      -- NULL except inside the retention transaction
);
INSERT OR IGNORE INTO retention (id, delete_before) VALUES (1, NULL);

CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be updated');
END;
CREATE TRIGGER IF NOT EXISTS records_delete_only_expired BEFORE DELETE ON records
WHEN coalesce(OLD.time < (SELECT delete_before FROM retention WHERE id = 1), 0) = 0
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: records are deleted only by retention');
END;
CREATE TRIGGER IF NOT EXISTS retention_keep_row BEFORE DELETE ON retention
BEGIN
    SELECT RAISE(ABORT, 'the retention row of the audit log cannot be deleted');
END;
"""


def connect(path: Path, *, synchronous: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open (creating if needed) the audit log at ``path`` for writing: WAL, schema, version and integrity checks.

    Raises `AuditError` naming ``path`` for a path that cannot be a file, a file that is not SQLite, a SQLite
    file that is not an audit log, a schema newer than this code, or a failed integrity check.
    """
    if path.is_dir():
        raise AuditError(f"{path} is a directory; the audit log path must name a file")
    try:
        _make_private_dirs(path.parent)
    except OSError as exc:
        raise AuditError(f"cannot create the directory of the audit log {path}: {exc}") from exc
    try:
        created = _create_private_file(path)
    except OSError as exc:
        raise AuditError(f"cannot create the audit log {path}: {exc}") from exc
    if not created:
        _warn_if_shared(path)
    try:
        con = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open the audit log {path}: {exc}") from exc
    try:
        _prepare(con, path, synchronous)
    except sqlite3.DatabaseError as exc:
        con.close()
        raise AuditError(f"{path} is not a usable SQLite audit log: {exc}") from exc
    except BaseException:
        con.close()
        raise
    return con


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 whatever the umask (existing ones are untouched;
    ``Path.mkdir(parents=True)`` would give the parents the umask's default mode)."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it first: its mode is its creator's business
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))


def _create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 (an empty file is an empty SQLite database); False if it exists.

    Created here rather than by SQLite, which would use 0644 minus the umask; SQLite then creates the -wal and
    -shm files with this file's mode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have removed owner bits from os.open's mode
    finally:
        os.close(fd)
    return True


def _warn_if_shared(path: Path) -> None:
    """Warn when an existing log (or its -wal/-shm file) is readable or writable by group or others.

    Reported, not changed: sharing the log with an auditors' group may be deliberate, a chmod on every open
    would undo that, and the opener need not own the file (``safesail audit list`` run by such an auditor).
    A log this code created is 0600, so the warning is about files from older versions or changed by hand.
    """
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            log.warning("the audit log file %s has mode %04o: group or others can access it, and it may hold "
                        "prompts and responses; restrict it with: chmod 600 %s", p, mode, p)


def connect_reader(path: Path, *, busy_timeout_s: float) -> sqlite3.Connection:
    """A second, query-only connection to an already prepared log (readers never wait for a writer's fsync)."""
    con = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA query_only = ON")
    return con


def _prepare(con: sqlite3.Connection, path: Path, synchronous: str) -> None:
    version = con.execute("PRAGMA user_version").fetchone()[0]  # "file is not a database" surfaces here
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    if version == 0 and app_id == 0:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables:
            raise AuditError(f"{path} is a SQLite database but not a safesail audit log (it holds tables "
                             f"{', '.join(sorted(tables))}); pick another path")
        con.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table exists
    elif app_id != APPLICATION_ID:
        raise AuditError(f"{path} is a SQLite database but not a safesail audit log (application_id "
                         f"{app_id:#x}); pick another path")
    elif version > SCHEMA_VERSION:
        raise AuditError(f"{path} has audit schema version {version}, newer than this safesail-guard reads "
                         f"({SCHEMA_VERSION}); upgrade safesail-guard or use another path")
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise AuditError(f"cannot put the audit log {path} in WAL mode (journal_mode is {mode}); "
                         "use a local file system")
    con.execute(f"PRAGMA synchronous = {synchronous}")
    if version < SCHEMA_VERSION:
        _create(con)
    problems = [r[0] for r in con.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise AuditError(f"the audit log {path} failed its integrity check: {'; '.join(problems[:5])}; "
                         "move it aside (the proxy then starts a new one) and inspect it with sqlite3")


def _create(con: sqlite3.Connection) -> None:
    """Create the schema in one transaction (a concurrent creator waits, then finds it done)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        if con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _split(_DDL):
                con.execute(statement)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise


def _split(script: str) -> list[str]:
    """Statements of ``script`` (executescript would commit; triggers hold ';' inside BEGIN ... END)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line.split("--", 1)[0] if "--" in line else line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return [s for s in statements if s]
