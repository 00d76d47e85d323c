"""search() and the memory_search tool, on records embedded by background[embeddings]
through a router on the loopback engine (whose vectors are deterministic: the same text
always gets the same vector, different texts nearly orthogonal ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentos.errors import AgentosError
from agentos.memory.embedder import Embedder
from agentos.memory.search import Memory, MemoryUnavailableError, hit_to_json, memory_search, search
from agentos.memory.vectors import SqliteVectorStore, VectorDimensionError, VectorStoreError
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import Router
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from tests.memory.conftest import MODEL, Connect, add_result, add_sink_item, new_run

PLANTED = "The launch code for the orbital station is PELICAN-7"


@pytest.fixture
async def router(store: Store, connect: Connect) -> AsyncIterator[Router]:
    """A router on a loopback engine, over a store holding 200 embedded results of two
    agents, the planted one among them, and a sink item repeating one result."""
    writer = new_run(store, "writer")
    reader = new_run(store, "reader")
    for i in range(200):
        add_result(store, writer if i % 2 else reader, f"ordinary note number {i}")
    add_result(store, writer, PLANTED)
    add_sink_item(store, "notes", PLANTED, produced_by=writer)
    store.flush()
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle], recorder=StoreCallRecorder(store)) as opened:
            embedder = Embedder(store, opened, MODEL, batch_size=64)
            try:
                assert await embedder.embed_pending() == 202
            finally:
                embedder.close()
            await store.aflush()
            yield opened


async def test_search_finds_the_planted_record_with_its_run_agent_and_time(
    store: Store, router: Router
) -> None:
    hits = await search(store, PLANTED, router=router, model=MODEL, limit=5)

    assert len(hits) == 5
    best = hits[0]
    assert best.text == PLANTED
    assert best.score == pytest.approx(1.0, abs=1e-5)
    assert best.agent == "writer"
    assert best.run_id is not None and best.created_at is not None
    assert best.source in ("results", "sink_items")
    # the sink item repeating the result is shown once
    assert [h.text for h in hits].count(PLANTED) == 1
    assert all(h.score < 0.9 for h in hits[1:])
    as_json = hit_to_json(best)
    assert as_json["time"].endswith("+00:00")
    assert set(as_json) == {
        "score", "text", "agent", "run_id", "time", "created_at", "source", "source_id",
    }  # fmt: skip


async def test_search_by_agent_returns_only_that_agents_records(
    store: Store, router: Router
) -> None:
    hits = await search(
        store, "ordinary note number 10", router=router, model=MODEL, agent="reader", limit=50
    )

    assert len(hits) == 50
    assert {h.agent for h in hits} == {"reader"}
    assert hits[0].text == "ordinary note number 10"
    assert PLANTED not in {h.text for h in hits}


async def test_search_refuses_what_it_cannot_answer(store: Store, router: Router) -> None:
    with pytest.raises(AgentosError, match="empty"):
        await search(store, "   ", router=router, model=MODEL)
    with pytest.raises(AgentosError, match="at least 1"):
        await search(store, "x", router=router, model=MODEL, limit=0)
    with pytest.raises(VectorStoreError, match="'test-model'") as caught:
        await search(store, "x", router=router, model="another-model")
    assert "nothing is embedded with model 'another-model'" in str(caught.value)


async def test_nothing_embedded_yet_is_an_empty_answer(store: Store, connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            assert await search(store, "anything", router=router, model=MODEL) == []
    assert engine.stats.requests == 0


async def test_a_query_embedded_with_another_dimension_is_refused(
    store: Store, router: Router, connect: Connect
) -> None:
    """Same model name, another vector size (an engine swapped behind the name): the
    stored vectors cannot be compared with the query's."""
    async with LoopbackEngine(embedding_dim=8) as smaller:
        handle = await connect(smaller)
        async with Router([handle]) as other:
            with pytest.raises(VectorDimensionError) as caught:
                await search(store, PLANTED, router=other, model=MODEL)
    assert str(caught.value).startswith(
        "the query vector has 8 dimensions, but the stored vectors of model 'test-model' have 16"
    )


@dataclasses.dataclass
class ToolContext:
    memory: Memory | None
    run_id: str | None = None
    agent: str | None = None


async def test_memory_search_tool_recalls_records_and_records_its_query(
    store: Store, router: Router
) -> None:
    asker = new_run(store, "asker")
    memory = Memory(store=store, router=router, model=MODEL, vectors=SqliteVectorStore(store))
    context = ToolContext(memory=memory, run_id=asker, agent="asker")
    try:
        found: list[dict[str, Any]] = await memory_search(
            "launch code of the orbital station PELICAN-7", context=context
        )
        exact = await memory_search(PLANTED, limit=100, context=context)
        only_reader = await memory_search(PLANTED, limit=3, agent="reader", context=context)
    finally:
        memory.vectors.close()
    await store.aflush()

    assert len(found) == 5
    assert exact[0]["text"] == PLANTED and exact[0]["agent"] == "writer"
    assert len(exact) == 20  # capped
    assert [h["agent"] for h in only_reader] == ["reader"] * 3
    calls = store.db.execute("SELECT kind FROM llm_calls WHERE run_id = ?", [asker]).fetchall()
    assert calls == [("embeddings",)] * 3
    assert router.processes["asker"].jobs == 3


async def test_memory_search_without_embeddings_says_why() -> None:
    with pytest.raises(MemoryUnavailableError, match="serves embeddings"):
        await memory_search("anything", context=ToolContext(memory=None))
