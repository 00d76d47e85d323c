"""Shared pieces of the memory tests: a real store in tmp_path with rows to embed, and
routers on real loopback engines (``LoopbackEngine`` answers ``/v1/embeddings`` with
deterministic unit vectors, ``agentos.testing.answers.embedding_vector``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.router.client import EngineClient
from agentos.router.router import EngineHandle
from agentos.store import Store, queries
from agentos.store.writer import Insert
from agentos.testing.engine import LoopbackEngine

MODEL = "test-model"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "agentos.db") as opened:
        yield opened


def new_run(store: Store, agent: str) -> str:
    return queries.create_run(
        store, agent=agent, kind="prompt", spec={"name": agent}, wanted=1, agents_file=None
    )


def add_result(store: Store, run_id: str, data: Any) -> None:
    queries.record_result(store, run_id, None, data)


def add_answer(
    store: Store,
    run_id: str | None,
    text: str,
    *,
    kind: str = "chat",
    cache_hit: bool = False,
    status: str = "ok",
) -> str:
    if kind == "chat":
        response: dict[str, Any] = {"choices": [{"message": {"content": text}}]}
    elif kind == "completions":
        response = {"choices": [{"text": text}]}
    else:
        response = {"data": [{"embedding": [0.5, 0.5]}]}
    now = time.time()
    return queries.record_llm_call(
        store,
        run_id=run_id,
        job_id="job",
        attempt=1,
        engine="loop",
        model=MODEL,
        kind=kind,
        request={"model": MODEL},
        response=response if status == "ok" else None,
        status=status,
        cache_hit=cache_hit,
        started_at=now,
        finished_at=now,
    )


def add_sink_item(store: Store, sink: str, data: Any, produced_by: str) -> None:
    store.submit(
        Insert(
            "sink_items",
            {
                "sink": sink,
                "data": json.dumps(data),
                "dedupe_key": json.dumps([sink, data]),
                "produced_by": produced_by,
                "created_at": time.time(),
            },
        )
    )


def vector_rows(store: Store, model: str = MODEL) -> list[tuple[str, str]]:
    """(source, source_id) of every stored vector of ``model``, duplicates kept."""
    rows = store.db.execute(
        "SELECT source, source_id FROM embeddings WHERE model = ?", [model]
    ).fetchall()
    return [(str(s), str(i)) for s, i in rows]


def marks(store: Store, model: str = MODEL) -> dict[tuple[str, str], str]:
    rows = store.db.execute(
        "SELECT source, source_id, status FROM embedded_sources WHERE model = ?", [model]
    ).fetchall()
    return {(str(s), str(i)): str(status) for s, i, status in rows}


Connect = Callable[..., Awaitable[EngineHandle]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Detect a running loopback engine and wrap it in a handle; counters reset after
    detection, so ``engine.stats`` counts only what the router sent."""
    clients: list[EngineClient] = []

    async def make(
        engine: LoopbackEngine, *, name: str = "loop", max_requests: int = 4
    ) -> EngineHandle:
        client = EngineClient(name, engine.url, timeout=10.0)
        clients.append(client)
        info = await client.detect()
        assert info.healthy, info.detail
        engine.reset_stats()
        return EngineHandle(name=name, client=client, info=info, max_requests=max_requests)

    yield make
    for client in clients:
        await client.aclose()


def embedded_inputs(engine: LoopbackEngine) -> list[str]:
    """Every text the engine was asked to embed, in arrival order."""
    out: list[str] = []
    for path, body in engine.stats.recorded:
        if path == "/v1/embeddings":
            given = body["input"]
            out.extend([given] if isinstance(given, str) else given)
    return out
