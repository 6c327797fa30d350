"""`AuditLog`: the durable, append-only SQLite log of every guard decision the proxy makes.

Durability: `AuditLog.append` returns only after the transaction holding the record has COMMITTED (WAL mode,
``synchronous=FULL`` by default), so the proxy may release a response as soon as ``append`` returns; a killed
process loses no decision that was acknowledged. Concurrent appends from many threads are *group-committed*:
while one thread commits, the others queue their records, and the next thread to take the write lock commits
the whole queue in one transaction (one fsync for many decisions); every caller still returns only after its
own rows are committed. A failing record (each caller's records sit in their own SAVEPOINT) fails only its
caller. Write failures (disk full, I/O error) raise `AuditError`: the proxy must then not release the response.

Append-only: UPDATE is refused by a trigger, and DELETE only removes rows older than the cutoff that
`purge_before` / `apply_retention` sets inside its own transaction (see :mod:`safesail_guard.audit.schema`).

Reads (`query`, `get`, `count`, `stats`) use a second, query-only connection, so they never wait for a commit.
Concept filtering: ``concept="weapons"`` matches records whose ``concepts`` JSON has the key ``weapons``
(case-insensitive) with a score >= `CONCEPT_THRESHOLD` (0.5); `stats` counts concepts the same way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safesail_guard.audit.config import AuditConfig, AuditError
from safesail_guard.audit.records import COLUMNS, STAGES, AuditRecord, AuditRow, encode_record
from safesail_guard.audit.schema import connect, connect_reader
from safesail_guard.policy.decision import ACTIONS, SEVERITY

CONCEPT_THRESHOLD = 0.5
"""A record "has" a concept when its score in ``concepts`` is at least this (filters and stats)."""

SECONDS_PER_DAY = 86400.0

_INSERT = f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SELECT = f"SELECT records.id, {', '.join('records.' + c for c in COLUMNS)} FROM records"


@dataclass
class _Ticket:
    """One caller's records waiting for a group commit."""

    rows: list[tuple[Any, ...]]
    ids: list[int] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class AuditLog:
    """The audit log in one SQLite file; thread-safe; use as a context manager or call `close`."""

    def __init__(self, config: AuditConfig | None = None) -> None:
        self.config = config if config is not None else AuditConfig()
        self.path: Path = self.config.path
        self._writer = connect(self.path, synchronous=self.config.synchronous,
                               busy_timeout_s=self.config.busy_timeout_s)
        try:
            self._reader = connect_reader(self.path, busy_timeout_s=self.config.busy_timeout_s)
        except sqlite3.Error as exc:
            self._writer.close()
            raise AuditError(f"cannot open the audit log {self.path} for reading: {exc}") from exc
        self._write_lock = threading.Lock()  # held by the thread committing (or applying retention)
        self._queue_lock = threading.Lock()  # guards _queue
        self._read_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._closed = False
        if self.config.retention_days is not None:
            try:
                self.apply_retention()
            except BaseException:
                self.close()
                raise

    @classmethod
    def open(cls, path: str | Path, **kw: Any) -> AuditLog:
        """Open the log at ``path``; ``kw`` are other `AuditConfig` fields (``store_text``, ``retention_days``...)."""
        return cls(AuditConfig(path=Path(path), **kw))

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"AuditLog({str(self.path)!r}, store_text={self.config.store_text!r}, "
                f"retention_days={self.config.retention_days!r})")

    def close(self) -> None:
        """Close both connections (idempotent); later calls raise `AuditError`."""
        with self._write_lock, self._read_lock:
            if not self._closed:
                self._closed = True
                self._reader.close()
                self._writer.close()

    # ------------------------------------------------------------------ writing
    def append(self, record: AuditRecord) -> int:
        """Store one decision; returns its row id. The row is committed when this returns."""
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[AuditRecord]) -> list[int]:
        """Store several decisions in one transaction (all or none); returns their row ids, in order."""
        rows = [encode_record(r, self.config.store_text) for r in records]  # validate before queueing
        if not rows:
            return []
        ticket = _Ticket(rows)
        with self._queue_lock:
            self._queue.append(ticket)
        with self._write_lock:
            if not ticket.done:  # nobody committed it while we waited: commit everything queued
                self._check_open()
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if ticket.error is not None:
            raise AuditError(f"could not write to the audit log {self.path}: {ticket.error}") from ticket.error
        return ticket.ids

    def _commit(self, batch: list[_Ticket]) -> None:
        """Insert every ticket's rows in one transaction, each ticket in its own savepoint; caller holds the lock."""
        con = self._writer
        try:
            con.execute("BEGIN IMMEDIATE")
            for ticket in batch:
                con.execute("SAVEPOINT ticket")
                try:
                    ticket.ids = [int(con.execute(_INSERT, row).lastrowid) for row in ticket.rows]
                    con.execute("RELEASE ticket")
                except sqlite3.Error as exc:
                    con.execute("ROLLBACK TO ticket")
                    con.execute("RELEASE ticket")
                    ticket.error, ticket.ids = exc, []
            con.execute("COMMIT")
        except BaseException as exc:
            if con.in_transaction:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            for ticket in batch:
                if ticket.error is None:
                    ticket.error, ticket.ids = exc, []
            if not isinstance(exc, sqlite3.Error):
                raise
        finally:
            for ticket in batch:
                ticket.done = True

    # ------------------------------------------------------------------ retention
    def apply_retention(self, now: float | None = None) -> int:
        """Delete records older than ``retention_days`` (none when it is None); returns how many were deleted."""
        if self.config.retention_days is None:
            return 0
        now = time.time() if now is None else now
        return self.purge_before(now - self.config.retention_days * SECONDS_PER_DAY)

    def purge_before(self, cutoff: float) -> int:
        """Delete records with ``time < cutoff`` (seconds since the epoch); returns how many were deleted.

        The only way rows leave the log: the cutoff is written to the ``retention`` row, the old rows deleted
        and the cutoff cleared, all in one transaction.
        """
        with self._write_lock:
            self._check_open()
            con = self._writer
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.execute("UPDATE retention SET delete_before = ? WHERE id = 1", (float(cutoff),))
                    deleted = con.execute("DELETE FROM records WHERE time < ?", (float(cutoff),)).rowcount
                    con.execute("UPDATE retention SET delete_before = NULL WHERE id = 1")
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
                if deleted:
                    con.execute("PRAGMA incremental_vacuum").fetchall()  # frees pages as it steps
            except sqlite3.Error as exc:
                raise AuditError(f"could not apply retention to the audit log {self.path}: {exc}") from exc
        return deleted

    # ------------------------------------------------------------------ reading
    def query(self, *, since: float | None = None, until: float | None = None,
              action: str | Sequence[str] | None = None, key_id: str | None = None, policy: str | None = None,
              rule: str | None = None, concept: str | None = None, request_id: str | None = None,
              stage: str | None = None, text_sha256: str | None = None, limit: int | None = 100,
              offset: int = 0, newest_first: bool = True) -> list[AuditRow]:
        """Records matching every given filter, newest (by ``time``, then id) first unless ``newest_first=False``.

        ``since`` is inclusive, ``until`` exclusive (seconds since the epoch); ``action`` may be a list;
        ``rule`` matches records whose rules include it; ``concept`` see the module docstring;
        ``limit=None`` returns every match.
        """
        where, params = _where(since=since, until=until, action=action, key_id=key_id, policy=policy, rule=rule,
                               concept=concept, request_id=request_id, stage=stage, text_sha256=text_sha256)
        order = "DESC" if newest_first else "ASC"
        sql = f"{_SELECT}{where} ORDER BY records.time {order}, records.id {order} LIMIT ? OFFSET ?"
        if offset < 0 or (limit is not None and limit < 0):
            raise AuditError("limit and offset must be >= 0")
        rows = self._read(sql, (*params, -1 if limit is None else int(limit), int(offset)))
        return [AuditRow.from_sql(r) for r in rows]

    def get(self, row_id: int) -> AuditRow | None:
        """The record with this row id, or None."""
        rows = self._read(f"{_SELECT} WHERE records.id = ?", (int(row_id),))
        return AuditRow.from_sql(rows[0]) if rows else None

    def count(self, *, since: float | None = None, until: float | None = None,
              action: str | Sequence[str] | None = None, key_id: str | None = None, policy: str | None = None,
              rule: str | None = None, concept: str | None = None, request_id: str | None = None,
              stage: str | None = None, text_sha256: str | None = None) -> int:
        """How many records match (same filters as `query`)."""
        where, params = _where(since=since, until=until, action=action, key_id=key_id, policy=policy, rule=rule,
                               concept=concept, request_id=request_id, stage=stage, text_sha256=text_sha256)
        return int(self._read(f"SELECT count(*) FROM records{where}", params)[0][0])

    def stats(self, since: float | None = None, *, until: float | None = None,
              **filters: Any) -> dict[str, Any]:
        """Counts of the matching records: total, distinct requests, by action, stage, rule and concept.

        A record counts once per distinct rule it lists and once per concept scored >= `CONCEPT_THRESHOLD`.
        ``filters`` are the other `count` filters (``stage="final"`` counts one verdict per request).
        """
        where, params = _where(since=since, until=until, **_filter_args(filters))
        and_ = " AND " if where else " WHERE "
        head = self._read(f"SELECT count(*), count(DISTINCT records.request_id), min(records.time), "
                          f"max(records.time) FROM records{where}", params)[0]
        by_action = dict(self._read(f"SELECT records.action, count(*) FROM records{where} "
                                    "GROUP BY records.action", params))
        by_stage = dict(self._read(f"SELECT records.stage, count(*) FROM records{where} "
                                   "GROUP BY records.stage", params))
        by_rule = self._read(f"SELECT j.value, count(DISTINCT records.id) AS n FROM records, "
                             f"json_each(records.rules) AS j{where} GROUP BY j.value ORDER BY n DESC, j.value",
                             params)
        by_concept = self._read(f"SELECT j.key, count(DISTINCT records.id) AS n FROM records, "
                                f"json_each(records.concepts) AS j{where}{and_}j.value >= ? "
                                "GROUP BY j.key ORDER BY n DESC, j.key", (*params, CONCEPT_THRESHOLD))
        return {
            "total": int(head[0]), "requests": int(head[1]), "first_time": head[2], "last_time": head[3],
            "by_action": {a: by_action[a] for a in sorted(by_action, key=lambda a: SEVERITY.get(a, len(ACTIONS)))},
            "by_stage": {s: by_stage[s] for s in sorted(by_stage, key=lambda s: (s not in STAGES, s))},
            "by_rule": dict(by_rule), "by_concept": dict(by_concept), "concept_threshold": CONCEPT_THRESHOLD,
        }

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            self._check_open()
            try:
                return self._reader.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise AuditError(f"could not read the audit log {self.path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise AuditError(f"the audit log {self.path} is closed")


_FILTERS = ("action", "key_id", "policy", "rule", "concept", "request_id", "stage", "text_sha256")


def _filter_args(filters: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(filters) - set(_FILTERS))
    if unknown:
        raise AuditError(f"unknown audit filter {', '.join(unknown)}; valid: since, until, {', '.join(_FILTERS)}")
    return {name: filters.get(name) for name in _FILTERS}


def _where(*, since: float | None, until: float | None, action: str | Sequence[str] | None, key_id: str | None,
           policy: str | None, rule: str | None, concept: str | None, request_id: str | None, stage: str | None,
           text_sha256: str | None) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or "") and its parameters for the filters that are not None."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("records.time >= ?")
        params.append(float(since))
    if until is not None:
        clauses.append("records.time < ?")
        params.append(float(until))
    if action is not None:
        actions = [action] if isinstance(action, str) else list(action)
        for a in actions:
            if a not in ACTIONS:
                raise AuditError(f"unknown action {a!r}; valid: {', '.join(ACTIONS)}")
        clauses.append(f"records.action IN ({', '.join('?' * len(actions))})" if actions else "0")
        params.extend(actions)
    if stage is not None and stage not in STAGES:
        raise AuditError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    for column, value in (("key_id", key_id), ("policy", policy), ("request_id", request_id), ("stage", stage),
                          ("text_sha256", text_sha256)):
        if value is not None:
            clauses.append(f"records.{column} = ?")
            params.append(value)
    if rule is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(records.rules) AS r WHERE r.value = ?)")
        params.append(rule)
    if concept is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(records.concepts) AS c "
                       "WHERE lower(c.key) = lower(?) AND c.value >= ?)")
        params.extend([concept, CONCEPT_THRESHOLD])
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
