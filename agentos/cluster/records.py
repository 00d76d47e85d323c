"""Records made on other nodes, written by the driver's one Store writer.

The driver owns the database and its :class:`~agentos.store.writer.Writer`. A run on a
Ray worker (and the router actor) gets a :class:`RemoteStore` instead of a ``Store``: its
``submit`` keeps write ops (plain, picklable dataclasses) in a local buffer, and ships
them to the :class:`RecordQueue` actor in batches, never one RPC per op (an actor call
costs ~1 ms on this machine; a run makes ~10 writes). The driver's :class:`RecordDrain`
long-polls the queue, hands every op to its Store in order, flushes, and tells the queue
which batches are committed; a ``RemoteStore.flush`` returns only then, so
``create_run``'s "the row is committed before anything refers to it" still holds.

Order: ops of one RemoteStore reach the Writer in the order they were submitted (one
caller's calls to an async actor start in submission order, and ``put`` appends before
its first await). Ops of different RemoteStores are not ordered with each other; what
needs an order across them (a run row before its model calls) is flushed first.

Reads: ``RemoteStore.db`` is a read-only connection to the driver's database file. That
works only where the worker shares the driver's filesystem (a local cluster);
docs/cluster.md says what replaces it on a real cluster.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import sqlite_utils

from agentos.errors import StoreError
from agentos.store.writer import BUSY_TIMEOUT_MS, WriteOp

if TYPE_CHECKING:
    from agentos.store.db import Store
    from agentos.store.owners import Owner

SHIP_AT_OPS = 256
"""A RemoteStore ships its buffer without being asked once this many ops are queued."""


class RecordQueue:
    """Batches of write ops on their way to the driver, numbered in arrival order.

    An async actor: ``take`` (the driver) waits without holding up ``put`` (workers).
    """

    def __init__(self) -> None:
        self._batches: list[tuple[int, list[WriteOp]]] = []
        self._next = 1
        self._committed = 0
        self._arrived = asyncio.Event()
        self._commit = asyncio.Condition()

    async def put(self, ops: list[WriteOp], wait: bool) -> int:
        """Queue ``ops``; with ``wait``, return once the driver has committed them."""
        number = self._next
        self._next += 1
        self._batches.append((number, ops))
        self._arrived.set()
        if wait:
            async with self._commit:
                await self._commit.wait_for(lambda: self._committed >= number)
        return number

    async def take(self, timeout_s: float) -> list[tuple[int, list[WriteOp]]]:
        """Every batch queued (waiting up to ``timeout_s`` for one)."""
        if not self._batches:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            except TimeoutError:
                return []
        batches, self._batches = self._batches, []
        return batches

    async def committed(self, number: int) -> None:
        """The driver committed every batch up to ``number``."""
        async with self._commit:
            self._committed = max(self._committed, number)
            self._commit.notify_all()


RecordQueueActor: Any = ray.remote(num_cpus=0)(RecordQueue)
"""``RecordQueue`` as a Ray actor class (``RecordQueueActor.options(...).remote(...)``)."""


class RemoteStore:
    """What a run on a worker (or the router actor) holds as its ``store``.

    The part of :class:`~agentos.store.Store` that runs use: ``submit``, ``flush``,
    ``aflush``, ``room``, ``db`` (reads), ``owner``, ``path``. ``owner`` is the driver's:
    the driver owns every run it starts, wherever it executes, so a dead driver's runs
    are swept as on one machine, and a dead worker's are the driver's to settle.
    """

    def __init__(self, queue: Any, db_path: str | Path, owner: Owner | None) -> None:
        self.queue = queue
        self.path = Path(db_path)
        self.owner = owner
        self.readonly = False
        self._ops: list[WriteOp] = []
        self._lock = threading.Lock()
        self._tickets = 0
        self._db: sqlite_utils.Database | None = None

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            try:
                conn = sqlite3.connect(
                    uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the database {self.path}: {exc}") from exc
            self._db = sqlite_utils.Database(conn, execute_plugins=False)
        return self._db

    def submit(self, op: WriteOp) -> int:
        with self._lock:
            self._ops.append(op)
            self._tickets += 1
            ticket = self._tickets
            full = len(self._ops) >= SHIP_AT_OPS
        if full:
            self.ship()
        return ticket

    def ship(self, *, wait: bool = False) -> Any:
        """Send what is buffered to the queue; the call's ObjectRef (None if nothing)."""
        with self._lock:
            ops, self._ops = self._ops, []
            if not ops and not wait:
                return None
            return self.queue.put.remote(ops, wait)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every op submitted so far is committed by the driver."""
        ray.get(self.ship(wait=True), timeout=timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.wrap_future(self.ship(wait=True).future()), timeout)

    async def room(self) -> None:
        """No backpressure of its own: ``put`` is bounded by the driver's drain."""

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.conn.close()
            self._db = None


class RecordDrain:
    """The driver's side: a thread that moves batches from the queue into ``store``.

    Every op goes through ``store.submit`` (the one Writer), in arrival order; a batch
    counts as committed once ``store.flush`` returned after it.
    """

    def __init__(
        self, store: Store, queue: Any, *, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self.store = store
        self.queue = queue
        self.on_batch = on_batch
        self.ops = 0
        self.batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="record-drain", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> RecordDrain:
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain(ray.get(self.queue.take.remote(0.2)))
        except BaseException as exc:  # reported by stop(); the queue's callers time out
            self.error = exc

    def _drain(self, batches: list[tuple[int, list[WriteOp]]]) -> None:
        if not batches:
            return
        for _, ops in batches:
            for op in ops:
                self.store.submit(op)
            self.ops += len(ops)
        self.store.flush()
        self.batches += len(batches)
        ray.get(self.queue.committed.remote(batches[-1][0]))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain what is queued, then stop; raises what stopped the thread, if anything."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self.error is None:
            self._drain(ray.get(self.queue.take.remote(0.0)))
        if self.error is not None:
            raise self.error
