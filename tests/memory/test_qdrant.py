"""The Qdrant vector store against qdrant-client's local mode (in memory, and in a folder):
the same contract as the SQLite one, and the embedder and search running on it."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentos.memory.config import VectorStoreConfig
from agentos.memory.embedder import Embedder
from agentos.memory.qdrant import QdrantVectorStore
from agentos.memory.search import search
from agentos.memory.vectors import (
    SqliteVectorStore,
    VectorDimensionError,
    VectorHit,
    VectorRecord,
    VectorSpace,
    VectorStoreError,
    open_vector_store,
)
from agentos.router.router import Router
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from tests.memory.conftest import MODEL, Connect, add_result, embedded_inputs, marks, new_run
from tests.memory.test_vectors import cosine, rand_vector, record


def same_hits(a: list[VectorHit], b: list[VectorHit]) -> bool:
    """Equal records in equal order, scores equal up to float32 rounding."""
    fields = [(h.source, h.source_id, h.text, h.run_id, h.agent, h.created_at) for h in a]
    return fields == [
        (h.source, h.source_id, h.text, h.run_id, h.agent, h.created_at) for h in b
    ] and all(abs(x.score - y.score) < 1e-5 for x, y in zip(a, b, strict=True))


@pytest.fixture
def qdrant() -> Iterator[QdrantVectorStore]:
    opened = QdrantVectorStore.from_config(VectorStoreConfig(type="qdrant", path=":memory:"))
    yield opened
    opened.close()


def test_query_ranks_by_cosine_like_the_sqlite_store(
    store: Store, qdrant: QdrantVectorStore
) -> None:
    rng = random.Random(11)
    stored = [rand_vector(rng, 24) for _ in range(200)]
    records = [record(i, v, agent="a" if i % 3 else "b") for i, v in enumerate(stored)]
    qdrant.add("m", records)
    sqlite = SqliteVectorStore(store)
    sqlite.add("m", records)
    store.flush()
    query = rand_vector(rng, 24)
    expected = sorted(range(200), key=lambda i: -cosine(query, stored[i]))[:10]

    try:
        hits = qdrant.query("m", query, limit=10)
        assert [h.source_id for h in hits] == [str(i) for i in expected]
        assert [h.score for h in hits] == pytest.approx(
            [cosine(query, stored[i]) for i in expected], abs=1e-5
        )
        assert same_hits(hits, sqlite.query("m", query, limit=10))
        only_b = qdrant.query("m", query, limit=100, agent="b")
        assert same_hits(only_b, sqlite.query("m", query, limit=100, agent="b"))
        assert len(only_b) == 67 and {h.agent for h in only_b} == {"b"}
    finally:
        sqlite.close()


def test_upserts_and_separate_spaces(qdrant: QdrantVectorStore) -> None:
    qdrant.add("model/a", [record(1, [1.0, 0.0], text="old"), record(2, [0.0, 1.0, 0.0])])
    qdrant.add("model/a", [record(1, [0.0, 1.0], text="new")])
    qdrant.add("model-a", [record(1, [1.0, 0.0])])

    spaces = {(s.model, s.dim, s.count) for s in qdrant.spaces()}
    assert spaces == {("model/a", 2, 1), ("model/a", 3, 1), ("model-a", 2, 1)}
    assert {(s.dim, s.count) for s in qdrant.spaces("model/a")} == {(2, 1), (3, 1)}
    hits = qdrant.query("model/a", [0.0, 1.0], limit=5)
    assert [(h.source_id, h.text, h.score) for h in hits] == [("1", "new", pytest.approx(1.0))]
    assert qdrant.collection("model/a", 2) != qdrant.collection("model-a", 2)
    assert qdrant.query("never-stored", [1.0], limit=5) == []


def test_a_query_of_another_dimension_is_refused_clearly(qdrant: QdrantVectorStore) -> None:
    qdrant.add("smollm2", [record(1, [1.0] * 576)])

    with pytest.raises(VectorDimensionError) as caught:
        qdrant.query("smollm2", [1.0] * 384, limit=3)
    assert str(caught.value).startswith(
        "the query vector has 384 dimensions, but the stored vectors of model 'smollm2' have 576"
    )
    with pytest.raises(VectorStoreError, match="NaN"):
        qdrant.add("smollm2", [record(2, [float("inf")] * 576)])


def test_local_mode_in_a_folder_keeps_vectors_across_reopening(tmp_path: Path) -> None:
    config = VectorStoreConfig(type="qdrant", path=str(tmp_path / "qdrant"))
    first = QdrantVectorStore.from_config(config)
    first.add("m", [record(1, [1.0, 0.0], run_id="r1", agent="writer")])
    first.close()

    again = QdrantVectorStore.from_config(config)
    try:
        (hit,) = again.query("m", [1.0, 0.0], limit=5)
    finally:
        again.close()
    assert (hit.source, hit.source_id, hit.run_id, hit.agent, hit.text) == (
        "results",
        "1",
        "r1",
        "writer",
        "text 1",
    )
    assert hit.created_at == 1_700_000_001.0


async def test_embedder_and_search_on_qdrant(
    store: Store, qdrant: QdrantVectorStore, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    for i in range(40):
        add_result(store, run_id, f"qdrant note {i}")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL, vectors=qdrant, batch_size=8)
            try:
                assert await embedder.embed_pending() == 40
                await store.aflush()
                assert await embedder.embed_pending() == 0
            finally:
                embedder.close()
            hits = await search(
                store, "qdrant note 17", router=router, model=MODEL, vectors=qdrant, limit=3
            )

    assert len(embedded_inputs(engine)) == 40 + 1
    assert len(marks(store)) == 40
    assert store.db.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
    assert [(s.model, s.dim, s.count) for s in qdrant.spaces()] == [(MODEL, 16, 40)]
    assert hits[0].text == "qdrant note 17"
    assert (hits[0].agent, hits[0].run_id) == ("writer", run_id)


def test_vector_store_config() -> None:
    assert VectorStoreConfig().type == "sqlite"
    assert VectorStoreConfig(type="qdrant", url="http://localhost:6333").url
    with pytest.raises(ValidationError, match="exactly one of url"):
        VectorStoreConfig(type="qdrant")
    with pytest.raises(ValidationError, match="exactly one of url"):
        VectorStoreConfig(type="qdrant", url="http://q:6333", path="/tmp/q")
    with pytest.raises(ValidationError, match="belong to type: qdrant"):
        VectorStoreConfig(url="http://q:6333")
    with pytest.raises(ValidationError, match="Extra inputs"):
        VectorStoreConfig.model_validate({"type": "qdrant", "path": ":memory:", "colour": 1})


def test_open_vector_store_follows_the_config(store: Store) -> None:
    default = open_vector_store(None, store)
    configured = open_vector_store(VectorStoreConfig(type="qdrant", path=":memory:"), store)
    try:
        assert isinstance(default, SqliteVectorStore)
        assert isinstance(configured, QdrantVectorStore)
        assert configured.description == "qdrant (:memory:)"
    finally:
        default.close()
        configured.close()


class FailingAfter:
    """A vector store that stores the first ``adds`` batches in ``inner``, then fails as a
    Qdrant server that went away would (a process killed mid-switch, in effect)."""

    def __init__(self, inner: QdrantVectorStore, adds: int) -> None:
        self.inner = inner
        self.adds = adds
        self.description = inner.description
        self.key = inner.key

    def add(self, model: str, records: Sequence[VectorRecord]) -> None:
        if self.adds == 0:
            raise ConnectionError("qdrant went away")
        self.adds -= 1
        self.inner.add(model, records)

    def query(self, *args: Any, **kwargs: Any) -> list[VectorHit]:
        return self.inner.query(*args, **kwargs)

    def spaces(self, model: str | None = None) -> list[VectorSpace]:
        return self.inner.spaces(model)

    def close(self) -> None:
        pass


async def test_switching_to_qdrant_indexes_every_record_into_it_resumably(
    store: Store, tmp_path: Path, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    for i in range(14):
        add_result(store, run_id, f"kept note {i}")
    store.flush()
    config = VectorStoreConfig(type="qdrant", path=str(tmp_path / "qdrant"))

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            on_sqlite = Embedder(store, router, MODEL, batch_size=4)
            try:
                assert await on_sqlite.embed_pending() == 14
            finally:
                on_sqlite.close()
            await store.aflush()
            add_result(store, run_id, "a note written after the switch")
            await store.aflush()
            asked_before_switch = len(embedded_inputs(engine))

            qdrant = QdrantVectorStore.from_config(config)
            interrupted = Embedder(store, router, MODEL, vectors=FailingAfter(qdrant, 2))
            interrupted.batch_size = 4
            try:
                with pytest.raises(ConnectionError):
                    await interrupted.embed_pending()
            finally:
                interrupted.close()
            await store.aflush()
            assert [s.count for s in qdrant.spaces(MODEL)] == [8]

            resumed = Embedder(store, router, MODEL, vectors=qdrant, batch_size=4)
            try:
                assert await resumed.embed_pending() == 7
                await store.aflush()
                assert await resumed.embed_pending() == 0
                assert resumed.progress().pending == 0
                assert resumed.progress().embedded == 15
            finally:
                resumed.close()
            hits = await search(
                store, "kept note 3", router=router, model=MODEL, vectors=qdrant, limit=1
            )
            qdrant.close()

    reopened = QdrantVectorStore.from_config(config)
    try:
        assert [(s.model, s.count) for s in reopened.spaces()] == [(MODEL, 15)]
    finally:
        reopened.close()
    assert hits[0].text == "kept note 3"
    # the 14 vectors already in SQLite were copied, not asked of the engine again: only
    # the new note and the search query were embedded after the switch
    assert embedded_inputs(engine)[asked_before_switch:] == [
        "a note written after the switch",
        "kept note 3",
    ]
    assert set(marks(store).values()) == {"embedded"}
    stores = store.db.execute("SELECT DISTINCT store FROM embedded_sources").fetchall()
    assert stores == [(reopened.key,)]
