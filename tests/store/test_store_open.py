"""Opening the database: migrations, schema checks, WAL, read-only mode."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from agentos.errors import SchemaTooNewError, StoreError
from agentos.store import MIGRATIONS, MIGRATIONS_TABLE, Insert, Store, migrations

TABLES = {"runs", "events", "llm_calls", "results", "engine_health"}


def applied(path: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"SELECT name, applied_at FROM {MIGRATIONS_TABLE} ORDER BY name")
        result = rows.fetchall()
    conn.close()
    return result


def test_fresh_file_is_created_and_migrated(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with Store(db_path) as store:
        assert TABLES | {MIGRATIONS_TABLE} <= set(store.db.table_names())
        assert store.db.journal_mode == "wal"
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    names = [name for name, _ in applied(db_path)]
    assert names == [fn.__name__ for fn in MIGRATIONS]
    assert names[0] == "m001_initial"


def test_reopening_applies_nothing_twice(db_path: Path) -> None:
    Store(db_path).close()
    first = applied(db_path)
    with Store(db_path) as store:
        store.submit(Insert("engine_health", {"name": "local", "healthy": 1}))
    with Store(db_path) as store:
        assert store.db.table("engine_health").count == 1
    assert applied(db_path) == first


def test_schema_matches_the_documented_columns(store: Store) -> None:
    runs = store.db.table("runs")
    assert runs.pks == ["id"]
    assert {c.name for c in runs.columns} >= {"spec", "parent_id", "forked_from", "pid", "host"}
    assert {c.name: c.type for c in store.db.table("events").columns}["time"] == "REAL"
    indexes = {tuple(i.columns): i.unique for i in store.db.table("events").indexes}
    assert indexes[("run_id", "seq")] == 1
    assert store.db.table("engine_health").pks == ["name"]


def test_database_from_a_newer_agentos_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES ('m999_from_the_future', 0)")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(SchemaTooNewError) as info:
            Store(db_path, readonly=readonly)
        assert str(db_path) in str(info.value)
        assert "m999_from_the_future" in str(info.value)
        assert "upgrade agentos" in str(info.value)


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, SchemaTooNewError)


def test_a_failing_migration_leaves_the_database_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_path).close()
    before = applied(db_path)

    def m900_broken(db: sqlite_utils.Database) -> None:
        db.table("half_done").create({"id": int}, pk="id")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, m900_broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(db_path)
    monkeypatch.undo()
    with Store(db_path) as store:
        assert "half_done" not in store.db.table_names()
    assert applied(db_path) == before


def test_processes_opening_a_fresh_database_together_migrate_it_once(db_path: Path) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            barrier.wait()
            Store(db_path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [name for name, _ in applied(db_path)] == [fn.__name__ for fn in MIGRATIONS]


def test_readonly_reads_without_writing(db_path: Path) -> None:
    with Store(db_path) as store:
        store.submit(Insert("engine_health", {"name": "local", "healthy": 1}))
    with Store(db_path, readonly=True) as reader:
        assert reader.db.table("engine_health").count == 1
        with pytest.raises(StoreError, match="read-only"):
            reader.submit(Insert("engine_health", {"name": "other"}))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.db.execute("DELETE FROM engine_health")


def test_readonly_refuses_a_missing_database(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no agentos database"):
        Store(path, readonly=True)
    assert not path.exists()


def test_readonly_refuses_a_database_that_needs_migrating(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE unrelated (x)")
    conn.close()
    with pytest.raises(StoreError, match="needs migrating"):
        Store(path, readonly=True)


def test_close_is_idempotent_and_stops_writes(db_path: Path) -> None:
    store = Store(db_path)
    store.submit(Insert("engine_health", {"name": "a"}))
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.submit(Insert("engine_health", {"name": "b"}))
    with Store(db_path) as again:
        assert [r["name"] for r in again.db.table("engine_health").rows] == ["a"]
