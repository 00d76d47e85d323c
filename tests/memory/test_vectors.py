"""The SQLite vector store: exact cosine ranking, upserts, spaces that never mix, clear
refusals, and vectors that go when their run is pruned."""

from __future__ import annotations

import math
import random
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.memory.vectors import (
    SqliteVectorStore,
    VectorDimensionError,
    VectorRecord,
    VectorStoreError,
    pack_vector,
)
from agentos.store import Store, queries
from agentos.store.retention import prune_runs
from tests.memory.conftest import new_run


def rand_vector(rng: random.Random, dim: int) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(dim)]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def record(i: int, vector: list[float], **fields: object) -> VectorRecord:
    return VectorRecord(
        source=str(fields.get("source", "results")),
        source_id=str(i),
        text=str(fields.get("text", f"text {i}")),
        vector=vector,
        run_id=fields.get("run_id"),  # type: ignore[arg-type]
        agent=fields.get("agent"),  # type: ignore[arg-type]
        created_at=1_700_000_000.0 + i,
    )


RANKINGS = [pytest.param(False, id="python"), pytest.param(True, id="sqlite-vec")]
"""Both rankings run everywhere: where this Python's sqlite3 cannot load extensions (this
project's machines), sqlite-vec is registered with its SQLite library, never skipped."""


@pytest.fixture(params=RANKINGS)
def vectors(request: pytest.FixtureRequest, store: Store) -> Iterator[SqliteVectorStore]:
    opened = SqliteVectorStore(store, use_sqlite_vec=request.param)
    assert opened.uses_sqlite_vec is request.param
    yield opened
    opened.close()


def test_query_ranks_every_vector_by_cosine_exactly(
    store: Store, vectors: SqliteVectorStore
) -> None:
    rng = random.Random(7)
    stored = [rand_vector(rng, 24) for _ in range(300)]
    vectors.add("m", [record(i, v) for i, v in enumerate(stored)])
    store.flush()
    query = rand_vector(rng, 24)
    expected = sorted(range(300), key=lambda i: -cosine(query, stored[i]))[:10]

    hits = vectors.query("m", query, limit=10)

    assert [h.source_id for h in hits] == [str(i) for i in expected]
    for hit, i in zip(hits, expected, strict=True):
        assert hit.score == pytest.approx(cosine(query, stored[i]), abs=1e-5)
        assert hit.text == f"text {i}"
        assert hit.created_at == 1_700_000_000.0 + i
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_vectors_are_stored_as_little_endian_unit_float32(
    store: Store, vectors: SqliteVectorStore
) -> None:
    vectors.add("m", [record(1, [3.0, 4.0])])
    store.flush()
    (blob,) = store.db.execute("SELECT vector FROM embeddings").fetchone()
    assert struct.unpack("<2f", blob) == pytest.approx((0.6, 0.8))
    assert blob == pack_vector([0.6, 0.8])


def test_adding_a_record_again_replaces_it(store: Store, vectors: SqliteVectorStore) -> None:
    vectors.add("m", [record(1, [1.0, 0.0], text="old"), record(2, [0.0, 1.0])])
    vectors.add("m", [record(1, [0.0, 1.0], text="new")])
    store.flush()

    assert [(s.model, s.dim, s.count) for s in vectors.spaces()] == [("m", 2, 2)]
    hits = vectors.query("m", [0.0, 1.0], limit=5)
    assert {h.source_id: h.text for h in hits} == {"1": "new", "2": "text 2"}
    assert all(h.score == pytest.approx(1.0) for h in hits)


def test_models_and_dimensions_are_separate_spaces(
    store: Store, vectors: SqliteVectorStore
) -> None:
    vectors.add("a", [record(1, [1.0, 0.0, 0.0]), record(2, [0.0, 1.0])])
    vectors.add("b", [record(1, [1.0, 0.0, 0.0])])
    store.flush()

    assert [(s.model, s.dim, s.count) for s in vectors.spaces()] == [
        ("a", 2, 1),
        ("a", 3, 1),
        ("b", 3, 1),
    ]
    hits = vectors.query("a", [1.0, 0.0, 0.0], limit=10)
    assert [(h.source_id, h.score) for h in hits] == [("1", pytest.approx(1.0))]
    assert [h.source_id for h in vectors.query("a", [0.0, 1.0], limit=10)] == ["2"]
    assert vectors.query("never-stored", [1.0, 0.0], limit=10) == []


def test_a_query_of_another_dimension_is_refused_clearly(
    store: Store, vectors: SqliteVectorStore
) -> None:
    vectors.add("smollm2", [record(1, [1.0] * 8), record(2, [0.5] * 16)])
    store.flush()

    with pytest.raises(VectorDimensionError) as caught:
        vectors.query("smollm2", [1.0] * 4, limit=3)
    message = str(caught.value)
    assert "4 dimensions" in message
    assert "'smollm2'" in message
    assert "8, 16" in message
    with pytest.raises(VectorDimensionError, match="empty vector"):
        vectors.query("smollm2", [], limit=3)


def test_agent_filter_and_limit(store: Store, vectors: SqliteVectorStore) -> None:
    rng = random.Random(3)
    vectors.add(
        "m",
        [record(i, rand_vector(rng, 8), agent="odd" if i % 2 else "even") for i in range(40)],
    )
    store.flush()
    query = rand_vector(rng, 8)

    odd = vectors.query("m", query, limit=50, agent="odd")
    assert len(odd) == 20
    assert {h.agent for h in odd} == {"odd"}
    assert len(vectors.query("m", query, limit=3)) == 3
    assert vectors.query("m", query, limit=0) == []


def test_bad_vectors_are_refused(store: Store, vectors: SqliteVectorStore) -> None:
    with pytest.raises(VectorStoreError, match="NaN"):
        vectors.add("m", [record(1, [1.0, float("nan")])])
    with pytest.raises(VectorDimensionError):
        vectors.add("m", [record(1, [])])
    vectors.add("m", [record(1, [0.0, 0.0]), record(2, [1.0, 0.0])])
    store.flush()
    hits = vectors.query("m", [1.0, 0.0], limit=5)
    assert [(h.source_id, h.score) for h in hits] == [("2", 1.0), ("1", 0.0)]


def test_a_record_of_a_pruned_run_is_dropped_without_a_write_error(
    store: Store, vectors: SqliteVectorStore
) -> None:
    run_id = new_run(store, "writer")
    vectors.add(
        "m",
        [
            record(1, [1.0, 0.0], run_id=run_id),
            record(2, [1.0, 0.0], run_id="no-such-run"),
            record(3, [1.0, 0.0]),
        ],
    )
    store.flush()  # would raise if the writer had failed an op

    assert sorted(h.source_id for h in vectors.query("m", [1.0, 0.0], limit=5)) == ["1", "3"]


def test_pruning_a_run_removes_its_vectors(store: Store, vectors: SqliteVectorStore) -> None:
    old = new_run(store, "writer")
    queries.finish_run(store, old, status="succeeded", successes=1, attempts=1)
    kept = new_run(store, "writer")
    queries.finish_run(store, kept, status="succeeded", successes=1, attempts=1)
    vectors.add("m", [record(1, [1.0, 0.0], run_id=old), record(2, [1.0, 0.0], run_id=kept)])
    store.flush()

    report = prune_runs(store, keep_last=1, reclaim_space=False)

    assert report.run_ids == [old]
    assert report.rows["embeddings"] == 1
    assert [h.run_id for h in vectors.query("m", [1.0, 0.0], limit=5)] == [kept]


def test_a_readonly_store_can_be_searched(tmp_path: Path) -> None:
    path = tmp_path / "agentos.db"
    with Store(path) as store:
        writer = SqliteVectorStore(store)
        writer.add("m", [record(1, [1.0, 0.0])])
        store.flush()
        writer.close()
    with Store(path, readonly=True) as readonly:
        reader = SqliteVectorStore(readonly)
        try:
            assert [h.source_id for h in reader.query("m", [1.0, 0.0], limit=1)] == ["1"]
        finally:
            reader.close()


def test_sqlite_vec_is_used_by_default_even_where_sqlite3_cannot_load_it(store: Store) -> None:
    opened = SqliteVectorStore(store)
    try:
        assert opened.uses_sqlite_vec, opened.sqlite_vec_problem
        assert opened.description == "sqlite (sqlite-vec)"
        opened.add("m", [record(1, [1.0, 0.0]), record(2, [0.6, 0.8])])
        store.flush()
        assert [h.source_id for h in opened.query("m", [0.0, 1.0], limit=2)] == ["2", "1"]
        # one SQLite library in the process: the standard one, never a second copy
        assert type(opened._conn) is sqlite3.Connection
    finally:
        opened.close()


def test_a_store_without_sqlite_vec_says_why_it_ranks_in_python(store: Store) -> None:
    opened = SqliteVectorStore(store, use_sqlite_vec=False)
    try:
        assert not opened.uses_sqlite_vec
        assert opened.description == "sqlite (cosine in Python; sqlite-vec not used: turned off)"
    finally:
        opened.close()
