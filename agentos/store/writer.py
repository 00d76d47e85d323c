"""The one thread that writes to the database.

Every write in a process goes through one :class:`Writer`: a thread with its own
connection that takes small op values (:class:`Insert`, :class:`Update`, :class:`Execute`,
:class:`Call`, :class:`Atomic`) from a queue and groups whatever is queued into one
transaction, so the cost of a commit is shared by up to ``max_ops`` rows instead of paid
per row, and the event loop never waits for SQLite.

Invariants:

- :meth:`Writer.submit` appends to a queue and returns; it is safe from any thread and
  from asyncio code. It waits only when ``max_backlog`` ops are queued (the database is
  slower than the work for a while), until the writer has caught up to half of that:
  backpressure, so that what is queued stays bounded in memory. Producers of many
  writes await :meth:`Writer.room` first, which waits off the event loop and earlier.
- Ops take effect in the order they were submitted. Within a group, inserts into one
  table with the same columns are written by one ``executemany`` (the cheapest way
  through Python's sqlite3 by far); the other ops run after every insert they could
  see, so the outcome is the one of writing op by op (:meth:`Writer._plan`).
- A group is one ``BEGIN IMMEDIATE … COMMIT`` of at most ``max_ops`` ops, taken off the
  queue before the write lock is, so the lock is held only while their statements run
  and readers in other processes (``top``) and writers in other processes (a cron run
  next to a daemon) get their turn. Readers are never blocked anyway: the database is
  in WAL mode.
- One bad op never loses the others: if a group fails, it is rolled back and each half
  is written on its own, down to single ops; only the ops that fail on their own are
  dropped, and the first such error is raised by the next :meth:`Writer.flush`.
- A failure of the storage itself (disk full, I/O error, a file that refuses writes:
  :func:`is_storage_failure`) is not one bad op: every later write would fail the same
  way. The writer stops at the first one, drops what is queued, refuses every later
  submit with :class:`~agentos.errors.StoreFailure`, and tells its failure listeners
  (:meth:`Writer.add_failure_listener`), so a runtime stops spending on work it can no
  longer record.
- :meth:`Writer.flush` returns once everything submitted before it is committed.
- An :class:`Atomic` is one logical write: its ops commit together or not at all.

Ops belong to the writer once submitted; do not mutate a row dict after submitting it.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import sqlite_utils

from agentos.errors import StoreError, StoreFailure

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another process's write lock before failing."""


@dataclass(frozen=True, slots=True)
class Insert:
    """Insert ``row`` into ``table``; ``replace`` turns it into INSERT OR REPLACE.

    dict, list and tuple values are stored as JSON text.
    """

    table: str
    row: Mapping[str, Any]
    replace: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """Set ``values`` on the row of ``table`` whose primary key is ``pk``.

    ``pk`` is the key value, or a tuple of values for a compound key. Updating a row that
    does not exist is an error (reported by flush), because it always means a bug.
    """

    table: str
    pk: Any
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Execute:
    """Run one SQL statement with parameters.

    ``tables``: every table the statement reads or writes, when the caller knows them; the
    writer then keeps inserts into other tables batched across it. ``None`` (any table)
    makes it write everything queued before it first.
    """

    sql: str
    params: Sequence[Any] | Mapping[str, Any] = ()
    tables: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``function(connection)`` in the writer thread, in the group's transaction: a
    write computed from what is committed at that point of the queue (the audit's outputs
    seal), without the caller waiting for a flush. ``tables`` as for :class:`Execute`.

    It may run more than once (a group that fails is rolled back and written again in
    halves), so it must only read and write the database through ``connection``."""

    function: Callable[[sqlite3.Connection], None]
    tables: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Atomic:
    """Ops that form one logical write: committed together, or not at all."""

    ops: tuple[Insert | Update | Execute | Call, ...]


WriteOp = Insert | Update | Execute | Call | Atomic

MAX_BACKLOG = 20_000
"""Ops queued at most before :meth:`Writer.submit` waits for the writer (backpressure)."""


@dataclass(eq=False, slots=True)
class _Flush:
    """Queue marker: set ``done`` once every op queued before it is committed."""

    stop: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[tuple[WriteOp, BaseException]] = field(default_factory=list)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _to_sql_value(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return value


_SQL_SCALARS = frozenset({str, int, float, bytes, bool, type(None)})


def _params(row: Mapping[str, Any]) -> Sequence[Any]:
    values = tuple(row.values())
    for value in values:
        if type(value) not in _SQL_SCALARS:
            return [_to_sql_value(v) for v in values]
    return values


def _tables_of(op: WriteOp) -> frozenset[str] | None:
    """The tables ``op`` touches; None when it may touch any."""
    if isinstance(op, Insert | Update):
        return frozenset((op.table,))
    if isinstance(op, Execute | Call):
        return None if op.tables is None else frozenset(op.tables)
    if isinstance(op, Atomic):
        tables: set[str] = set()
        for inner in op.ops:
            inner_tables = _tables_of(inner)
            if inner_tables is None:
                return None
            tables |= inner_tables
        return frozenset(tables)
    return None


class _Split(Exception):
    """A group that cannot be written as one transaction."""


_STORAGE_CODES: frozenset[int] = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PERM,
    }
)


def is_storage_failure(exc: BaseException) -> TypeGuard[sqlite3.Error]:
    """Whether ``exc`` says the database file cannot be written at all (disk full, I/O
    error, read-only or damaged file), as opposed to one op that is wrong."""
    return (
        isinstance(exc, sqlite3.Error)
        and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _STORAGE_CODES
    )


class _StorageFailed(Exception):
    """Raised inside the writer thread: the storage failed, stop writing."""

    def __init__(self, what: str, cause: sqlite3.Error) -> None:
        super().__init__(str(cause))
        self.what = what
        self.cause = cause
        self.marker: _Flush | None = None
        """The flush marker that ended the failed group, if one did."""


@dataclass(slots=True)
class _Batch:
    """Inserts with the same statement, written by one ``executemany``."""

    table: str
    sql: str
    rows: list[Sequence[Any]]


def describe_op(op: WriteOp) -> str:
    """A short description of ``op`` for error messages (no row contents)."""
    if isinstance(op, Insert):
        return f"insert into {op.table}"
    if isinstance(op, Update):
        return f"update {op.table} {op.pk!r}"
    if isinstance(op, Execute):
        return "execute " + " ".join(op.sql.split()[:3])
    if isinstance(op, Call):
        function = getattr(op.function, "func", op.function)  # a functools.partial
        return "call " + getattr(function, "__name__", "function")
    return f"atomic write of {len(op.ops)} ops"


class Writer:
    """Owns every write to one database file; see the module docstring.

    The thread and its connection start on the first :meth:`submit`, so a store that is
    only read never starts one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_ops: int = 2000,
        max_seconds: float = 0.05,
        max_backlog: int = MAX_BACKLOG,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.max_backlog = max_backlog
        self.commits = 0
        """Transactions committed so far (grouped and one-op fallbacks)."""
        self.ops_written = 0
        """Ops committed so far."""
        self.ops_failed = 0
        """Ops dropped because they failed on their own."""
        self._queue: queue.SimpleQueue[WriteOp | _Flush] = queue.SimpleQueue()
        # Protects _thread, _closed and _fatal, so that a submit racing close() either
        # lands before the stop marker or is refused, never queued behind it and lost.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = readonly
        self._fatal: BaseException | None = None
        self._pending_errors: list[tuple[WriteOp, BaseException]] = []
        self._insert_sql: dict[tuple[str, tuple[str, ...], bool], str] = {}
        self._submitted = 0
        """Ops submitted so far (written under ``_lock``)."""
        self._done = 0
        """Ops the thread has written or dropped (written by the writer thread only)."""
        # Wakes submitters waiting for the backlog to shrink (backpressure).
        self._drained = threading.Condition(threading.Lock())
        self._waiters = 0
        self._pks: dict[str, list[str]] = {}
        self._listeners: list[Callable[[StoreFailure], None]] = []
        self.failure: StoreFailure | None = None
        """Set once the storage failed (see the module docstring); None while it works."""

    # -- the calling side -------------------------------------------------------------

    def submit(self, op: WriteOp) -> int:
        """Queue ``op`` for writing; returns at once (unless the backlog is full, see the
        module docstring). Raises StoreError once closed.

        Returns the op's ticket: once :attr:`done` has reached it, the op was written (or
        failed, which the next flush reports).
        """
        with self._lock:
            self._check_usable()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"agentos-writer:{self.path.name}", daemon=True
                )
                self._thread.start()
                _live_writers.add(self)
            self._queue.put(op)
            self._submitted += 1
            ticket = self._submitted
            backlog = ticket - self._done
        if backlog > self.max_backlog and threading.current_thread() is not self._thread:
            self._wait_for_backlog(self.max_backlog // 2)
        return ticket

    @property
    def done(self) -> int:
        """How many submitted ops have been written or have failed, in submission order:
        every op whose ticket is at most this is behind the writer."""
        return self._done

    @property
    def backlog(self) -> int:
        """Ops submitted and not yet written (approximate while the thread works)."""
        return self._submitted - self._done

    @property
    def congested(self) -> bool:
        """More than a quarter of ``max_backlog`` queued: producers that can wait should
        (:meth:`room`), before :meth:`submit` makes them."""
        return self._submitted - self._done > self.max_backlog // 4

    async def room(self) -> None:
        """Return at once unless :attr:`congested`; then wait, off the event loop, until
        the writer has caught up to an eighth of ``max_backlog``.

        What a producer that makes many writes (a run's attempts) awaits before starting
        more, so that memory stays bounded when the database is slower than the work,
        and the event loop keeps serving everything else meanwhile.
        """
        if self.congested:
            await asyncio.to_thread(self._wait_for_backlog, self.max_backlog // 8)

    def _wait_for_backlog(self, level: int) -> None:
        with self._drained:
            self._waiters += 1
            try:
                while (
                    self._submitted - self._done > level
                    and self._fatal is None
                    and self._thread is not None
                    and self._thread.is_alive()
                ):
                    self._drained.wait(0.05)
            finally:
                self._waiters -= 1

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted before this call is committed.

        Raises StoreError for the first op that failed since the previous flush (the
        others were written), or if the writes are not committed within ``timeout``.
        """
        with self._lock:
            if self._thread is None or self._closed:
                return
            self._check_usable()
            marker = _Flush()
            self._queue.put(marker)
        self._wait(marker, timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        """:meth:`flush` for asyncio code: waits in a worker thread, not on the loop."""
        await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the thread and close its connection. Idempotent.

        Raises like :meth:`flush`, after the thread has stopped.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is None:
                return
            if self.failure is not None:
                raise StoreFailure(self.failure.message) from self.failure.__cause__
            if self._fatal is not None:
                raise StoreError(
                    f"the writer for {self.path} stopped after an error: {self._fatal}"
                ) from self._fatal
            marker = _Flush(stop=True)
            self._queue.put(marker)
        try:
            self._wait(marker, timeout)
        finally:
            thread.join(timeout)
            _live_writers.discard(self)

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` for asyncio code."""
        await asyncio.to_thread(self.close, timeout)

    @property
    def usable(self) -> bool:
        """Whether :meth:`submit` takes writes now (not closed, read-only or stopped)."""
        return not (self._closed or self.readonly or self._fatal is not None or self.failure)

    def add_failure_listener(self, listener: Callable[[StoreFailure], None]) -> None:
        """Call ``listener(failure)`` once the storage fails: from the writer thread, or at
        once if it already has. It must be quick and must not write to this store."""
        with self._lock:
            failure = self.failure
            if failure is None:
                self._listeners.append(listener)
        if failure is not None:
            listener(failure)

    def _check_usable(self) -> None:
        if self.failure is not None:
            raise StoreFailure(self.failure.message) from self.failure.__cause__
        if self._fatal is not None:
            raise StoreError(
                f"the writer for {self.path} stopped after an error: {self._fatal}"
            ) from self._fatal
        if self.readonly:
            raise StoreError(f"the store {self.path} was opened read-only; it takes no writes")
        if self._closed:
            raise StoreError(f"the store {self.path} is closed; it takes no more writes")

    def _wait(self, marker: _Flush, timeout: float | None) -> None:
        if not marker.done.wait(timeout):
            raise StoreError(f"writes to {self.path} were not committed within {timeout}s")
        if self.failure is not None:
            raise StoreFailure(self.failure.message) from self.failure.__cause__
        if self._fatal is not None and not marker.errors:
            raise StoreError(
                f"the writer for {self.path} stopped after an error: {self._fatal}"
            ) from self._fatal
        if marker.errors:
            op, exc = marker.errors[0]
            more = len(marker.errors) - 1
            also = f" ({more} more write(s) failed too)" if more else ""
            raise StoreError(
                f"a write to {self.path} failed: {describe_op(op)}: {exc}{also}"
            ) from exc

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._loop(conn)
        except _StorageFailed as exc:
            self._fail(exc)
        except BaseException as exc:
            logger.exception("agentos store writer for %s stopped", self.path)
            self._die(exc)
        finally:
            if conn is not None:
                conn.close()

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if isinstance(first, _Flush):
                if self._release(first):
                    return
                continue
            marker = self._write_group(conn, first)
            if marker is not None and self._release(marker):
                return

    def _release(self, marker: _Flush) -> bool:
        marker.errors, self._pending_errors = self._pending_errors, []
        marker.done.set()
        return marker.stop

    def _write_group(self, conn: sqlite3.Connection, first: WriteOp) -> _Flush | None:
        """Write ``first`` and whatever follows it in the queue as one transaction.

        Returns the flush marker that ended the group, if one did.
        """
        ops: list[WriteOp] = [first]
        marker: _Flush | None = None
        deadline = time.monotonic() + self.max_seconds
        while len(ops) < self.max_ops and time.monotonic() < deadline:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                marker = item
                break
            ops.append(item)
        try:
            self._write_ops(conn, ops)
        except _StorageFailed as failed:
            failed.marker = marker  # taken off the queue: released by _fail
            raise
        self._done += len(ops)
        if self._waiters:
            with self._drained:
                self._drained.notify_all()
        return marker

    def _write_ops(self, conn: sqlite3.Connection, ops: list[WriteOp]) -> None:
        """``ops`` as one transaction; if it fails, each half on its own, down to the ops
        that fail alone (a bad op costs a few more commits, never the others' rows)."""
        if len(ops) == 1:
            self._write_alone(conn, ops[0])
            return
        try:
            steps = self._plan(ops)
        except Exception:  # a row that cannot be stored: found by the halves
            steps = None
        if steps is not None:
            self._begin(conn)
        try:
            if steps is None:
                raise _Split
            # foreign keys are checked at COMMIT: batching may insert a child row's
            # statement before its parent's within the transaction
            conn.execute("PRAGMA defer_foreign_keys = ON")
            for step in steps:
                if isinstance(step, _Batch):
                    conn.executemany(step.sql, step.rows)
                else:
                    self._apply(conn, step)
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            if is_storage_failure(exc):
                raise _StorageFailed(f"a group of {len(ops)} writes", exc) from exc
            half = len(ops) // 2
            self._write_ops(conn, ops[:half])
            self._write_ops(conn, ops[half:])
        else:
            self.commits += 1
            self.ops_written += len(ops)

    def _plan(self, ops: list[WriteOp]) -> list[_Batch | WriteOp]:
        """The statements that write ``ops``, in an order with the same outcome.

        Inserts into one table with the same columns become one ``executemany``, placed
        where the first of them was. Everything else runs as it is, after every queued
        insert into the tables it touches (an :class:`Update` its own table, an
        :class:`Execute` its ``tables`` or all of them, an :class:`Atomic` those of its
        ops), so it sees exactly the rows it would have seen one op at a time; an insert
        that follows it starts a new batch after it. Statements on different tables are
        independent within a transaction (no triggers; foreign keys deferred to COMMIT).
        """
        steps: list[_Batch | WriteOp] = []
        open_batches: dict[str, _Batch] = {}
        last_step: dict[str, int] = {}  # table -> index of the last step that touches it
        barrier = -1  # index of the last step that may touch any table
        updates: dict[tuple[str, Any, tuple[str, ...]], int] = {}
        for op in ops:
            if type(op) is Insert:
                sql = self._insert_sql_of(op)
                batch = open_batches.get(sql)
                if batch is None:
                    batch = open_batches[sql] = _Batch(op.table, sql, [])
                    last_step[op.table] = len(steps)
                    steps.append(batch)
                batch.rows.append(_params(op.row))
                continue
            if type(op) is Update:
                # a run's progress is updated after every attempt: of updates that set
                # the same columns of the same row with nothing touching the table in
                # between, only the last one is run (the outcome is the same)
                key = (op.table, op.pk, tuple(op.values))
                try:
                    index = updates.get(key)
                    updates[key] = len(steps)
                except TypeError:  # an unhashable key value: never merged
                    index = None
                if index is not None and last_step.get(op.table) == index and index > barrier:
                    steps[index] = op
                    updates[key] = index
                    continue
            tables = _tables_of(op)
            if tables is None:
                open_batches.clear()
                barrier = len(steps)
            else:
                if open_batches:
                    for sql in [k for k, b in open_batches.items() if b.table in tables]:
                        del open_batches[sql]
                for table in tables:
                    last_step[table] = len(steps)
            steps.append(op)
        return steps

    def _insert_sql_of(self, op: Insert) -> str:
        key = (op.table, tuple(op.row), op.replace)
        sql = self._insert_sql.get(key)
        if sql is None:
            verb = "INSERT OR REPLACE" if op.replace else "INSERT"
            columns = key[1]
            sql = (
                f"{verb} INTO {_quote(op.table)} ({', '.join(map(_quote, columns))}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            self._insert_sql[key] = sql
        return sql

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, however long another process holds it.

        Each attempt already waits the busy timeout; giving up would drop writes, and a
        lock held for long means another process is working, not that ours is wrong.
        """
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != sqlite3.SQLITE_BUSY:
                    raise
                logger.warning("agentos store: %s is locked by another writer; waiting", self.path)

    def _write_alone(self, conn: sqlite3.Connection, op: WriteOp) -> None:
        try:
            self._begin(conn)
            self._apply(conn, op)
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            if is_storage_failure(exc):
                raise _StorageFailed(describe_op(op), exc) from exc
            self.ops_failed += 1
            self._pending_errors.append((op, exc))
            logger.warning("agentos store: %s failed: %s", describe_op(op), exc)
        else:
            self.commits += 1
            self.ops_written += 1

    def _apply(self, conn: sqlite3.Connection, op: WriteOp) -> None:
        if isinstance(op, Insert):
            conn.execute(self._insert_sql_of(op), _params(op.row))
        elif isinstance(op, Update):
            self._apply_update(conn, op)
        elif isinstance(op, Execute):
            conn.execute(op.sql, op.params)
        elif isinstance(op, Call):
            op.function(conn)
        elif isinstance(op, Atomic):
            for inner in op.ops:
                self._apply(conn, inner)
        else:
            raise TypeError(f"not a write op: {op!r}")

    def _apply_update(self, conn: sqlite3.Connection, op: Update) -> None:
        pks = self._pks.get(op.table)
        if pks is None:
            pks = sqlite_utils.Database(conn, execute_plugins=False).table(op.table).pks
            self._pks[op.table] = pks
        key = op.pk if isinstance(op.pk, tuple) else (op.pk,)
        if len(key) != len(pks):
            raise StoreError(f"{op.table} has primary key {pks}, got {op.pk!r}")
        sets = ", ".join(f"{_quote(c)} = ?" for c in op.values)
        where = " AND ".join(f"{_quote(c)} = ?" for c in pks)
        params = [_to_sql_value(v) for v in op.values.values()] + list(key)
        cursor = conn.execute(f"UPDATE {_quote(op.table)} SET {sets} WHERE {where}", params)
        if cursor.rowcount == 0:
            raise StoreError(f"no row in {op.table} with primary key {op.pk!r}")

    def _fail(self, failed: _StorageFailed) -> None:
        """The storage failed: refuse every later write, drop what is queued, release
        every waiter and tell the listeners (module docstring)."""
        failure = StoreFailure(
            f"the database {self.path} cannot be written ({failed.cause}); agentos stopped "
            "writing to it and stopped its work. Free space on its disk, or fix what "
            "refuses the writes, and run again."
        )
        failure.__cause__ = failed.cause
        logger.error("agentos store: %s failed: %s", failed.what, failed.cause)
        self._stop_failed(failure, failed.marker)

    def fail(self, failure: StoreFailure) -> None:
        """Stop as if the storage had failed with ``failure``: refuse every later write,
        drop what is queued and tell the failure listeners. For a path that feeds this
        writer and broke (the cluster's record drain, :mod:`agentos.cluster.records`),
        whose work must stop as it stops on a full disk. A no-op once failed."""
        self._stop_failed(failure, None)

    def _stop_failed(self, failure: StoreFailure, marker: _Flush | None) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = failure
            listeners, self._listeners = self._listeners, []
        if not first:
            if marker is not None:
                marker.done.set()
            return
        self._die(failure)
        if marker is not None:
            marker.done.set()
        _live_writers.discard(self)  # nothing is left to write at exit; the error is logged
        for listener in listeners:
            try:
                listener(failure)
            except Exception:
                logger.exception("agentos store: a failure listener failed")

    def _die(self, exc: BaseException) -> None:
        """Record a fatal error and release every waiter, so no flush hangs forever."""
        with self._lock:
            self._fatal = exc
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Flush):
                item.done.set()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open; a storage that failed may refuse even that (SQLite has
    then rolled back by itself)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            logger.warning("agentos store: rollback failed: %s", exc)


_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _close_live_writers() -> None:
    """Commit what is queued when a program exits without closing its store.

    The writer thread is a daemon (a forgotten close must not hang the exit), and
    atexit handlers run before daemon threads are stopped.
    """
    for writer in list(_live_writers):
        try:
            writer.close(timeout=30)
        except Exception:
            logger.exception("agentos store: writes lost at exit")
