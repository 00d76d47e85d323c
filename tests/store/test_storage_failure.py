"""The writer on a storage that refuses writes: it stops at the first failure, refuses
every later write and tells its listeners, instead of dropping write after write.

The full disk is a real one as far as SQLite can tell: the writing process runs under a
``RLIMIT_FSIZE`` just above the database's size, so its writes fail as on a full file
system. That needs its own process (the limit would hold for pytest's files too).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentos.store import Store

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import json, resource, sys, threading
    from agentos.errors import StoreFailure
    from agentos.store import Store
    from agentos.store.writer import Insert

    store = Store(sys.argv[1])
    size = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    heard = threading.Event()
    failures = []
    store.writer.add_failure_listener(lambda f: (failures.append(f.message), heard.set()))
    refused_at = None
    for n in range(20000):
        try:
            store.submit(Insert("agent_state", {"agent": "a", "key": str(n), "value": "x" * 400}))
            if n % 50 == 49:
                store.flush()
        except StoreFailure:
            refused_at = n
            break
    heard.wait(30)
    try:
        store.flush()
        flushed = "ok"
    except StoreFailure as exc:
        flushed = type(exc).__name__
    late = []
    store.writer.add_failure_listener(late.append)
    print(json.dumps({
        "refused_at": refused_at, "failures": failures, "flushed": flushed,
        "late_listener": len(late), "ops_failed": store.writer.ops_failed,
    }))
    """
)


def test_the_first_failed_write_stops_the_writer_and_is_told(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    Store(db).close()
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(db), str(db.stat().st_size + 64 * 1024)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["refused_at"] is not None, "submits went on after the failure"
    assert report["refused_at"] < 20000
    [message] = report["failures"]
    assert str(db) in message and "cannot be written" in message
    assert report["flushed"] == "StoreFailure"
    assert report["late_listener"] == 1, "a listener added late is told at once"
    assert report["ops_failed"] == 0, "no op was tried alone after the storage failed"
    # one line about the failure, not one per dropped write, and no traceback
    assert done.stderr.count("failed") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_sqlite_full_stops_the_writer_like_a_full_disk(tmp_path: Path) -> None:
    """``max_page_count`` on the writer's own connection: SQLITE_FULL, as on a full disk."""
    import threading

    from agentos.errors import StoreFailure
    from agentos.store.writer import Call, Insert

    store = Store(tmp_path / "capped.db")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]

    def cap(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {pages + 8}")

    heard = threading.Event()
    store.writer.add_failure_listener(lambda _: heard.set())
    store.submit(Call(cap, tables=()))
    store.flush()
    submitted = None
    for n in range(5000):
        try:
            store.submit(Insert("agent_state", {"agent": "a", "key": str(n), "value": "x" * 500}))
            if n % 20 == 19:
                store.flush()
        except StoreFailure:
            submitted = n
            break
    assert heard.wait(30)
    assert submitted is not None, "the writer took every write"
    assert store.writer.ops_failed == 0, "no op was tried alone after the storage failed"
    assert "database or disk is full" in str(store.writer.failure)
    with pytest.raises(StoreFailure):
        store.submit(Insert("agent_state", {"agent": "a", "key": "late", "value": ""}))
    with pytest.raises(StoreFailure):
        store.close()
    with Store(tmp_path / "capped.db") as reopened:
        kept = reopened.db.execute("SELECT count(*) FROM agent_state").fetchone()[0]
    assert 0 < kept <= submitted, "what was committed before the failure stays"
