"""Records made on other nodes, written by the driver's one Store writer.

The driver owns the database and its :class:`~agentos.store.writer.Writer`. A run on a
Ray worker (and the router actor) gets a :class:`RemoteStore` instead of a ``Store``: its
``submit`` keeps write ops (plain, picklable dataclasses) in a local buffer, and ships
them to the :class:`RecordQueue` actor in batches, never one RPC per op (an actor call
costs ~1 ms on this machine; a run makes ~10 writes). The driver's :class:`RecordDrain`
long-polls the queue, hands every op to its Store in order, flushes, and tells the queue
which batches are committed; a ``RemoteStore.flush`` returns only then, so
``create_run``'s "the row is committed before anything refers to it" still holds.

Order: ops of one RemoteStore reach the Writer in the order they were submitted. Ray
does not start one caller's calls to an async actor in the order they were sent
(``benchmarks/ray_probe/async_order.py``: 26-65 of 199 neighbouring calls started out of
order), so the order is not left to it: each RemoteStore names itself (``producer``, a
random id) and numbers its batches (``seq`` 0, 1, 2, ...), and the queue admits a
producer's batch only once its predecessor is admitted, holding one that arrives early.
A held batch is not admitted, so it counts in neither the queue's uncommitted ops nor
its call order (``put``'s tickets are taken once a batch is next of its producer);
the RemoteStore counts it among its unreturned puts, as any put that waits. Ops of
different RemoteStores are not ordered with each other; what needs an order across them
(a run row before its model calls) is flushed first.

Backpressure, as ``Writer.submit`` / ``Writer.room`` give it on one machine: the queue
holds at most ``max_ops`` ops that are not yet committed; a ``put`` past that waits (its
call does not return) until the driver has caught up. A RemoteStore counts the ops of
its puts that have not returned; past :data:`CONGESTED_OPS` its ``room()`` waits (off the
event loop), and past ``max_in_flight`` its ``submit`` itself waits. So a worker that
floods writes is slowed to the driver's pace, and memory stays bounded on both sides.

Failure, as the local writer's: when the driver's writer fails (disk full, a read-only
file) or the drain cannot go on (the queue actor is gone), :class:`RecordDrain` stops
the driver's writer with a :class:`~agentos.errors.StoreFailure` (so the runtime's
failure listeners stop the work, as on one machine) and fails the queue, so every put
waiting or to come, on any node, raises that failure instead of hanging. One bad op (a
constraint it violates) is not a failure: the writer drops it alone, and the next flush
that waits on the queue raises its StoreError, as the next local flush does.

Reads: ``RemoteStore.db`` reads the database file directly where this process runs on
the driver's node (same host: the router actor), and through the driver's
:class:`~agentos.cluster.reads.StoreReader` actor anywhere else (:mod:`agentos.cluster.reads`).
A driver that is no node of the cluster (a Ray client, ``ray://``) answers the reads
itself, relayed by a :class:`~agentos.cluster.driver_reads.ReadRelay` actor
(:mod:`agentos.cluster.driver_reads`); then no process reads the file but the driver.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import sqlite_utils
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentos.cluster.driver_reads import DriverReads, ReadRelayActor, client_mode
from agentos.cluster.reads import (
    RemoteDatabase,
    RemoteVectorStore,
    StoreReaderActor,
    ask,
    file_identity,
)
from agentos.errors import AgentosError, StoreError, StoreFailure
from agentos.store.writer import BUSY_TIMEOUT_MS, WriteOp

if TYPE_CHECKING:
    from agentos.memory.types import VectorStore
    from agentos.store.db import Store
    from agentos.store.owners import Owner

SHIP_AT_OPS = 256
"""A RemoteStore ships its buffer without being asked once this many ops are queued."""

MAX_QUEUED_OPS = 20_000
"""Ops the RecordQueue holds at most that the driver has not committed (as the local
writer's ``MAX_BACKLOG``); a put past it waits."""

CONGESTED_OPS = 4 * SHIP_AT_OPS
"""Ops of a RemoteStore's unreturned puts past which ``room()`` waits."""

MAX_IN_FLIGHT_OPS = 16 * SHIP_AT_OPS
"""Ops of a RemoteStore's unreturned puts past which ``submit`` itself waits."""


class RecordQueue:
    """Batches of write ops on their way to the driver, numbered in arrival order.

    An async actor: ``take`` (the driver) waits without holding up ``put`` (workers);
    ``put`` waits while ``max_ops`` ops are uncommitted (backpressure, module docstring).
    """

    def __init__(self, max_ops: int = MAX_QUEUED_OPS) -> None:
        self.max_ops = max_ops
        self._expected: dict[str, int] = {}
        """Per producer, the ``seq`` of the batch it admits next."""
        self._batches: list[tuple[int, list[WriteOp]]] = []
        self._sizes: dict[int, int] = {}
        """Ops per batch put and not yet committed."""
        self._outstanding = 0
        self._next = 1
        self._tickets = 0
        self._admitted = 0
        self._committed = 0
        self._error: str | None = None
        self._failure: str | None = None
        self._arrived = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader: tuple[Any, str | None] | None = None
        self.counters = {"puts": 0, "ops": 0, "waited": 0, "held": 0, "max_outstanding": 0}

    async def put(
        self, ops: list[WriteOp], wait: bool, producer: str | None = None, seq: int = 0
    ) -> int:
        """Queue ``ops``, once there is room; with ``wait``, return once the driver has
        committed them. Raises StoreFailure once the queue has failed, and with ``wait``
        the StoreError of a bad op the driver found since the last such report.

        ``producer``, ``seq``: the caller's id and this batch's number among its batches
        (from 0, no gaps); the batch is held until batch ``seq - 1`` of that producer is
        admitted (module docstring). Without a producer, batches are admitted in the
        order their calls started."""
        if producer is not None:
            await self._in_turn(producer, seq)
        ticket = self._tickets  # taken before any await: puts are admitted in call order
        self._tickets += 1
        async with self._changed:
            if not self._fits(ticket, len(ops)):
                self.counters["waited"] += 1
                await self._changed.wait_for(lambda: self._fits(ticket, len(ops)))
            self._admitted += 1
            if producer is not None:
                self._expected[producer] = seq + 1
            self._changed.notify_all()
            self._check_failed()
            number = self._next
            self._next += 1
            self._batches.append((number, ops))
            self._sizes[number] = len(ops)
            self._outstanding += len(ops)
            self.counters["puts"] += 1
            self.counters["ops"] += len(ops)
            self.counters["max_outstanding"] = max(
                self.counters["max_outstanding"], self._outstanding
            )
            self._arrived.set()
            if wait:
                await self._changed.wait_for(
                    lambda: self._committed >= number or self._failure is not None
                )
                self._check_failed()
                if self._error is not None:
                    error, self._error = self._error, None
                    raise StoreError(error)
        return number

    async def _in_turn(self, producer: str, seq: int) -> None:
        """Return once batch ``seq`` is the next of ``producer`` (or the queue failed)."""
        expected = self._expected.get(producer, 0)
        if seq < expected:
            raise StoreError(
                f"batch {seq} of record producer {producer} came twice (batch {expected} "
                "was expected): a RemoteStore's batches must be numbered 0, 1, 2, ..."
            )
        if seq == expected:
            return
        self.counters["held"] += 1
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._expected.get(producer, 0) == seq or self._failure is not None
            )
            self._check_failed()

    def _fits(self, ticket: int, size: int) -> bool:
        if self._failure is not None:
            return self._admitted == ticket
        return self._admitted == ticket and (
            self._outstanding == 0 or self._outstanding + size <= self.max_ops
        )

    def _check_failed(self) -> None:
        if self._failure is not None:
            raise StoreFailure(self._failure)

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

    async def committed(self, number: int, error: str | None = None) -> None:
        """The driver committed every batch up to ``number``; ``error``: a bad op among
        them that the writer dropped (told to the next flush that waits)."""
        async with self._changed:
            self._committed = max(self._committed, number)
            for done in [n for n in self._sizes if n <= number]:
                self._outstanding -= self._sizes.pop(done)
            if error is not None and self._error is None:
                self._error = error
            self._changed.notify_all()

    async def fail(self, message: str) -> None:
        """The driver cannot write any more: refuse every put, waiting or to come."""
        async with self._changed:
            if self._failure is None:
                self._failure = message
            self._batches = []
            self._changed.notify_all()
        self._arrived.set()

    def set_reader(self, reader: Any, node_id: str | None) -> None:
        """What runs read through (the StoreReader, or the ReadRelay to the driver), and
        the node whose processes may read the file directly (None: no node may)."""
        self._reader = (reader, node_id)

    def where(self) -> tuple[Any, str | None] | None:
        """(what to read through, the node that may read the file), once the drain has
        started (RecordDrain.start)."""
        return self._reader

    def stats(self) -> dict[str, Any]:
        """Counters, and how many ops are uncommitted now (tests, the benchmark)."""
        return {**self.counters, "outstanding": self._outstanding, "failed": self._failure}


RecordQueueActor: Any = ray.remote(num_cpus=0)(RecordQueue)
"""``RecordQueue`` as a Ray actor class (``RecordQueueActor.options(...).remote(...)``)."""


def _queue_error(exc: BaseException, what: str) -> AgentosError:
    """What a failed queue call means to the caller of a RemoteStore."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, AgentosError):
        return exc.cause
    if isinstance(exc, ray.exceptions.GetTimeoutError):
        return StoreError(f"{what} were not committed by the driver in time")
    return StoreFailure(
        f"{what} cannot reach the driver's database: the record queue is gone "
        f"({type(exc).__name__}); the driver has stopped or lost its Ray connection"
    )


class RemoteStore:
    """What a run on a worker (or the router actor) holds as its ``store``.

    The part of :class:`~agentos.store.Store` that runs use: ``submit``, ``flush``,
    ``aflush``, ``room``, ``db`` (reads), ``owner``, ``path``, and :meth:`vectors`.
    ``owner`` is the driver's: the driver owns every run it starts, wherever it executes,
    so a dead driver's runs are swept as on one machine, and a dead worker's are the
    driver's to settle.

    ``reader``: the actor to read through (a StoreReader or ReadRelay); by default the
    one the drain named, unless this process runs on the node the drain named as the
    driver's (then the file is read; never when the driver answers reads itself).
    """

    def __init__(
        self,
        queue: Any,
        db_path: str | Path,
        owner: Owner | None,
        *,
        reader: Any = None,
        max_in_flight: int = MAX_IN_FLIGHT_OPS,
    ) -> None:
        self.queue = queue
        self.path = Path(db_path)
        self.owner = owner
        self.readonly = False
        self.max_in_flight = max_in_flight
        self.reader = reader
        self.ships = 0
        """Puts made so far (each one actor call carrying a batch)."""
        self.waits = 0
        """Times ``submit`` or ``room`` waited for the driver to catch up."""
        self._ops: list[WriteOp] = []
        self._lock = threading.Lock()
        self._tickets = 0
        self.producer = uuid.uuid4().hex
        """This store's name to the queue, which admits its batches in ``seq`` order."""
        self._seq = 0
        self._in_flight: deque[tuple[Any, int]] = deque()
        self._in_flight_ops = 0
        self._failure: StoreFailure | None = None
        self._db: sqlite_utils.Database | RemoteDatabase | None = None

    # -- reads -------------------------------------------------------------------------

    def _local_reads(self) -> bool:
        """Whether the database file is on this host: no reader was named and this process
        runs on the node the drain named as the driver's (none when the driver is a Ray
        client: then the file is on no node)."""
        if self.reader is not None:
            return False
        where = ray.get(self.queue.where.remote())
        if where is None:
            raise StoreError(
                f"reads of {self.path} need the driver's store reader, and none is "
                "started: start the RecordDrain (it starts the reader) before the runs"
            )
        self.reader, node = where
        return node is not None and node == ray.get_runtime_context().get_node_id()

    @property
    def db(self) -> sqlite_utils.Database | RemoteDatabase:
        if self._db is None:
            if self._local_reads():
                self._db = self._open_file()
            else:
                self._db = RemoteDatabase(self.reader, self.path)
        return self._db

    def _open_file(self) -> sqlite_utils.Database:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the database {self.path}: {exc}") from exc
        return sqlite_utils.Database(conn, execute_plugins=False)

    def vectors(self) -> VectorStore:
        """The SQLite vector store of the driver's database, for ``memory_search``."""
        if isinstance(self.db, RemoteDatabase):
            return RemoteVectorStore(self.reader, self.path)
        from agentos.memory.vectors import SqliteVectorStore

        return SqliteVectorStore(self)  # type: ignore[arg-type]

    # -- writes ------------------------------------------------------------------------

    def submit(self, op: WriteOp) -> int:
        """Buffer ``op``; ships the buffer once it holds SHIP_AT_OPS. Waits while
        ``max_in_flight`` shipped ops are not taken by the queue; raises StoreFailure
        once the driver's writes have failed."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._ops.append(op)
            self._tickets += 1
            ticket = self._tickets
            full = len(self._ops) >= SHIP_AT_OPS
        if full:
            self.ship()
            if self._in_flight_ops > self.max_in_flight:
                self._wait_in_flight(self.max_in_flight // 2)
        return ticket

    def ship(self, *, wait: bool = False) -> Any:
        """Send what is buffered to the queue; the call's ObjectRef (None if nothing)."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            ops, self._ops = self._ops, []
            if not ops and not wait:
                return None
            ref = self.queue.put.remote(ops, wait, self.producer, self._seq)
            self._seq += 1
            self.ships += 1
            if ops and not wait:
                self._in_flight.append((ref, len(ops)))
                self._in_flight_ops += len(ops)
        self._settle()
        return ref

    def _settle(self, timeout: float = 0) -> None:
        """Forget the puts that returned (one local ``ray.wait``, no RPC); a failed one
        makes this store refuse every later write."""
        with self._lock:
            refs = [ref for ref, _ in self._in_flight]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
        if not ready:
            return
        done = set(ready)
        with self._lock:
            kept: deque[tuple[Any, int]] = deque()
            for ref, size in self._in_flight:
                if ref in done:
                    self._in_flight_ops -= size
                else:
                    kept.append((ref, size))
            self._in_flight = kept
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:
                self._failed(_queue_error(exc, f"writes to {self.path}"))

    def _failed(self, error: AgentosError) -> None:
        if isinstance(error, StoreFailure):
            with self._lock:
                if self._failure is None:
                    self._failure = error

    def _oldest(self) -> Any:
        with self._lock:
            return self._in_flight[0][0] if self._in_flight else None

    def _wait_in_flight(self, level: int) -> None:
        self.waits += 1
        while self._in_flight_ops > level and self._failure is None:
            oldest = self._oldest()
            if oldest is None:
                return
            ray.wait([oldest], timeout=1.0, fetch_local=False)
            self._settle()

    @property
    def congested(self) -> bool:
        """More than CONGESTED_OPS shipped ops wait for room in the queue."""
        return self._in_flight_ops > CONGESTED_OPS

    async def room(self) -> None:
        """Return at once unless :attr:`congested`; then wait, without blocking the
        event loop, until the queue has taken all but SHIP_AT_OPS of them."""
        if not self.congested:
            return
        self.waits += 1
        while self._in_flight_ops > SHIP_AT_OPS and self._failure is None:
            oldest = self._oldest()
            if oldest is None:
                return
            await asyncio.wait([asyncio.wrap_future(oldest.future())], timeout=1.0)
            self._settle()
        if self._failure is not None:
            raise self._failure

    def flush(self, timeout: float | None = None) -> None:
        """Return once every op submitted so far is committed by the driver; raises the
        StoreError of a bad op the driver dropped, or StoreFailure."""
        ref = self.ship(wait=True)
        try:
            ray.get(ref, timeout=timeout)
        except Exception as exc:
            error = _queue_error(exc, f"writes to {self.path}")
            self._failed(error)
            raise error from None
        self._settle()

    async def aflush(self, timeout: float | None = None) -> None:
        ref = self.ship(wait=True)
        try:
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)
        except TimeoutError:
            raise StoreError(
                f"writes to {self.path} were not committed within {timeout}s"
            ) from None
        except Exception as exc:
            error = _queue_error(exc, f"writes to {self.path}")
            self._failed(error)
            raise error from None
        self._settle()

    def close(self) -> None:
        try:
            if self._failure is None:
                self.flush()
        finally:
            if isinstance(self._db, sqlite_utils.Database):
                self._db.conn.close()
            self._db = None


class RecordDrain:
    """The driver's side: a thread that moves batches from the queue into ``store``, and
    what answers reads from other nodes.

    Every op goes through ``store.submit`` (the one Writer), in arrival order; a batch
    counts as committed once ``store.flush`` returned after it. ``start`` starts the
    read path and tells the queue; ``stop`` ends it.

    ``reads``: ``"auto"`` starts a :class:`~agentos.cluster.reads.StoreReader` on this
    (the driver's) node when the driver is a node of the cluster and the reader sees the
    driver's file (compared by host, device and inode), and otherwise has the driver
    answer (:class:`~agentos.cluster.driver_reads.DriverReads`): a Ray client
    (``ray://``) is never a node. ``"driver"`` has the driver answer in any case (tests
    of that path on a local cluster). :attr:`reads_by` says which was taken.

    When the drain cannot go on (module docstring), it fails the queue and the driver's
    writer (``Writer.fail``), whose failure listeners stop the runtime, and tells its own
    (:meth:`add_failure_listener`).
    """

    def __init__(
        self,
        store: Store,
        queue: Any,
        *,
        on_batch: Callable[[int], None] | None = None,
        reads: str = "auto",
    ) -> None:
        if reads not in ("auto", "driver"):
            raise ValueError(f"reads must be 'auto' or 'driver', not {reads!r}")
        self.store = store
        self.queue = queue
        self.on_batch = on_batch
        self.reads = reads
        self.ops = 0
        self.batches = 0
        self.rounds = 0
        """Drain rounds that wrote something (one store flush each)."""
        self.reader: Any = None
        """The actor runs read through: the StoreReader, or the ReadRelay to the driver."""
        self.reads_by: str | None = None
        """``"reader"`` (the StoreReader actor) or ``"driver"`` (DriverReads), once started."""
        self.driver_reads: DriverReads | None = None
        self.failure: StoreFailure | None = None
        """Why the drain stopped on its own; None while it works."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[StoreFailure], None]] = []
        self._thread = threading.Thread(target=self._loop, name="record-drain", daemon=True)

    @property
    def error(self) -> BaseException | None:
        """What stopped the drain (the prototype's name for :attr:`failure`)."""
        return self.failure

    def start(self) -> RecordDrain:
        driver_node: str = ray.get_runtime_context().get_node_id()
        here = NodeAffinitySchedulingStrategy(driver_node, soft=False)
        node: str | None = driver_node
        if self.reads == "auto" and not client_mode():
            reader = StoreReaderActor.options(scheduling_strategy=here).remote(
                str(self.store.path.resolve())  # the actor's working directory is not ours
            )
            theirs = ask(reader.identity.remote(), f"starting the reader of {self.store.path}")
            if theirs == file_identity(self.store.path):
                self.reader, self.reads_by = reader, "reader"
            else:  # "the driver's node" is not the driver's host: the driver answers
                ray.kill(reader)
        if self.reader is None:
            self.reader = ReadRelayActor.options(scheduling_strategy=here).remote()
            self.driver_reads = DriverReads(self.store.path.resolve(), self.reader).start()
            self.reads_by = "driver"
            node = None  # no process of the cluster may read the file: it may be another
        ray.get(self.queue.set_reader.remote(self.reader, node))
        self.store.writer.add_failure_listener(self._fail)
        self._thread.start()
        return self

    def add_failure_listener(self, listener: Callable[[StoreFailure], None]) -> None:
        """Call ``listener(failure)`` once the drain fails (at once if it has)."""
        with self._lock:
            failure = self.failure
            if failure is None:
                self._listeners.append(listener)
        if failure is not None:
            listener(failure)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set() and self.failure is None:
                self._drain(ray.get(self.queue.take.remote(0.2)))
        except StoreFailure as failure:
            self._fail(failure)
        except BaseException as exc:
            self._fail(
                StoreFailure(
                    f"the records of runs on other nodes can no longer reach the database "
                    f"{self.store.path}: {type(exc).__name__}: {exc}; agentos stopped its work"
                )
            )

    def _drain(self, batches: list[tuple[int, list[WriteOp]]]) -> None:
        if not batches:
            return
        for _, ops in batches:
            for op in ops:
                self.store.submit(op)
            self.ops += len(ops)
        error = None
        try:
            self.store.flush()
        except StoreFailure:
            raise
        except StoreError as exc:  # one bad op, dropped alone; the others are written
            error = exc.message
        self.batches += len(batches)
        self.rounds += 1
        if self.on_batch is not None:
            self.on_batch(batches[-1][0])
        ray.get(self.queue.committed.remote(batches[-1][0], error))

    def _fail(self, failure: StoreFailure) -> None:
        """Stop taking batches: fail the queue (workers' puts raise), the writer (the
        runtime's listeners stop the work) and tell this drain's listeners. Quick: it
        may run in the writer thread."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = failure
            listeners, self._listeners = self._listeners, []
        self.queue.fail.remote(failure.message)  # not awaited: the queue may be gone
        self.store.writer.fail(failure)
        for listener in listeners:
            listener(failure)

    def stats(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "batches": self.batches,
            "rounds": self.rounds,
            "reads_by": self.reads_by,
            "reads_answered": None if self.driver_reads is None else self.driver_reads.answered,
        }

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain what is queued, then stop; raises the failure that stopped the drain."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            if self._thread.is_alive():  # still writing: a last drain here would race it
                raise StoreError(
                    f"the record drain into {self.store.path} did not stop within "
                    f"{timeout_s}s (the database is slow or locked); queued records may be lost"
                )
            if self.failure is None:
                try:
                    self._drain(ray.get(self.queue.take.remote(0.0)))
                except StoreFailure as failure:
                    self._fail(failure)
        finally:
            if self.driver_reads is not None:
                self.driver_reads.stop()
            if self.reader is not None:
                ray.kill(self.reader)
                self.reader = None
        if self.failure is not None:
            raise self.failure
