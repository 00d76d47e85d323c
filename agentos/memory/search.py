"""Searching by meaning: ``agentos search`` and the agents' ``memory_search`` tool.

The query is embedded with the same model as the stored records (through the router, so
the request is queued, recorded and accounted like any other), then the vector store
returns the closest records of that model's space. Records whose text is identical (a
run's result that was also published to a sink, say) are shown once, best first.

:func:`search_database` is all of ``agentos search``: it opens the engines of a config and
the database, first embeds what is not embedded yet, then searches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentos.errors import AgentosError
from agentos.memory.backlog import BacklogStatus, ProgressBar, opened_memory
from agentos.memory.embedder import EmbeddingRouter, embed_text
from agentos.memory.vectors import SqliteVectorStore, VectorHit, VectorStore, VectorStoreError
from agentos.spec.config import Config
from agentos.store import Store

SEARCH_PROCESS = "search"
"""The process name ``agentos search`` accounts its query embedding to."""

MAX_QUERY_CHARS = 2000
_OVERFETCH = 3
"""Candidates fetched per wanted hit, so that dropping identical texts still leaves
``limit`` hits."""


async def search(
    store: Store,
    text: str,
    *,
    router: EmbeddingRouter,
    model: str,
    vectors: VectorStore | None = None,
    agent: str | None = None,
    limit: int = 10,
    priority: str = "user",
    process: str = SEARCH_PROCESS,
    run_id: str | None = None,
) -> list[VectorHit]:
    """The ``limit`` records closest in meaning to ``text`` (of ``agent`` only, if given),
    best first, each with its source, run, agent, time, text and cosine score.

    ``vectors`` defaults to the store's SQLite vector store. Nothing embedded yet is an
    empty answer; vectors stored only for other models, or a query vector of another
    dimension than the model's stored vectors, raise :class:`VectorStoreError` /
    :class:`~agentos.memory.vectors.VectorDimensionError` saying so.
    """
    text = text.strip()
    if not text:
        raise AgentosError("nothing to search for: the search text is empty")
    if limit < 1:
        raise AgentosError(f"the number of results must be at least 1, not {limit}")
    owned = vectors is None
    store_vectors: VectorStore = SqliteVectorStore(store) if vectors is None else vectors
    try:
        spaces = await asyncio.to_thread(store_vectors.spaces)
        if not any(space.model == model for space in spaces):
            others = sorted({space.model for space in spaces})
            if others:
                raise VectorStoreError(
                    f"nothing is embedded with model '{model}'; the vector store holds "
                    f"vectors of {', '.join(repr(m) for m in others)}. Search with an "
                    "engine that serves one of those, or let background[embeddings] "
                    f"embed everything again with '{model}'"
                )
            return []
        vector = await embed_text(
            router,
            model,
            text[:MAX_QUERY_CHARS],
            priority=priority,
            process=process,
            run_id=run_id,
        )
        candidates = await asyncio.to_thread(
            store_vectors.query, model, vector, limit=limit * _OVERFETCH, agent=agent
        )
    finally:
        if owned:
            store_vectors.close()
    hits: list[VectorHit] = []
    seen: set[str] = set()
    for hit in candidates:
        if hit.text in seen:
            continue
        seen.add(hit.text)
        hits.append(hit)
        if len(hits) == limit:
            break
    return hits


def hit_to_json(hit: VectorHit) -> dict[str, Any]:
    """One hit as ``--json`` and the tool show it (``time`` is ISO 8601, UTC)."""
    when = (
        dt.datetime.fromtimestamp(hit.created_at, dt.UTC).isoformat(timespec="seconds")
        if hit.created_at is not None
        else None
    )
    return {
        "score": hit.score,
        "text": hit.text,
        "agent": hit.agent,
        "run_id": hit.run_id,
        "time": when,
        "created_at": hit.created_at,
        "source": hit.source,
        "source_id": hit.source_id,
    }


@dataclass
class Memory:
    """Semantic memory as one runtime (or command) uses it: the store, the router that
    embeds queries, the embedding model and the vector store. Made once, shared by the
    ``memory_search`` calls of every agent."""

    store: Store
    router: EmbeddingRouter
    model: str
    vectors: VectorStore

    async def search(
        self,
        text: str,
        *,
        agent: str | None = None,
        limit: int = 10,
        process: str = SEARCH_PROCESS,
        run_id: str | None = None,
    ) -> list[VectorHit]:
        return await search(
            self.store,
            text,
            router=self.router,
            model=self.model,
            vectors=self.vectors,
            agent=agent,
            limit=limit,
            process=process,
            run_id=run_id,
        )


# -- the memory_search tool ----------------------------------------------------------------

MEMORY_SEARCH_MAX_LIMIT = 20

MEMORY_SEARCH_DESCRIPTION = (
    "Recall earlier work: returns the stored results, model answers and sink items closest "
    "in meaning to the query, best first, with their agent, run and time."
)

MEMORY_SEARCH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "description": "What to recall."},
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MEMORY_SEARCH_MAX_LIMIT,
            "default": 5,
            "description": "How many records to return.",
        },
        "agent": {
            "type": ["string", "null"],
            "default": None,
            "description": "Only records of this agent.",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
"""The tool's arguments as JSON Schema, for the tool registry."""


class MemoryUnavailableError(AgentosError):
    """``memory_search`` was called where no engine serves embeddings."""

    title = "memory unavailable"


async def memory_search(
    query: str, limit: int = 5, agent: str | None = None, *, context: Any
) -> list[dict[str, Any]]:
    """The ``memory_search`` tool: the records closest to ``query`` (see :func:`search`).

    ``context`` is the tool call's context; it must have ``memory`` (a :class:`Memory`, or
    None where no engine serves embeddings) and may have ``run_id`` and ``agent`` (the
    calling agent's name), which attribute the query's embedding request to the run and
    the agent's process, so it is recorded and accounted like the agent's other calls.
    """
    memory = getattr(context, "memory", None)
    if not isinstance(memory, Memory):
        raise MemoryUnavailableError(
            "memory_search needs an engine that serves embeddings (none does here), and "
            "records embedded by background[embeddings]"
        )
    limit = max(1, min(int(limit), MEMORY_SEARCH_MAX_LIMIT))
    caller = getattr(context, "agent", None)
    hits = await memory.search(
        query,
        agent=agent,
        limit=limit,
        process=caller if isinstance(caller, str) and caller else SEARCH_PROCESS,
        run_id=getattr(context, "run_id", None),
    )
    return [hit_to_json(hit) for hit in hits]


async def search_database(
    config: Config,
    db_path: Path,
    text: str,
    *,
    agent: str | None = None,
    limit: int = 10,
    index: bool = True,
    on_status: Callable[[BacklogStatus], None] | None = None,
    progress: ProgressBar | None = None,
) -> list[dict[str, Any]]:
    """``agentos search``: the records of the database at ``db_path`` closest in meaning
    to ``text``, as :func:`hit_to_json` rows, through the engines of ``config`` (opened
    for it and closed after). With ``index``, the records not embedded yet are embedded
    first (shown by ``progress``); ``on_status`` is told where memory stands before."""
    async with opened_memory(
        config, db_path, index=index, on_status=on_status, progress=progress
    ) as memory:
        hits = await search(
            memory.store,
            text,
            router=memory.router,
            model=memory.model,
            vectors=memory.vectors,
            agent=agent,
            limit=limit,
        )
    return [hit_to_json(h) for h in hits]
