"""SIGKILL a process that is appending under load: every acknowledged decision survives, the file opens clean.

The child (`crash_writer.py`) prints a request id only after `AuditLog.append` returned for it. Commits are
in flight on several threads when the kill lands, so if ``append`` returned before its transaction committed
(or a group commit acknowledged rows it had not written), some printed ids would be missing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from safesail_guard.audit import AuditLog

HELPER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[2]
MIN_ACKED = 300


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sigkill_under_load_loses_no_committed_decision(tmp_path: Path, synchronous: str) -> None:
    db = tmp_path / "audit.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(HELPER), str(db), "4", synchronous], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    watchdog = threading.Timer(60, proc.kill)  # a hung child fails the test instead of hanging it
    watchdog.start()
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        acked: list[str] = []
        while len(acked) < MIN_ACKED:
            line = proc.stdout.readline()
            assert line, f"the writer died early: {proc.stderr.read()}"
            acked.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # ids acknowledged before the kill but not read yet
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked.extend(rest.split("\n")[:-1])  # a line cut by the kill has no newline: never counted as acknowledged
    assert proc.returncode == -signal.SIGKILL

    raw = sqlite3.connect(db)  # the WAL left by the killed process is recovered on open
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = {r[0] for r in raw.execute("SELECT request_id FROM records")}
    raw.close()
    missing = [rid for rid in acked if rid not in stored]
    assert not missing, f"{len(missing)} acknowledged decisions lost, e.g. {missing[:5]}"
    assert len(acked) == len(set(acked)) >= MIN_ACKED

    with AuditLog.open(db, retention_days=None) as log:  # opens cleanly (quick_check) and keeps appending
        assert log.count() == len(stored) >= len(acked)
        assert log.get(1) is not None
