"""Where vectors live: the vector store interface, and its SQLite implementation.

A vector store keeps, for each embedded record, its vector together with where the record
came from (source table and row, run, agent, time) and the text that was embedded, and
answers "the records closest to this vector". Two implementations: :class:`SqliteVectorStore`
(the default: the ``embeddings`` table of the agentos database) and
:class:`~agentos.memory.qdrant.QdrantVectorStore` (when configured); what they share
(records, hits, the interface, the errors) is in ``types.py``.

Invariants, whatever the implementation:

- **Vectors of different models or dimensions never mix.** Every vector belongs to a
  *space*, a model and a dimension; a space is one table partition (SQLite) or one
  collection (Qdrant), and a query only ever compares vectors of one space. A query vector
  whose dimension no space of its model has, while other dimensions of that model are
  stored, is refused with :class:`VectorDimensionError` rather than answered with nothing.
- **Adding is an upsert** keyed by (space, source, source id): adding a record again
  replaces it. So the indexer may repeat work after a crash (it stores vectors before it
  marks their records done) and never duplicates a record.
- Scores are cosine similarities, 1.0 for the same direction; hits come best first.
"""

from __future__ import annotations

import array
import heapq
import math
import operator
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence

from agentos.memory.config import VectorStoreConfig
from agentos.memory.extension import check_sqlite_vec, register_sqlite_vec
from agentos.memory.types import (
    VectorDimensionError,
    VectorHit,
    VectorRecord,
    VectorSpace,
    VectorStore,
    VectorStoreError,
    check_dimension,
    check_vector,
)
from agentos.store import Store
from agentos.store.writer import Atomic, Execute

__all__ = [
    "SqliteVectorStore",
    "VectorDimensionError",
    "VectorHit",
    "VectorRecord",
    "VectorSpace",
    "VectorStore",
    "VectorStoreError",
    "check_dimension",
    "check_vector",
    "open_vector_store",
    "pack_vector",
    "try_load_sqlite_vec",
    "unit_vector",
    "unpack_vector",
]

_BYTE_ORDER_OK = sys.byteorder == "little"
"""``array('f')`` is native-endian; the stored format is little-endian float32."""


def unit_vector(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector stays zero), so cosine is a dot product."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return [0.0] * len(vector)
    return [x / norm for x in vector]


def pack_vector(vector: Sequence[float]) -> bytes:
    """The stored form: little-endian float32, the "raw bytes" format of sqlite-vec."""
    packed = array.array("f", vector)
    if not _BYTE_ORDER_OK:
        packed.byteswap()
    return packed.tobytes()


def unpack_vector(blob: bytes) -> array.array[float]:
    vector = array.array("f")
    vector.frombytes(blob)
    if not _BYTE_ORDER_OK:
        vector.byteswap()
    return vector


def try_load_sqlite_vec(conn: sqlite3.Connection) -> str | None:
    """Load the sqlite-vec extension into ``conn``; returns why not, or None on success.

    Loading needs ``sqlite3.Connection.enable_load_extension``, which Python builds made
    without ``--enable-loadable-sqlite-extensions`` (pyenv's default, for one) lack; for
    those, see :func:`~agentos.memory.extension.register_sqlite_vec`.
    """
    try:
        import sqlite_vec  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "the package sqlite-vec is not installed"
    enable = getattr(conn, "enable_load_extension", None)
    if enable is None:
        return "this Python's sqlite3 cannot load extensions"
    try:
        enable(True)
        try:
            sqlite_vec.load(conn)
        finally:
            enable(False)
        conn.execute("SELECT vec_version()").fetchone()
    except sqlite3.Error as exc:
        return f"sqlite-vec did not load: {exc}"
    return None


_INSERT = """
INSERT OR REPLACE INTO embeddings
    (model, dim, source, source_id, run_id, agent, created_at, text, vector, embedded_at)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE ? IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = ?)
"""
"""A record whose run has been pruned meanwhile is dropped instead of failing the write
(``embeddings.run_id`` references ``runs``), so the shared writer never reports an error
for a race that is nobody's fault."""

_SCAN_CHUNK = 2048


class SqliteVectorStore:
    """Vectors in the ``embeddings`` table of the agentos database (migration m006).

    Writes go through the store's writer (queued, grouped, in submission order); reads use
    a connection of this object's own, so a search in a worker thread never shares
    ``store.db`` with the event loop. Ranking is exact (every vector of the space is
    compared): with sqlite-vec loaded, in SQL by ``vec_distance_cosine``; otherwise by a
    dot product of unit vectors in Python, about 30 µs per 576-float vector (0.3 s per
    10,000 records). Both give the same order.
    """

    def __init__(self, store: Store, *, use_sqlite_vec: bool = True) -> None:
        self.store = store
        # Serialises use of the read connection by the worker threads that query.
        self._lock = threading.Lock()
        self._conn = self._connect()
        self.sqlite_vec_problem: str | None = "turned off"
        if use_sqlite_vec:
            self.sqlite_vec_problem = self._load_sqlite_vec()

    def _load_sqlite_vec(self) -> str | None:
        """sqlite-vec in the read connection: loaded into it where this Python's sqlite3
        can load extensions, else registered with its SQLite library and a fresh
        connection opened (:mod:`agentos.memory.extension`)."""
        if check_sqlite_vec(self._conn) is None:
            return None  # registered earlier in this process
        if hasattr(self._conn, "enable_load_extension"):
            return try_load_sqlite_vec(self._conn)
        problem = register_sqlite_vec()
        if problem is not None:
            return problem
        self._conn.close()
        self._conn = self._connect()
        return check_sqlite_vec(self._conn)

    def _connect(self) -> sqlite3.Connection:
        path = self.store.path
        try:
            if self.store.readonly:
                uri = path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
            else:
                conn = sqlite3.connect(str(path), check_same_thread=False, timeout=10)
        except sqlite3.Error as exc:
            raise VectorStoreError(f"cannot open the vectors in {path}: {exc}") from exc
        return conn

    @property
    def uses_sqlite_vec(self) -> bool:
        return self.sqlite_vec_problem is None

    @property
    def description(self) -> str:
        if self.uses_sqlite_vec:
            return "sqlite (sqlite-vec)"
        return f"sqlite (cosine in Python; sqlite-vec not used: {self.sqlite_vec_problem})"

    @property
    def key(self) -> str:
        return "sqlite"

    def add(self, model: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        now = time.time()
        ops = []
        for record in records:
            check_vector(record.vector)
            ops.append(
                Execute(
                    _INSERT,
                    (
                        model,
                        len(record.vector),
                        record.source,
                        record.source_id,
                        record.run_id,
                        record.agent,
                        record.created_at,
                        record.text,
                        pack_vector(unit_vector(record.vector)),
                        now,
                        record.run_id,
                        record.run_id,
                    ),
                )
            )
        self.store.submit(Atomic(tuple(ops)))

    def spaces(self, model: str | None = None) -> list[VectorSpace]:
        sql = "SELECT model, dim, count(*) FROM embeddings"
        params: list[str] = []
        if model is not None:
            sql += " WHERE model = ?"
            params.append(model)
        sql += " GROUP BY model, dim ORDER BY model, dim"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [VectorSpace(model=m, dim=d, count=c) for m, d, c in rows]

    def query(
        self, model: str, vector: Sequence[float], *, limit: int, agent: str | None = None
    ) -> list[VectorHit]:
        check_vector(vector)
        dim = len(vector)
        check_dimension(model, dim, [s.dim for s in self.spaces(model)])
        if limit < 1:
            return []
        where = "model = ? AND dim = ?"
        params: list[object] = [model, dim]
        if agent is not None:
            where += " AND agent = ?"
            params.append(agent)
        unit = unit_vector(vector)
        with self._lock:
            if self.uses_sqlite_vec:
                ranked = self._rank_in_sql(where, params, unit, limit)
            else:
                ranked = self._rank_in_python(where, params, unit, limit)
            return self._hits(ranked)

    def _rank_in_sql(
        self, where: str, params: list[object], unit: list[float], limit: int
    ) -> list[tuple[float, int]]:
        # sqlite-vec answers NULL for a zero vector; its similarity is 0, as in Python.
        sql = (
            "SELECT COALESCE(vec_distance_cosine(vector, ?), 1.0) AS distance, rowid "
            f"FROM embeddings WHERE {where} ORDER BY distance LIMIT ?"
        )
        rows = self._conn.execute(sql, [pack_vector(unit), *params, limit]).fetchall()
        return [(1.0 - float(distance), rowid) for distance, rowid in rows]

    def _rank_in_python(
        self, where: str, params: list[object], unit: list[float], limit: int
    ) -> list[tuple[float, int]]:
        best: list[tuple[float, int]] = []
        cursor = self._conn.execute(f"SELECT rowid, vector FROM embeddings WHERE {where}", params)
        mul = operator.mul
        while chunk := cursor.fetchmany(_SCAN_CHUNK):
            scored = ((sum(map(mul, unit, unpack_vector(blob))), rowid) for rowid, blob in chunk)
            best = heapq.nlargest(limit, [*best, *scored])
        return best

    def _hits(self, ranked: list[tuple[float, int]]) -> list[VectorHit]:
        if not ranked:
            return []
        marks = ", ".join("?" * len(ranked))
        rows = self._conn.execute(
            "SELECT rowid, source, source_id, text, run_id, agent, created_at "
            f"FROM embeddings WHERE rowid IN ({marks})",
            [rowid for _, rowid in ranked],
        ).fetchall()
        by_rowid = {row[0]: row[1:] for row in rows}
        hits = []
        for score, rowid in ranked:
            found = by_rowid.get(rowid)
            if found is None:
                continue  # replaced between ranking and reading
            source, source_id, text, run_id, agent, created_at = found
            hits.append(
                VectorHit(
                    source=source,
                    source_id=source_id,
                    text=text,
                    score=round(min(1.0, max(-1.0, score)), 6),
                    run_id=run_id,
                    agent=agent,
                    created_at=created_at,
                )
            )
        return hits

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_vector_store(config: VectorStoreConfig | None, store: Store) -> VectorStore:
    """The vector store config.yaml asks for (``None``: the SQLite default) for ``store``."""
    if config is None or config.type == "sqlite":
        return SqliteVectorStore(store)
    from agentos.memory.qdrant import QdrantVectorStore

    return QdrantVectorStore.from_config(config)
