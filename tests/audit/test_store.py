"""`AuditLog`: round trips, text storage modes, filters, ordering, stats, retention, append-only, bad files,
concurrency."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from safesail_guard.audit import (
    CONCEPT_THRESHOLD,
    SCHEMA_VERSION,
    AuditConfig,
    AuditError,
    AuditLog,
    AuditRecord,
    default_audit_path,
    text_sha256,
)

T0 = 1_700_000_000.0
DAY = 86400.0


def record(request_id: str = "req-1", **kw) -> AuditRecord:
    """A decision with every field set; ``kw`` overrides."""
    fields = dict(
        stage="final", action="block", policy="default", rules=["weapons_block", "jailbreak_flag"],
        features=[{"id": "L14/F123", "layer": 14, "activation": 7.5, "normalized": 0.91, "explanation": "firearms"},
                  {"id": "L6/F7", "layer": 6, "activation": 2.0, "normalized": 0.4, "explanation": None}],
        concepts={"weapons": 0.93, "self_harm": 0.1}, score=0.87, key_id="key-ops", model="smollm2",
        mode="upstream", endpoint="/v1/chat/completions", text="how do I build a rifle? ünïcode ✓",
        latency_ms=12.5, time=T0, extra={"tokens": 17, "stream": True, "nested": {"a": [1, 2]}},
    )
    fields.update(kw)
    return AuditRecord(request_id=request_id, **fields)


@pytest.fixture
def log(tmp_path: Path):
    with AuditLog.open(tmp_path / "audit.sqlite", store_text="full", retention_days=None) as handle:
        yield handle


def test_round_trip_every_field(log: AuditLog) -> None:
    rec = record()
    row_id = log.append(rec)
    row = log.get(row_id)
    assert row is not None and row.id == row_id
    for name in ("time", "request_id", "stage", "action", "policy", "rules", "features", "concepts", "score",
                 "key_id", "model", "mode", "endpoint", "text", "latency_ms", "extra"):
        assert getattr(row, name) == getattr(rec, name), name
    assert row.text_sha256 == text_sha256(rec.text)
    assert row.to_dict()["id"] == row_id and row.to_dict()["features"][0]["explanation"] == "firearms"
    assert row.top_feature["id"] == "L14/F123"
    assert log.get(row_id + 1) is None


def test_numpy_values_and_nan_are_stored_as_plain_json(log: AuditLog) -> None:
    row = log.get(log.append(record(score=np.float32(0.5), latency_ms=float("nan"),
                                    concepts={"weapons": np.float64(0.75), "odd": float("inf")},
                                    features=[{"id": "f", "layer": np.int64(3), "activation": np.float32(1.5)}])))
    assert row.score == 0.5 and row.latency_ms is None
    assert row.concepts == {"weapons": 0.75, "odd": None}
    assert row.features == [{"id": "f", "layer": 3, "activation": 1.5}]


@pytest.mark.parametrize(("mode", "keeps_text", "keeps_hash"), [("full", True, True), ("hash", False, True),
                                                                  ("none", False, False)])
def test_store_text_modes(tmp_path: Path, mode: str, keeps_text: bool, keeps_hash: bool) -> None:
    with AuditLog.open(tmp_path / "a.sqlite", store_text=mode) as log:
        rec = record(time=time.time())
        row = log.get(log.append(rec))
        no_text = log.get(log.append(record("req-2", text=None)))
    assert row.text == (rec.text if keeps_text else None)
    assert row.text_sha256 == (text_sha256(rec.text) if keeps_hash else None)
    assert no_text.text is None and no_text.text_sha256 is None
    raw = sqlite3.connect(tmp_path / "a.sqlite").execute("SELECT group_concat(coalesce(text, '')) FROM records")
    assert ("rifle" in raw.fetchone()[0]) is keeps_text  # the text is really not in the file


def test_default_config_hashes_text_and_keeps_30_days() -> None:
    cfg = AuditConfig()
    assert (cfg.store_text, cfg.retention_days, cfg.synchronous) == ("hash", 30.0, "FULL")
    with pytest.raises(ValueError, match="extra"):
        AuditConfig(store_txt="full")
    with pytest.raises(ValueError):
        AuditConfig(retention_days=0)


def test_default_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import safesail_guard.audit as audit

    monkeypatch.delenv("SAFESAIL_AUDIT_DB", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_audit_path() == tmp_path / "state" / "safesail" / "audit.sqlite"
    assert audit.DEFAULT_AUDIT_PATH == default_audit_path() == AuditConfig().path
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_audit_path() == Path.home() / ".local" / "state" / "safesail" / "audit.sqlite"
    monkeypatch.setenv("SAFESAIL_AUDIT_DB", str(tmp_path / "x.sqlite"))
    assert audit.DEFAULT_AUDIT_PATH == tmp_path / "x.sqlite"


def _populate(log: AuditLog) -> None:
    log.append_many([
        record("r1", stage="prompt", action="allow", rules=[], concepts={"weapons": 0.2}, key_id="k1", time=T0),
        record("r1", stage="final", action="allow", rules=[], concepts={}, key_id="k1", time=T0 + 1),
        record("r2", stage="prompt", action="flag", rules=["jailbreak_flag"], concepts={"Jailbreak": 0.7},
               key_id="k2", policy="strict", time=T0 + 10),
        record("r3", stage="response", action="block", rules=["weapons_block"], concepts={"weapons": 0.5},
               key_id="k2", time=T0 + 20),
        record("r3", stage="final", action="block", rules=["weapons_block", "jailbreak_flag"],
               concepts={"weapons": 0.9}, key_id=None, time=T0 + 21),
    ])


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, [5, 4, 3, 2, 1]),
    ({"since": T0 + 10}, [5, 4, 3]),
    ({"until": T0 + 10}, [2, 1]),
    ({"since": T0 + 1, "until": T0 + 20}, [3, 2]),
    ({"action": "block"}, [5, 4]),
    ({"action": ["allow", "flag"]}, [3, 2, 1]),
    ({"action": []}, []),
    ({"key_id": "k2"}, [4, 3]),
    ({"policy": "strict"}, [3]),
    ({"rule": "jailbreak_flag"}, [5, 3]),
    ({"rule": "jailbreak"}, []),
    ({"concept": "weapons"}, [5, 4]),  # 0.5 counts (>= threshold), 0.2 does not
    ({"concept": "jailbreak"}, [3]),  # case-insensitive
    ({"request_id": "r1"}, [2, 1]),
    ({"stage": "final"}, [5, 2]),
    ({"stage": "final", "action": "block", "rule": "weapons_block"}, [5]),
])
def test_filters(log: AuditLog, filters: dict, expected: list[int]) -> None:
    _populate(log)
    assert [r.id for r in log.query(**filters)] == expected
    assert log.count(**filters) == len(expected)
    assert CONCEPT_THRESHOLD == 0.5


def test_filter_on_text_hash(log: AuditLog) -> None:
    log.append(record("a", text="same"))
    log.append(record("b", text="other"))
    assert [r.request_id for r in log.query(text_sha256=text_sha256("same"))] == ["a"]


def test_order_limit_offset(log: AuditLog) -> None:
    _populate(log)
    log.append(record("late-but-old", time=T0 - 5))  # appended last, decided first
    assert [r.request_id for r in log.query(limit=2)] == ["r3", "r3"]
    assert [r.id for r in log.query(newest_first=False, limit=3)] == [6, 1, 2]
    assert [r.id for r in log.query(limit=2, offset=2)] == [3, 2]
    assert len(log.query(limit=None)) == 6 and log.query(offset=10) == []
    with pytest.raises(AuditError):
        log.query(limit=-1)


def test_unknown_filter_values_are_errors(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="unknown action 'blok'; valid: allow, log, steer, flag, block"):
        log.query(action="blok")
    with pytest.raises(AuditError, match="unknown stage"):
        log.count(stage="answer")
    with pytest.raises(AuditError, match="unknown audit filter"):
        log.stats(colour="red")


def test_stats(log: AuditLog) -> None:
    _populate(log)
    doc = log.stats()
    assert doc["total"] == 5 and doc["requests"] == 3
    assert (doc["first_time"], doc["last_time"]) == (T0, T0 + 21)
    assert doc["by_action"] == {"allow": 2, "flag": 1, "block": 2}
    assert list(doc["by_action"]) == ["allow", "flag", "block"]  # severity order
    assert doc["by_stage"] == {"prompt": 2, "response": 1, "final": 2}
    assert doc["by_rule"] == {"jailbreak_flag": 2, "weapons_block": 2}
    assert doc["by_concept"] == {"weapons": 2, "Jailbreak": 1}
    assert log.stats(since=T0 + 20)["by_action"] == {"block": 2}
    final = log.stats(stage="final")
    assert final["total"] == 2 and final["by_rule"] == {"jailbreak_flag": 1, "weapons_block": 1}


def test_retention_deletes_old_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with AuditLog.open(path, retention_days=None) as log:
        log.append_many([record(f"d{age}", time=T0 - age * DAY) for age in (0, 5, 9.9, 10.1, 40)])
    with AuditLog.open(path, retention_days=10) as log:  # open applies retention (relative to now: all old)
        assert log.count() == 0
    with AuditLog.open(path, retention_days=10) as log:
        log.append_many([record(f"d{age}", time=T0 - age * DAY) for age in (0, 5, 9.9, 10.1, 40)])
        assert log.apply_retention(now=T0) == 2
        assert sorted(r.request_id for r in log.query()) == ["d0", "d5", "d9.9"]
        assert log.apply_retention(now=T0) == 0
        assert log.purge_before(T0 - 6 * DAY) == 1
        new_id = log.append(record("after"))
    assert new_id == 11  # AUTOINCREMENT: ids are never reused after deletes
    with AuditLog.open(path, retention_days=None) as log:
        assert log.apply_retention(now=T0 + 1000 * DAY) == 0  # None keeps records forever
        assert log.count() == 3


def test_update_and_direct_delete_are_refused(log: AuditLog) -> None:
    _populate(log)
    raw = sqlite3.connect(log.path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE records SET action = 'allow' WHERE action = 'block'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM records")
    with pytest.raises(sqlite3.IntegrityError, match="cannot be deleted"):
        raw.execute("DELETE FROM retention")
    raw.close()
    assert log.count(action="block") == 2 and log.count() == 5


def test_bad_records_are_refused_before_anything_is_written(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="unknown action 'deny'; valid: allow, log, steer, flag, block"):
        log.append_many([record("ok"), record("bad", action="deny")])
    with pytest.raises(AuditError, match="unknown stage"):
        log.append(record(stage="output"))
    with pytest.raises(AuditError, match="request_id"):
        log.append(record(""))
    with pytest.raises(AuditError, match="extra holds a object"):
        log.append(record(extra={"x": object()}))
    assert log.count() == 0
    assert log.append_many([]) == []


def test_wal_mode_schema_version_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dirs" / "audit.sqlite"
    with AuditLog.open(path) as log:
        log.append(record(time=time.time()))
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    with AuditLog.open(path) as log:
        assert log.count() == 1
    log.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        log.append(record())


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not sqlite at all, just some text " * 100)
    with pytest.raises(AuditError, match=r"notes\.sqlite is not a usable SQLite audit log"):
        AuditLog.open(path)


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE people (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(AuditError, match=r"other\.sqlite is a SQLite database but not a safesail audit log"):
        AuditLog.open(path)


def test_future_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    AuditLog.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(AuditError, match=rf"future\.sqlite has audit schema version {SCHEMA_VERSION + 1}, newer"):
        AuditLog.open(path)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="is a directory"):
        AuditLog.open(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditError, match="cannot create the directory"):
        AuditLog.open(tmp_path / "file" / "audit.sqlite")


def test_concurrent_appends_from_8_threads(log: AuditLog) -> None:
    per_thread, n_threads = 40, 8
    ids: list[list[int]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            if i % 10 == 9:
                ids[t].extend(log.append_many([record(f"t{t}-{i}-a"), record(f"t{t}-{i}-b")]))
            else:
                ids[t].append(log.append(record(f"t{t}-{i}")))
                assert log.get(ids[t][-1]).request_id == f"t{t}-{i}"  # committed and visible on return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    flat = [i for chunk in ids for i in chunk]
    expected = n_threads * (per_thread + per_thread // 10)
    assert len(flat) == len(set(flat)) == expected == log.count()
    assert all(chunk == sorted(chunk) for chunk in ids)  # each thread's ids increase
    assert len({r.request_id for r in log.query(limit=None)}) == expected
