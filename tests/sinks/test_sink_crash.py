"""Sinks across killed processes: items outlive their producer, and a consumer killed
mid-item loses nothing and does nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from agentos.sinks import SinkStore
from agentos.store import Store

WORKER = Path(__file__).with_name("sink_worker.py")
REPO = Path(__file__).resolve().parents[2]
ITEMS = 12
LEASE_S = 0.5


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_an_item_is_durable_once_publish_returns(db_path: Path) -> None:
    Store(db_path).close()
    script = textwrap.dedent(
        """
        import os, signal, sys
        from agentos.sinks import SinkStore
        from agentos.store import Store
        store = Store(sys.argv[1])
        sinks = SinkStore(store, owner="producer")
        sinks.publish("s", {"n": 1}, produced_by="run-1")
        store.submit(sinks.publish_op("s", {"n": 2}, produced_by="run-1"))
        store.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(python("-c", script, str(db_path)), env=env(), timeout=60)
    assert done.returncode == -signal.SIGKILL

    with Store(db_path) as store, SinkStore(store, owner="reader") as sinks:
        assert [i.data for i in sinks.claim("s", "c", limit=5)] == [{"n": 1}, {"n": 2}]


def test_a_consumer_killed_mid_item_loses_nothing_and_repeats_nothing(db_path: Path) -> None:
    with Store(db_path) as store, SinkStore(store, owner="producer") as sinks:
        store.db.execute(
            "CREATE TABLE markers (id INTEGER PRIMARY KEY, item_id INTEGER, square INTEGER, "
            "worker TEXT, attempts INTEGER)"
        )
        ids = [sinks.publish("numbers", {"n": n}, produced_by=None) for n in range(ITEMS)]

    first = subprocess.Popen(
        python(str(WORKER), str(db_path), "worker-1", str(LEASE_S), "4"),
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None
    lines: list[str] = []
    try:
        for line in first.stdout:
            lines.append(line.split()[0])
            if lines.count("acked") == 4 and lines[-1] == "claimed":
                break
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(30)
        first.stdout.close()
    assert lines[-1] == "claimed", f"the first worker ended early: {lines}"
    assert first.returncode == -signal.SIGKILL

    second = subprocess.run(
        python(str(WORKER), str(db_path), "worker-2", str(LEASE_S)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr

    with Store(db_path) as store:
        markers = store.db.execute(
            "SELECT item_id, square, worker, attempts FROM markers ORDER BY item_id"
        ).fetchall()
        delivered = store.db.execute(
            "SELECT item_id, status, claimed_by, attempts, run_id FROM sink_deliveries "
            "WHERE consumer = 'squarer' ORDER BY item_id"
        ).fetchall()
    # every item processed exactly once, by the worker whose ack counted
    assert [m[0] for m in markers] == ids
    assert [m[1] for m in markers] == [n * n for n in range(ITEMS)]
    assert [m[2] for m in markers].count("worker-1") == 4
    assert [d[1] for d in delivered] == ["done"] * ITEMS
    assert [d[4] for d in delivered] == [f"{m[2]}:{m[0]}" for m in markers]
    # the item the killed worker held was delivered again after its lease ran out
    retried = [d for d in delivered if d[3] > 1]
    assert len(retried) == 1
    item_id, _, claimed_by, attempts, _ = retried[0]
    assert (claimed_by, attempts) == ("worker-2", 2)
    assert ids.index(item_id) == 4
    assert next(m for m in markers if m[0] == item_id)[2:] == ("worker-2", 2)
