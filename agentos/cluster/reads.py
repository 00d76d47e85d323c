"""Reads of the driver's database from other nodes: the :class:`StoreReader` actor.

A run reads a little of the database: its agent's state (``AgentState``), the rows its
own writes just made (a task agent's ``task_results`` de-duplication, a todo's id), the
tool cache, its events' last seq (``RunEvents``), and semantic memory (vector search).
On one machine it reads ``store.db``, a connection to the file. On a Ray worker of
another host there is no such file (and an NFS copy of a WAL database would be racy), so
a :class:`~agentos.cluster.records.RemoteStore` there answers ``store.db`` with a
:class:`RemoteDatabase`: each ``execute`` / ``query`` is one call to the ``StoreReader``
actor, which runs on the driver's node (hard node affinity, ``num_cpus=0``), holds a
read-only connection to the file per thread, and sends back the fetched rows.

Invariants:

- **Reads see what the driver has committed**, as ``store.db`` does on one machine:
  every statement runs in its own read transaction of a WAL database, so a read made
  after a ``flush`` returned sees the flushed writes (the flush returns only once the
  driver committed them). Ops still in a RemoteStore's buffer are not seen, exactly as
  ops still in the local writer's queue are not: callers flush first, as they already
  do (``task.py``, ``todo.py``, ``tools/cache.py``), and ``AgentState`` answers its own
  unflushed writes from memory.
- **Read-only.** The reader's connections are opened ``mode=ro`` with ``query_only``:
  a write slipped into a read is refused by SQLite, never executed beside the writer.
- **Whole answers, no cursors across the wire.** A statement's rows are fetched in the
  actor and shipped at once (a cursor cannot cross processes); what runs read is small
  (a state key, a period's item keys). Vector search ranks in the actor, next to the
  vectors, and ships only the hits.
- Each read is one actor call (~1 ms from another node on the build machine), made from
  the calling thread, blocking it as a SQLite read blocks it on one machine.
- **The reader reads the driver's file, or nothing.** It runs on the driver's node, so
  it opens the same file, unless the driver is not a node of the cluster (a Ray client,
  ``ray://``): then "the driver's node" is the head, whose file at that path is another
  one or none. So a Ray client never starts one, and :func:`file_identity` (host,
  device, inode) is compared when the drain starts one; where there is no reader, the
  driver answers the same calls itself (:mod:`agentos.cluster.driver_reads`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from agentos.errors import AgentosError, StoreError
from agentos.memory.types import VectorHit, VectorRecord, VectorSpace, VectorStoreError
from agentos.store.writer import BUSY_TIMEOUT_MS

READ_THREADS = 4
"""Reads the StoreReader answers at once (a vector search does not hold up a state get)."""


@dataclass(frozen=True, slots=True)
class Rows:
    """The answer to one statement: its column names and every row."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(host name, device, inode) of the file at ``path``: the same file on both sides of
    a Ray call only if these are equal. StoreError if there is no such file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise StoreError(f"cannot read the database {path}: {exc}") from None
    return (socket.gethostname(), st.st_dev, st.st_ino)


class StoreReader:
    """Answers read queries on the driver's database file; one per driver, on its node."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._vectors: Any = None
        self._connections: list[sqlite3.Connection] = []
        self.reads = 0
        """Statements and searches answered so far."""

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            try:
                # one thread uses it; close() may come from another, once that one is done
                conn = sqlite3.connect(
                    uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
                )
                conn.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the database {self.path}: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _count(self) -> None:
        with self._lock:
            self.reads += 1

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Rows:
        """Every row of ``sql``; a StoreError naming the statement if SQLite refuses it."""
        self._count()
        try:
            cursor = self._connection().execute(sql, params)
            columns = tuple(d[0] for d in cursor.description or ())
            return Rows(columns, cursor.fetchall())
        except sqlite3.Error as exc:
            words = " ".join(sql.split()[:4])
            raise StoreError(
                f"a read of the database {self.path} failed ({words} …): {exc}"
            ) from None

    def _vector_store(self) -> Any:
        with self._lock:
            if self._vectors is None:
                from agentos.memory.vectors import SqliteVectorStore
                from agentos.store import Store

                self._vectors = SqliteVectorStore(Store(self.path, readonly=True))
            return self._vectors

    def vector_spaces(self, model: str | None = None) -> list[VectorSpace]:
        self._count()
        spaces: list[VectorSpace] = self._vector_store().spaces(model)
        return spaces

    def vector_query(
        self, model: str, vector: Sequence[float], limit: int, agent: str | None
    ) -> list[VectorHit]:
        self._count()
        hits: list[VectorHit] = self._vector_store().query(model, vector, limit=limit, agent=agent)
        return hits

    def close(self) -> None:
        """Close every connection (the threads that read through them are done)."""
        with self._lock:
            connections, self._connections = self._connections, []
            vectors, self._vectors = self._vectors, None
        for conn in connections:
            conn.close()
        if vectors is not None:
            vectors.close()
            vectors.store.close()  # the read-only Store it was opened on

    def identity(self) -> tuple[str, int, int]:
        """:func:`file_identity` of the file this reader reads."""
        return file_identity(self.path)

    def stats(self) -> dict[str, Any]:
        return {"reads": self.reads, "path": str(self.path)}


StoreReaderActor: Any = ray.remote(num_cpus=0, max_concurrency=READ_THREADS)(  # type: ignore[call-overload]
    StoreReader
)
"""``StoreReader`` as a threaded Ray actor class; :class:`~agentos.cluster.records.
RecordDrain` starts one on the driver's node."""


def ask(ref: Any, what: str) -> Any:
    """``ray.get(ref)``, with the reader's own errors raised as themselves and a reader
    that is gone as a StoreError saying so."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, AgentosError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise StoreError(
            f"{what}: the driver's store reader is gone ({type(exc).__name__}); "
            "the driver has stopped or lost its Ray connection"
        ) from None


class FetchedCursor:
    """A ``sqlite3.Cursor`` look-alike over rows already fetched."""

    def __init__(self, answer: Rows) -> None:
        self.description = tuple((c, None, None, None, None, None, None) for c in answer.columns)
        self.rowcount = -1
        self._rows = answer.rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next : self._next + size]
        self._next += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row


class RemoteDatabase:
    """What runs use of ``sqlite_utils.Database`` (``store.db``), answered by a reader.

    ``execute`` (a cursor over the fetched rows), ``query`` (rows as dicts) and
    ``table(name)`` / ``db[name]`` reads (``rows_where``, ``count``). There is no
    ``conn``: nothing off the driver's node holds a connection to its database.
    """

    def __init__(self, reader: Any, path: Path) -> None:
        self.reader = reader
        self.path = path

    def execute(
        self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None
    ) -> FetchedCursor:
        answer = ask(self.reader.execute.remote(sql, parameters or ()), f"reading {self.path}")
        return FetchedCursor(answer)

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        cursor = self.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            yield dict(zip(columns, row, strict=True))

    def table(self, name: str) -> RemoteTable:
        return RemoteTable(self, name)

    def __getitem__(self, name: str) -> RemoteTable:
        return self.table(name)

    @property
    def conn(self) -> sqlite3.Connection:
        raise StoreError(
            f"no connection to {self.path} here: this process runs on another node than "
            "the driver, which alone opens its database; reads go through the store reader"
        )

    def close(self) -> None:
        """Nothing to close (the reader belongs to the driver)."""


class RemoteTable:
    """The reads of ``sqlite_utils.Table`` that a remote store answers."""

    def __init__(self, db: RemoteDatabase, name: str) -> None:
        self.db = db
        self.name = name

    def _quoted(self) -> str:
        return '"' + self.name.replace('"', '""') + '"'

    def rows_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | dict[str, Any] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        sql = f"SELECT * FROM {self._quoted()}"
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.db.query(sql, where_args)

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        return self.rows_where()

    @property
    def count(self) -> int:
        row = self.db.execute(f"SELECT count(*) FROM {self._quoted()}").fetchone()
        return int(row[0]) if row else 0


class RemoteVectorStore:
    """The SQLite vector store of the driver's database, searched by the reader.

    Searching is all a run does with vectors (``memory_search``); vectors are added by the
    driver's ``background[embeddings]``, so :meth:`add` refuses.
    """

    def __init__(self, reader: Any, path: Path) -> None:
        self.reader = reader
        self.path = path

    @property
    def description(self) -> str:
        return "sqlite on the driver's node (through the store reader)"

    @property
    def key(self) -> str:
        return "sqlite"

    def add(self, model: str, records: Sequence[VectorRecord]) -> None:
        raise VectorStoreError(
            "vectors are added on the driver (background[embeddings]), not by a run on "
            f"another node; {len(records)} record(s) of model '{model}' not stored"
        )

    def query(
        self, model: str, vector: Sequence[float], *, limit: int, agent: str | None = None
    ) -> list[VectorHit]:
        ref = self.reader.vector_query.remote(model, list(vector), limit, agent)
        hits: list[VectorHit] = ask(ref, f"searching the vectors of {self.path}")
        return hits

    def spaces(self, model: str | None = None) -> list[VectorSpace]:
        ref = self.reader.vector_spaces.remote(model)
        spaces: list[VectorSpace] = ask(ref, f"listing the vectors of {self.path}")
        return spaces

    def close(self) -> None:
        """Nothing to close (the reader belongs to the driver)."""
