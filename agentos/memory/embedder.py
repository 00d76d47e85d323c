"""``background[embeddings]``: the system process that makes everything searchable.

It embeds every run output, model answer and sink item (``sources.py``) that has no mark
for its model yet, a batch at a time, through the router at ``background`` priority, so
user work always goes first; stores the vectors (``vectors.py``); and marks the rows done.

Invariants:

- **Nothing embedded twice, nothing skipped, across restarts.** A row's vector is stored
  before its mark is written (SQLite: both through the store's writer, which commits in
  submission order; Qdrant: the upsert has returned), and storing is an upsert. So a
  process killed at any point leaves each row either marked with its vector stored, or
  unmarked — and an unmarked row is embedded again on the next start, replacing whatever
  half-stored vector it had.
- **Within one process no row is sent twice either**, although marks are committed by the
  writer a little later: a pass walks each table once by ``rowid``, and rows marked but
  perhaps not yet written are remembered, with the writer's ticket of their marks, and
  skipped until the writer is past that ticket (then every read sees them marked). So
  what is remembered is bounded by the writer's backlog, however long a run goes. A pass
  starts where the last complete one ended, and from the first row every
  ``FULL_SCAN_S``.
- **Every record in the vector store in use.** A mark names the store that holds the
  vector (``VectorStore.key``); after ``vector_store:`` is switched, every record is
  pending again for the new store, and is indexed into it with the same resumable
  passes. A record whose vector the SQLite store holds is copied from there rather than
  sent to the engine again.
- **A bounded share of the router.** At most ``batch_size`` requests are queued at once;
  with ``background`` priority they are served only when no user job waits (and aging
  lets them through under sustained load, see ``router/queue.py``).
- **Failures:** a text the engine refuses (HTTP 4xx) is marked ``failed`` and not tried
  again; anything else (no engine, engine down, time-outs) leaves the rows pending, and
  the process waits, doubling its pause up to ``max_backoff_s``, before it tries again.

The router batches only completions today, so each text is one ``/v1/embeddings``
request; the batch's requests run concurrently up to the engine's ``max_requests``.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentos.errors import EngineStatusError
from agentos.memory.sources import SOURCES, SourceCounts, SourceReader, SourceRow
from agentos.memory.vectors import (
    SqliteVectorStore,
    VectorRecord,
    VectorStore,
    VectorStoreError,
    check_vector,
    unpack_vector,
)
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.store import Store
from agentos.store.writer import Atomic, Insert

logger = logging.getLogger(__name__)

PROCESS_NAME = "background[embeddings]"
"""The process name the router accounts the embedding requests to, and ``top`` shows."""

RECENT_TEXTS = 2048
"""Texts whose vectors the embedder keeps, to give a text met again its vector."""

FULL_SCAN_S = 300.0
"""How often a pass re-reads a table from its first row instead of from where the last
complete pass ended: a row inserted below that point (SQLite reuses the rowids of deleted
last rows) is found within this time, not only after a restart."""


T = TypeVar("T")


class EmbeddingRouter(Protocol):
    """What embedding needs of a router (``agentos.router.router.Router``)."""

    async def submit(
        self,
        request: InferenceRequest,
        *,
        priority: str = "user",
        engine: str | None = None,
        retry: RetryPolicy | None = None,
        run_id: str | None = None,
        process: str = "",
        job_id: str | None = None,
        use_cache: bool = True,
        deadline_s: float | None = None,
    ) -> Completion: ...


class EngineInfoLike(Protocol):
    models: list[str]
    capabilities: list[str]


class EngineLike(Protocol):
    """An ``EngineHandle`` as :func:`embedding_model` reads it."""

    @property
    def healthy(self) -> bool: ...

    @property
    def info(self) -> EngineInfoLike: ...


def embedding_model(engines: Iterable[EngineLike], configured: str | None = None) -> str | None:
    """The model to embed with: ``configured`` when an engine serves it for embeddings,
    else the first model of the first healthy engine with the embeddings capability;
    None when no engine serves embeddings (then there is no ``background[embeddings]``)."""
    for engine in engines:
        if not engine.healthy or "embeddings" not in engine.info.capabilities:
            continue
        if configured is None and engine.info.models:
            return engine.info.models[0]
        if configured is not None and configured in engine.info.models:
            return configured
    return None


async def embed_text(
    router: EmbeddingRouter,
    model: str,
    text: str,
    *,
    priority: str = "user",
    process: str = "",
    run_id: str | None = None,
    use_cache: bool = True,
    retry: RetryPolicy | None = None,
) -> list[float]:
    """One text's vector from ``model``, through the router."""
    completion = await router.submit(
        InferenceRequest(kind="embeddings", model=model, input=[text]),
        priority=priority,
        process=process,
        run_id=run_id,
        use_cache=use_cache,
        retry=retry,
    )
    if completion.embedding is None:
        raise VectorStoreError(f"engine '{completion.engine}' answered without an embedding")
    check_vector(completion.embedding)
    return completion.embedding


def _refused(error: BaseException) -> bool:
    """The engine will never embed this text (too long, invalid, answered with a broken
    vector): trying again is useless."""
    if isinstance(error, EngineStatusError):
        return 400 <= error.status < 500 and error.status not in (408, 429)
    return isinstance(error, VectorStoreError)


@dataclass(frozen=True, slots=True)
class EmbeddingProgress:
    """Where ``background[embeddings]`` stands; ``pending`` is as of the current pass."""

    model: str
    state: str
    """``starting``, ``running`` (embedding), ``idle`` (all done), ``waiting`` (no engine
    or the engine failing; retried after a pause) or ``stopped``."""
    embedded: int
    pending: int
    failed: int
    empty: int
    vector_store: str
    last_error: str | None = None

    def counters(self) -> dict[str, Any]:
        """The process's entry in the runtime snapshot (merged with the router's
        per-process counters by name). ``successes``/``failures`` fill ``top``'s
        ok/failed column."""
        return {
            "kind": "system",
            "state": self.state,
            "model": self.model,
            "vector_store": self.vector_store,
            "embedded": self.embedded,
            "pending": self.pending,
            "failed": self.failed,
            "empty": self.empty,
            "successes": self.embedded,
            "failures": self.failed,
            "progress": f"{self.embedded} embedded / {self.pending} pending",
            "last_error": self.last_error,
        }


class Embedder:
    """The ``background[embeddings]`` process for one store, router and model.

    ``await embedder.run()`` works until cancelled; ``await embedder.embed_pending()``
    does one pass (tests, ``--once`` runs). ``vectors`` defaults to the store's SQLite
    vector store. Not thread-safe: one task drives it.
    """

    def __init__(
        self,
        store: Store,
        router: EmbeddingRouter,
        model: str,
        *,
        vectors: VectorStore | None = None,
        batch_size: int = 16,
        max_chars: int = 2000,
        poll_s: float = 2.0,
        max_backoff_s: float = 60.0,
        use_cache: bool = True,
        priority: str = "background",
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.model = model
        self.vectors: VectorStore = vectors if vectors is not None else SqliteVectorStore(store)
        self.batch_size = max(1, batch_size)
        self.max_chars = max_chars
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.use_cache = use_cache
        self.retry = retry
        self.priority = priority
        self._owns_vectors = vectors is None
        self._store_key = self.vectors.key
        self._reader = SourceReader(store)
        self._closed = False
        self._thread_busy = threading.Lock()
        self._state = "starting"
        self._counts = SourceCounts()
        self._last_error: str | None = None
        self._unconfirmed: dict[tuple[str, str], int] = {}
        """Rows marked by this process whose marks may not be written yet → the writer
        ticket of their marks (ascending), dropped once the writer is past it."""
        self._floor: dict[str, int] = {}
        self._last_full_scan = 0.0
        self._wake = asyncio.Event()
        self._draining = False
        self.on_batch: Callable[[EmbeddingProgress], None] | None = None
        """Called with the progress after each batch and at the start of each pass (the
        progress bar of ``agentos embed``)."""
        self._recent: collections.OrderedDict[str, array.array[float]] = collections.OrderedDict()
        """The vectors of the texts embedded last (RECENT_TEXTS of them, as float32): a
        text met again is given its vector, not asked of the engine again. A plain-text
        agent's result and the model answer it came from are one text, so without this
        every job's text was embedded twice."""

    # -- what top and the runtime read ---------------------------------------------------

    def progress(self) -> EmbeddingProgress:
        return EmbeddingProgress(
            model=self.model,
            state=self._state,
            embedded=self._counts.embedded,
            pending=self._counts.pending,
            failed=self._counts.failed,
            empty=self._counts.empty,
            vector_store=self.vectors.description,
            last_error=self._last_error,
        )

    def process_counters(self) -> dict[str, dict[str, Any]]:
        """``{PROCESS_NAME: counters}``, for the runtime snapshot's processes."""
        return {PROCESS_NAME: self.progress().counters()}

    def wake(self) -> None:
        """Start the next pass now instead of after ``poll_s`` (e.g. when results arrive)."""
        self._wake.set()

    # -- the process -------------------------------------------------------------------------

    async def run(self) -> None:
        """Embed what is pending, then keep looking for new rows, until cancelled (or,
        once :meth:`finish` asks for the backlog, until nothing is left or the engine
        fails)."""
        backoff = self.poll_s
        try:
            while True:
                # only a pass that began once the backlog was asked for may end the
                # process: one already under way may have looked before the run's last
                # results were committed
                draining = self._draining
                try:
                    embedded = await self.embed_pending()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._state = "waiting"
                    self._last_error = str(exc)
                    if self._draining:
                        return
                    logger.warning("%s: %s; trying again in %.0fs", PROCESS_NAME, exc, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                if draining and embedded == 0:
                    return
                backoff = self.poll_s
                if not self._draining:
                    await self._pause(self.poll_s)
        finally:
            self.close()

    async def finish(
        self, task: asyncio.Task[None], *, within_s: float, say: Callable[[str], None]
    ) -> EmbeddingProgress:
        """Stop the process that ``task`` runs (:meth:`run`) when the runtime exits.

        A finished run would otherwise leave its results unembedded until the next run,
        so ``task`` first gets up to ``within_s`` seconds to embed the backlog (the
        store's queued writes are flushed first, so the run's last results are seen);
        then it is cancelled, and ``say`` gets a line saying what is left and what will
        embed it. An exit that is itself a cancellation (Ctrl-C, SIGTERM) does not wait.
        Returns the progress as it stopped.
        """
        current = asyncio.current_task()
        interrupted = current is not None and current.cancelling() > 0
        cancelled_here: asyncio.CancelledError | None = None
        if not interrupted and within_s > 0 and not task.done():
            started = time.monotonic()
            try:
                await self.store.aflush()
                self._draining = True
                self.wake()
                left = max(0.0, within_s - (time.monotonic() - started))
                await asyncio.wait([task], timeout=left)
            except asyncio.CancelledError as exc:  # Ctrl-C while waiting: stop now
                interrupted, cancelled_here = True, exc
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        await self.store.aflush()
        self._counts = await asyncio.to_thread(self._count_afresh)
        progress = self.progress()
        if progress.pending:
            if interrupted:
                why = "interrupted"
            elif not task.cancelled() and progress.last_error:
                why = progress.last_error
            else:
                why = f"not finished within embeddings.drain_s = {within_s:g}s"
            # no square brackets: a rich display would read "[embeddings]" as markup
            say(
                f"background embeddings: {progress.pending} records not embedded yet "
                f"({why}); `agentos embed` (or `agentos search`, or the next run) embeds them"
            )
        if cancelled_here is not None:
            raise cancelled_here
        return progress

    def close(self) -> None:
        """Release the read connection (and the vector store, when it made it). Idempotent;
        :meth:`run` closes on its way out.

        Waits for a database call still running in a worker thread: cancelling the task
        that awaits ``to_thread`` does not stop the thread, and closing a connection under
        a running statement crashes the interpreter."""
        self._state = "stopped"
        with self._thread_busy:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            if self._owns_vectors:
                self.vectors.close()

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking database call in a worker thread, one at a time, never after
        :meth:`close`."""

        def call() -> T:
            with self._thread_busy:
                if self._closed:
                    raise asyncio.CancelledError("the embedder is closed")
                return fn(*args, **kwargs)

        return await asyncio.to_thread(call)

    async def _pause(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # lands in the same loop turn as a wake-up, and the runtime would never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def embed_pending(self) -> int:
        """One pass over every source; returns how many rows got a vector.

        Raises the first transient failure (after storing what succeeded), leaving the
        rest pending.
        """
        self._counts = await self._in_thread(self._reader.counts, self.model, self._store_key)
        full = time.monotonic() - self._last_full_scan >= FULL_SCAN_S
        embedded = 0
        self._state = "running" if self._counts.pending else "idle"
        self._report()
        for source in SOURCES:
            after = 0 if full else self._floor.get(source, 0)
            while True:
                self._forget_written()
                rows = await self._in_thread(
                    self._reader.pending,
                    source,
                    self.model,
                    store=self._store_key,
                    after=after,
                    limit=self.batch_size,
                )
                if not rows:
                    break
                after = rows[-1].cursor
                fresh = [r for r in rows if (r.source, r.source_id) not in self._unconfirmed]
                if fresh:
                    self._state = "running"
                    embedded += await self._embed_batch(fresh)
                    self._report()
            self._floor[source] = after
        if full:
            self._last_full_scan = time.monotonic()
        self._state = "idle"
        self._last_error = None
        return embedded

    def _count_afresh(self) -> SourceCounts:
        """The counts as the database has them now, on a reader of its own (the process's
        is closed once :meth:`run` has returned)."""
        reader = SourceReader(self.store)
        try:
            return reader.counts(self.model, self._store_key)
        finally:
            reader.close()

    def _report(self) -> None:
        if self.on_batch is not None:
            self.on_batch(self.progress())

    def _forget_written(self) -> None:
        """Drop the rows whose marks the store's writer has written by now (a read sees
        them marked from here on)."""
        done = self.store.writer.done
        if self._unconfirmed and next(iter(self._unconfirmed.values())) <= done:
            self._unconfirmed = {k: t for k, t in self._unconfirmed.items() if t > done}

    async def _embed_batch(self, rows: Sequence[SourceRow]) -> int:
        texts = {row: row.text[: self.max_chars].strip() for row in rows}
        copied = [row for row in rows if texts[row] and row.stored is not None]
        wanted = [row for row in rows if texts[row] and row.stored is None]
        asked = list(dict.fromkeys(texts[row] for row in wanted if texts[row] not in self._recent))
        vectors = await asyncio.gather(
            *(
                embed_text(
                    self.router,
                    self.model,
                    text,
                    priority=self.priority,
                    process=PROCESS_NAME,
                    use_cache=self.use_cache,
                    retry=self.retry,
                )
                for text in asked
            ),
            return_exceptions=True,
        )
        by_text: dict[str, list[float] | BaseException] = dict(zip(asked, vectors, strict=True))
        for text, vector in by_text.items():
            if not isinstance(vector, BaseException):
                self._remember(text, vector)
        answers: list[list[float] | BaseException] = []
        for row in wanted:
            found = by_text.get(texts[row])
            if found is None:
                found = list(self._recent[texts[row]])
                self._recent.move_to_end(texts[row])
            answers.append(found)
        now = time.time()
        records: list[VectorRecord] = []
        marks: dict[SourceRow, Insert] = {}
        transient: BaseException | None = None
        failed = 0
        for row in rows:
            if not texts[row]:
                marks[row] = self._mark(row, "empty", now)
        copies = [(row, list(unpack_vector(row.stored))) for row in copied if row.stored]
        for row, answer in [*copies, *zip(wanted, answers, strict=True)]:
            if isinstance(answer, BaseException):
                if _refused(answer):
                    failed += 1
                    marks[row] = self._mark(row, "failed", now, error=str(answer))
                elif transient is None:
                    transient = answer
                continue
            records.append(
                VectorRecord(
                    source=row.source,
                    source_id=row.source_id,
                    text=texts[row],
                    vector=answer,
                    run_id=row.run_id,
                    agent=row.agent,
                    created_at=row.created_at,
                )
            )
            marks[row] = self._mark(row, "embedded", now, dim=len(answer))
        if records:
            await self._in_thread(self.vectors.add, self.model, records)
        if marks:
            ticket = self.store.submit(Atomic(tuple(marks.values())))
            for row in marks:
                self._unconfirmed[(row.source, row.source_id)] = ticket
        self._counts = SourceCounts(
            embedded=self._counts.embedded + len(records),
            empty=self._counts.empty + len(rows) - len(wanted) - len(copied),
            failed=self._counts.failed + failed,
            pending=max(0, self._counts.pending - len(marks)),
        )
        if transient is not None:
            raise transient
        return len(records)

    def _remember(self, text: str, vector: list[float]) -> None:
        self._recent[text] = array.array("f", vector)
        if len(self._recent) > RECENT_TEXTS:
            self._recent.popitem(last=False)

    def _mark(
        self,
        row: SourceRow,
        status: str,
        now: float,
        *,
        dim: int | None = None,
        error: str | None = None,
    ) -> Insert:
        return Insert(
            "embedded_sources",
            {
                "source": row.source,
                "source_id": row.source_id,
                "model": self.model,
                "dim": dim,
                "status": status,
                "error": error,
                "embedded_at": now,
                "store": self._store_key if status == "embedded" else None,
            },
            replace=True,
        )
