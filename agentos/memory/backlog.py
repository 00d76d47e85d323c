"""Embedding what ``background[embeddings]`` has not reached yet, while someone waits.

A run gives its backlog a bounded time before it exits (``embeddings.drain_s``); what is
left, and everything before a switch of vector store, is embedded here by ``agentos
embed`` and, before it searches, ``agentos search``. The work is the embedder's own
(resumable: an interrupted call keeps what it stored), at ``user`` priority, since a
person is waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from agentos.memory.embedder import Embedder, EmbeddingProgress, EmbeddingRouter
from agentos.memory.sources import SourceCounts, SourceReader
from agentos.memory.types import VectorStore
from agentos.spec.config import EmbeddingsConfig
from agentos.store import Store


@dataclass(frozen=True, slots=True)
class BacklogStatus:
    """Where semantic memory stands for one model and vector store."""

    model: str
    vector_store: str
    """The store's description, which says how it ranks (sqlite-vec or Python)."""
    counts: SourceCounts


async def backlog_status(store: Store, model: str, vectors: VectorStore) -> BacklogStatus:
    """How many records are embedded into ``vectors`` for ``model``, and how many wait."""

    def count() -> SourceCounts:
        reader = SourceReader(store)
        try:
            return reader.counts(model, vectors.key)
        finally:
            reader.close()

    counts = await asyncio.to_thread(count)
    return BacklogStatus(model=model, vector_store=vectors.description, counts=counts)


async def embed_backlog(
    store: Store,
    router: EmbeddingRouter,
    model: str,
    *,
    vectors: VectorStore,
    config: EmbeddingsConfig | None = None,
    on_progress: Callable[[EmbeddingProgress], None] | None = None,
) -> EmbeddingProgress:
    """Embed every record not yet in ``vectors`` for ``model``, calling ``on_progress``
    after each batch; returns the final progress (nothing pending: texts the engine
    refused are counted as failed). A transient failure (engine down, Qdrant gone) is
    raised, after storing what was done, which the next call does not repeat."""
    settings = config or EmbeddingsConfig()
    embedder = Embedder(
        store,
        router,
        model,
        vectors=vectors,
        batch_size=settings.batch_size,
        max_chars=settings.max_chars,
        priority="user",
    )
    embedder.on_batch = on_progress
    try:
        while True:
            embedded = await embedder.embed_pending()
            await store.aflush()
            if embedded == 0:
                break
        return embedder.progress()
    finally:
        embedder.close()
