"""The writer thread: grouping, ordering, failures, flush, and readers running alongside."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agentos.errors import StoreError
from agentos.store import Atomic, Execute, Insert, Store, Update, Writer
from agentos.store.writer import Call


def insert_health(name: str, **extra: object) -> Insert:
    return Insert("engine_health", {"name": name, **extra})


def names(store: Store) -> list[str]:
    return [row[0] for row in store.db.execute("SELECT name FROM engine_health ORDER BY name")]


def test_ten_thousand_inserts_take_far_fewer_commits_than_rows(store: Store) -> None:
    for i in range(10_000):
        store.submit(Insert("engine_health", {"name": f"e{i:05d}", "healthy": i % 2}))
    store.flush()
    assert store.db.table("engine_health").count == 10_000
    assert store.writer.ops_written == 10_000
    assert store.writer.commits < 200


def test_ops_are_applied_in_submission_order(store: Store) -> None:
    store.submit(insert_health("a", detail="first"))
    for i in range(100):
        store.submit(Update("engine_health", "a", {"detail": f"v{i}"}))
    store.submit(Execute("UPDATE engine_health SET healthy = ? WHERE name = ?", [1, "a"]))
    store.flush()
    row = store.db.table("engine_health").get("a")
    assert (row["detail"], row["healthy"]) == ("v99", 1)


def test_json_values_are_stored_as_text(store: Store) -> None:
    store.submit(insert_health("a", models=["m1", "m2"], capabilities=("chat",)))
    store.flush()
    row = store.db.execute("SELECT models, capabilities FROM engine_health").fetchone()
    assert row == ('["m1", "m2"]', '["chat"]')


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the write lock, so the writer queues up behind it."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_a_failing_op_does_not_lose_the_rest_of_its_group(store: Store, db_path: Path) -> None:
    store.submit(insert_health("dup"))
    store.flush()
    commits_before = store.writer.commits

    blocker = hold_write_lock(db_path)
    good = [f"g{i:02d}" for i in range(40)]
    for name in good[:20]:
        store.submit(insert_health(name))
    store.submit(insert_health("dup"))  # duplicate primary key
    for name in good[20:]:
        store.submit(insert_health(name))
    blocker.execute("COMMIT")
    blocker.close()

    with pytest.raises(StoreError) as info:
        store.flush()
    assert "engine_health" in str(info.value)
    assert "UNIQUE" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert names(store) == sorted([*good, "dup"])
    assert store.writer.ops_failed == 1
    # The group of 41 failed; its halves were written on their own, each half holding
    # no bad op in one transaction: a handful of commits, not one per op.
    assert store.writer.commits - commits_before <= 2 * 6

    store.flush()  # the error was reported once; later flushes are clean
    store.submit(insert_health("after"))
    store.flush()
    assert "after" in names(store)


def test_a_call_sees_every_op_queued_before_it_and_fails_alone(store: Store) -> None:
    """A Call runs in the writer thread in the group's transaction: what it reads is
    exactly what was submitted before it (also inserts batched into the same group), and
    a Call that raises is reported by flush without losing the others. Ops of a failed
    group are written again, so a Call may run more than once: its writes roll back with
    the group, only side effects outside the database would show."""
    seen: list[int] = []

    def count(conn: sqlite3.Connection) -> None:
        seen.append(conn.execute("SELECT count(*) FROM engine_health").fetchone()[0])
        conn.execute("UPDATE engine_health SET detail = 'sealed' WHERE name = 'e0000'")

    def broken(conn: sqlite3.Connection) -> None:
        raise ValueError("no seal today")

    for i in range(500):
        store.submit(insert_health(f"e{i:04d}"))
    store.submit(Atomic((Update("engine_health", "e0001", {"detail": "x"}), Call(count))))
    for i in range(500, 600):
        store.submit(insert_health(f"e{i:04d}"))
    store.submit(Call(broken))
    store.submit(Call(count))
    with pytest.raises(StoreError, match="call broken: no seal today"):
        store.flush()
    assert set(seen) == {500, 600}  # a failed group is retried in halves: calls rerun
    assert seen[-1] == 600
    assert store.db.table("engine_health").get("e0000")["detail"] == "sealed"
    assert store.db.table("engine_health").count == 600


def test_update_of_a_missing_row_is_reported(store: Store) -> None:
    store.submit(Update("engine_health", "nope", {"healthy": 1}))
    store.submit(insert_health("kept"))
    with pytest.raises(StoreError, match="no row in engine_health"):
        store.flush()
    assert names(store) == ["kept"]


def test_atomic_ops_commit_together_or_not_at_all(store: Store) -> None:
    store.submit(insert_health("taken"))
    store.submit(Atomic((insert_health("x1"), insert_health("taken"))))
    store.submit(Atomic((insert_health("y1"), insert_health("y2"))))
    with pytest.raises(StoreError, match="atomic write of 2 ops"):
        store.flush()
    assert names(store) == ["taken", "y1", "y2"]


def test_close_commits_what_is_queued(db_path: Path) -> None:
    store = Store(db_path)
    for i in range(500):
        store.submit(insert_health(f"e{i}"))
    store.close()
    with Store(db_path) as again:
        assert again.db.table("engine_health").count == 500


def test_flush_without_writes_does_not_start_a_thread(store: Store) -> None:
    store.flush()
    assert store.writer._thread is None


async def test_aflush_waits_without_blocking_the_event_loop(store: Store, db_path: Path) -> None:
    blocker = hold_write_lock(db_path)
    store.submit(insert_health("a"))
    # A flush that blocked the loop would give up after 2 s and be done before the sleep.
    flushing = asyncio.create_task(store.aflush(timeout=2))
    await asyncio.sleep(0.05)
    assert not flushing.done()
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.wait_for(flushing, 10)
    assert names(store) == ["a"]


def test_a_writer_that_cannot_open_its_file_fails_loudly(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "no such folder" / "x.db")
    writer.submit(insert_health("lost"))
    with pytest.raises(StoreError, match="stopped after an error"):
        writer.flush(timeout=10)
    with pytest.raises(StoreError, match="stopped after an error"):
        writer.submit(insert_health("refused"))
    with pytest.raises(StoreError):
        writer.close()


def test_readers_are_not_blocked_by_an_open_write_transaction(store: Store, db_path: Path) -> None:
    store.submit(insert_health("committed"))
    store.flush()
    blocker = hold_write_lock(db_path)
    blocker.execute("INSERT INTO engine_health (name) VALUES ('uncommitted')")
    try:
        reader = sqlite3.connect(db_path)
        reader.execute("PRAGMA busy_timeout = 0")  # a blocked read would fail at once
        rows = reader.execute("SELECT name FROM engine_health").fetchall()
        reader.close()
        assert rows == [("committed",)]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_a_reader_thread_sees_rows_grow_while_the_writer_inserts(
    store: Store, db_path: Path
) -> None:
    total, chunk = 6000, 500
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read_loop() -> None:
        conn = sqlite3.connect(db_path)
        try:
            while not done.is_set():
                seen.append(conn.execute("SELECT count(*) FROM engine_health").fetchone()[0])
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for start in range(0, total, chunk):
            for i in range(start, start + chunk):
                store.submit(insert_health(f"e{i:05d}", detail="x" * 100))
            store.flush()
            if start == total // 2:
                deadline = time.monotonic() + 10
                while not any(0 < n < total for n in seen) and time.monotonic() < deadline:
                    time.sleep(0.001)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert seen == sorted(seen), "a reader saw the row count go down"
    assert any(0 < n < total for n in seen), "the reader never saw a partial count"
    assert store.db.table("engine_health").count == total


def _run_row(run_id: str) -> Insert:
    return Insert(
        "runs",
        {"id": run_id, "agent": "a", "kind": "prompt", "status": "running", "started_at": 0.0},
    )


def _event(run_id: str, seq: int) -> Insert:
    return Insert("events", {"run_id": run_id, "seq": seq, "type": "t", "time": 0.0})


def test_a_group_batches_inserts_with_the_outcome_of_writing_op_by_op(
    store: Store, db_path: Path
) -> None:
    """Inserts are batched per statement; updates and executes still see exactly the rows
    before them, an insert after them comes after them, and a child row whose statement
    batch runs before its parent's is fine (foreign keys are checked at COMMIT)."""
    blocker = hold_write_lock(db_path)
    store.submit(_run_row("A"))
    store.submit(_event("A", 1))
    store.submit(Insert("engine_health", {"name": "h", "detail": "x"}, replace=True))
    store.submit(Update("engine_health", "h", {"detail": "y"}))
    store.submit(Insert("engine_health", {"name": "h", "detail": "z"}, replace=True))
    store.submit(_run_row("B"))  # its events join the batch of A's, which runs first
    store.submit(_event("B", 1))
    store.submit(_event("A", 2))
    store.submit(
        Execute(
            "UPDATE runs SET error = (SELECT count(*) FROM events) WHERE id = 'A'",
            tables=("runs", "events"),
        )
    )
    store.submit(_event("B", 2))
    store.submit(Execute("UPDATE runs SET error = (SELECT count(*) FROM events) WHERE id = 'B'"))
    commits_before = store.writer.commits
    blocker.execute("COMMIT")
    blocker.close()
    store.flush()
    assert store.writer.commits - commits_before == 1
    assert store.db.execute("SELECT detail FROM engine_health").fetchall() == [("z",)]
    errors = dict(store.db.execute("SELECT id, error FROM runs").fetchall())
    assert errors == {"A": "3", "B": "4"}
    assert store.db.execute("SELECT count(*) FROM events").fetchone() == (4,)


def test_a_child_without_its_parent_is_reported_and_the_group_is_kept(
    store: Store, db_path: Path
) -> None:
    blocker = hold_write_lock(db_path)
    store.submit(_run_row("A"))
    for seq in range(1, 20):
        store.submit(_event("A", seq))
    store.submit(_event("nobody", 1))
    for seq in range(20, 40):
        store.submit(_event("A", seq))
    blocker.execute("COMMIT")
    blocker.close()
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        store.flush()
    assert store.db.execute("SELECT count(*) FROM events WHERE run_id = 'A'").fetchone() == (39,)
    assert store.writer.ops_failed == 1


def test_repeated_updates_of_a_row_are_merged_only_where_nothing_sees_them(
    store: Store, db_path: Path
) -> None:
    store.submit(insert_health("h"))
    store.flush()
    blocker = hold_write_lock(db_path)
    for i in range(5):
        store.submit(Update("engine_health", "h", {"detail": f"y{i}"}))
    store.submit(
        Execute(
            "UPDATE engine_health SET base_url = detail WHERE name = 'h'",
            tables=("engine_health",),
        )
    )
    store.submit(Update("engine_health", "h", {"detail": "z"}))
    store.submit(Update("engine_health", "gone", {"detail": "z"}))
    store.submit(Update("engine_health", "gone", {"detail": "zz"}))
    blocker.execute("COMMIT")
    blocker.close()
    with pytest.raises(StoreError, match="no row in engine_health"):
        store.flush()
    row = store.db.table("engine_health").get("h")
    assert (row["base_url"], row["detail"]) == ("y4", "z")


def test_submit_waits_while_the_backlog_is_full(store: Store, db_path: Path) -> None:
    """Backpressure: past max_backlog queued ops, submit waits for the writer to catch
    up to half of it, so what is queued stays bounded; nothing is lost."""
    writer = Writer(db_path, max_backlog=100)
    blocker = hold_write_lock(db_path)
    submitted: list[int] = []

    def produce() -> None:
        for i in range(300):
            writer.submit(insert_health(f"e{i:03d}"))
            submitted.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 10
    while len(submitted) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    # the writer waits for the lock with what it took; the 101st submit waits for it
    assert len(submitted) == 100
    assert writer.backlog == 101
    blocker.execute("COMMIT")
    blocker.close()
    producer.join(10)
    assert len(submitted) == 300
    writer.close()
    assert store.db.table("engine_health").count == 300


async def test_room_waits_off_the_event_loop_until_the_writer_caught_up(
    store: Store, db_path: Path
) -> None:
    writer = Writer(db_path, max_backlog=80)
    assert not writer.congested
    await writer.room()  # nothing queued: at once
    blocker = hold_write_lock(db_path)
    for i in range(40):
        writer.submit(insert_health(f"e{i:03d}"))
    assert writer.congested
    waiting = asyncio.create_task(writer.room())
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not waiting.done() and ticks == 10  # the loop kept running
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.wait_for(waiting, 10)
    assert writer.backlog <= 10
    await writer.aclose()
