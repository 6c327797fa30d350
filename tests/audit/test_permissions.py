"""File modes of the audit log: it may hold full prompts and responses, so only its owner may read it.

A new log, its ``-wal`` and ``-shm`` files and the directories created for it are private (0600 / 0700) whatever
the umask; an existing log that others can read is reported at open (and left as it is: see `schema.connect`).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safesail_guard.audit import AuditLog, AuditRecord


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _record() -> AuditRecord:
    return AuditRecord(request_id="r1", stage="final", action="allow", policy="p", model="m",
                       text="a full prompt someone would not want the whole machine to read", time=time.time())


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under ``request.param`` as the process umask (restored afterwards)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000], indirect=True, ids=["022", "002", "000"])
def test_new_log_wal_shm_and_created_dirs_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    parent_mode = _mode(tmp_path)
    path = tmp_path / "state" / "safesail" / "audit.sqlite"
    with AuditLog.open(path, store_text="full", retention_days=None) as log:
        log.append(_record())
        log.append_many([_record(), _record()])
        assert log.count() == 3
        siblings = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        for p in siblings:  # all three exist while the log is open (WAL mode)
            assert p.exists(), p
            assert _mode(p) == 0o600, f"{p.name} is {_mode(p):04o} under umask {umask:03o}"
    assert _mode(path) == 0o600
    assert _mode(tmp_path / "state") == 0o700 and _mode(tmp_path / "state" / "safesail") == 0o700
    assert _mode(tmp_path) == parent_mode  # directories that already existed are not touched
    with AuditLog.open(path, retention_days=None) as log:  # reopening recreates the -wal/-shm files: private too
        log.append(_record())
        for suffix in ("-wal", "-shm"):
            assert _mode(path.with_name(path.name + suffix)) == 0o600


def test_existing_log_readable_by_others_is_reported_and_left_alone(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.sqlite"
    with caplog.at_level(logging.WARNING, logger="safesail.audit"):
        AuditLog.open(path, retention_days=None).close()
    assert not caplog.records  # a log we created is private: nothing to report
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="safesail.audit"):
        with AuditLog.open(path, retention_days=None) as log:
            log.append(_record())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(path) in message and "0644" in message and f"chmod 600 {path}" in message
    assert _mode(path) == 0o644  # reported, not changed: sharing it with a group may be deliberate
