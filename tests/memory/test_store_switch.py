"""The marks name the vector store that holds each record (migration m007), so a record
is indexed again into a store that was switched to, and databases made before m007 keep
what their marks already meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentos.memory.sources import SourceReader
from agentos.memory.vectors import SqliteVectorStore
from agentos.store import Store, migrations
from agentos.store.writer import Insert
from tests.memory.conftest import MODEL, add_result, new_run
from tests.memory.test_vectors import record


def mark(source_id: str, status: str, dim: int | None) -> Insert:
    return Insert(
        "embedded_sources",
        {
            "source": "results",
            "source_id": source_id,
            "model": MODEL,
            "dim": dim,
            "status": status,
            "embedded_at": 1.0,
        },
    )


def test_m007_keeps_marks_of_vectors_in_sqlite_and_reopens_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agentos.db"
    # every migration but m007, so that today's code can write the runs and results a
    # database made before m007 held (the later migrations only add what it writes)
    without_m007 = [fn for fn in migrations.MIGRATIONS if not fn.__name__.startswith("m007")]
    monkeypatch.setattr(migrations, "MIGRATIONS", without_m007)
    with Store(path) as old:
        run_id = new_run(old, "writer")
        for i in range(4):
            add_result(old, run_id, f"note {i}")
        old.flush()
        ids = [str(i) for (i,) in old.db.execute("SELECT id FROM results ORDER BY id")]
        vectors = SqliteVectorStore(old, use_sqlite_vec=False)
        # ids[0]: embedded into SQLite; ids[1]: embedded into a Qdrant store (no vector
        # here); ids[2]: empty; ids[3]: never embedded
        vectors.add(MODEL, [record(int(ids[0]), [1.0, 0.0])])
        vectors.close()
        old.flush()
        old.submit(mark(ids[0], "embedded", 2))
        old.submit(mark(ids[1], "embedded", 2))
        old.submit(mark(ids[2], "empty", None))
        old.flush()
        assert "store" not in old.db.table("embedded_sources").columns_dict
    monkeypatch.undo()

    with Store(path) as store:
        rows = store.db.execute(
            "SELECT source_id, store FROM embedded_sources ORDER BY source_id"
        ).fetchall()
        assert rows == [(ids[0], "sqlite"), (ids[1], None), (ids[2], None)]
        reader = SourceReader(store)
        try:
            pending = reader.pending("results", MODEL, store="sqlite", after=0, limit=10)
            assert [row.source_id for row in pending] == [ids[1], ids[3]]
            counts = reader.counts(MODEL, "sqlite")
            assert (counts.embedded, counts.empty, counts.pending) == (1, 1, 2)
            # into a Qdrant store everything with text is pending; the one SQLite holds
            # comes with its vector, to be copied
            elsewhere = reader.pending("results", MODEL, store="qdrant:x/y", after=0, limit=10)
            assert [(row.source_id, row.stored is not None) for row in elsewhere] == [
                (ids[0], True),
                (ids[1], False),
                (ids[3], False),
            ]
        finally:
            reader.close()
