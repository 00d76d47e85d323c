"""Embedding what ``background[embeddings]`` has not reached yet, while someone waits.

A run gives its backlog a bounded time before it exits (``embeddings.drain_s``); what is
left, and everything before a switch of vector store, is embedded here by ``agentos
embed`` and, before it searches, ``agentos search``. The work is the embedder's own
(resumable: an interrupted call keeps what it stored), at ``user`` priority, since a
person is waiting for it.

:func:`embed_database` is all of ``agentos embed``: it opens the engines of a config and
the database, and embeds the backlog; :func:`memory_summary` is ``agentos engines``' line
about ``background[embeddings]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentos.errors import SpecError
from agentos.memory.embedder import (
    Embedder,
    EmbeddingProgress,
    EmbeddingRouter,
    EngineLike,
    embedding_model,
)
from agentos.memory.sources import SourceCounts, SourceReader
from agentos.memory.types import VectorStore, VectorStoreError
from agentos.memory.vectors import open_vector_store
from agentos.spec.config import Config, EmbeddingsConfig
from agentos.store import Store

if TYPE_CHECKING:
    from agentos.router.router import Router

ProgressBar = Callable[[], AbstractContextManager[Callable[[EmbeddingProgress], None]]]
"""What shows the progress of embedding a backlog: called once per backlog, it gives a
context manager that yields the ``on_progress`` callback of :func:`embed_backlog`."""


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


def open_memory(
    config: Config, engines: Iterable[EngineLike], store: Store
) -> tuple[str, VectorStore]:
    """The embedding model and the configured vector store, or a SpecError saying why
    there is no semantic memory here."""
    model = embedding_model(engines, config.embeddings.model)
    if model is None:
        raise SpecError(
            "no engine serves embeddings, so text cannot be searched by meaning "
            "(the bundled local engine does unless `embeddings: false`)"
        )
    return model, open_vector_store(config.vector_store, store)


def showing_progress(
    progress: ProgressBar | None,
) -> AbstractContextManager[Callable[[EmbeddingProgress], None] | None]:
    """``progress()``, or a context that yields no callback when there is none."""
    return progress() if progress is not None else contextlib.nullcontext(None)


@dataclass(slots=True)
class OpenedMemory:
    """What :func:`opened_memory` yields: the database, a router over the engines, the
    embedding model and the vector store."""

    store: Store
    router: Router
    model: str
    vectors: VectorStore


@contextlib.asynccontextmanager
async def opened_memory(
    config: Config,
    db_path: Path,
    *,
    index: bool = True,
    on_status: Callable[[BacklogStatus], None] | None = None,
    progress: ProgressBar | None = None,
) -> AsyncIterator[OpenedMemory]:
    """The memory of the database at ``db_path`` through the engines of ``config``
    (opened for it and closed after). With ``index``, the records not embedded yet are
    embedded first (shown by ``progress``); ``on_status`` is told where memory stood."""
    from agentos.router.engines import open_engines, router_settings
    from agentos.router.router import Router

    async with open_engines(config) as engines:
        with Store(db_path) as store:
            model, vectors = open_memory(config, engines, store)
            try:
                status = await backlog_status(store, model, vectors)
                if on_status is not None:
                    on_status(status)
                async with Router(engines, settings=router_settings(config)) as router:
                    if index and status.counts.pending:
                        with showing_progress(progress) as on_progress:
                            await embed_backlog(
                                store,
                                router,
                                model,
                                vectors=vectors,
                                config=config.embeddings,
                                on_progress=on_progress,
                            )
                    yield OpenedMemory(store, router, model, vectors)
            finally:
                vectors.close()


async def embed_database(
    config: Config,
    db_path: Path,
    *,
    on_status: Callable[[BacklogStatus], None] | None = None,
    progress: ProgressBar | None = None,
) -> BacklogStatus:
    """``agentos embed``: embed every record of the database at ``db_path`` that is not
    in the configured vector store yet, through the engines of ``config`` (opened for it
    and closed after). ``on_status`` is told where memory stands before, ``progress``
    shows the embedding; returns where it stands after."""
    async with opened_memory(config, db_path, on_status=on_status, progress=progress) as memory:
        return await backlog_status(memory.store, memory.model, memory.vectors)


async def memory_summary(config: Config, store: Store, model: str | None) -> str:
    """``agentos engines``' line about ``background[embeddings]``: its model (``model``,
    None when no engine serves embeddings), the vector store and how it ranks, and how
    much is embedded and pending."""
    if not config.embeddings.enabled:
        return "background[embeddings]: off (embeddings.enabled is false)"
    if model is None:
        return "background[embeddings]: off (no engine serves embeddings)"
    try:
        vectors = open_vector_store(config.vector_store, store)
        try:
            status = await backlog_status(store, model, vectors)
        finally:
            vectors.close()
    except VectorStoreError as exc:
        return f"background[embeddings]: model {model}; {exc}"
    counts = status.counts
    line = (
        f"background[embeddings]: model {status.model}, vector store {status.vector_store}; "
        f"{counts.embedded} records embedded, {counts.pending} pending"
    )
    if counts.pending:
        line += " (`agentos embed` embeds them now)"
    return line
