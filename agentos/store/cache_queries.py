"""The SQL of the response cache (table ``cache``, created by ``m002_cache_and_snapshots``).

The cache's meaning (what a key is, when an entry may be served) lives in
:mod:`agentos.router.cache`; this module only reads and writes rows. As everywhere in the
store, writes go through the store's writer and reads run on ``store.db``.

Counting what a maintenance command deleted: the writer does not hand back row counts, so
:func:`clear_cache` and :func:`prune_cache` count the matching rows on ``store.db`` with the
same condition and the same ``now`` they then delete with, and flush. The count is exact
unless another process writes the cache in the same instant (an entry committed between the
count and the delete is deleted without being counted).

Space: agentos databases are created with ``auto_vacuum`` off (the default; switching it on
later needs a full ``VACUUM``), so deleting rows frees pages inside the file for later
inserts and the file does not shrink; ``VACUUM`` with no agentos running shrinks it. If a
database does have ``auto_vacuum=INCREMENTAL``, the freed pages are returned to the file
system with ``PRAGMA incremental_vacuum`` after the delete (see :func:`_reclaim_space`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentos.store.db import Store
from agentos.store.writer import Execute, Insert

CACHE_TABLE = "cache"

_LOOKUP_SQL = (
    "SELECT key, text, response, embedding, prompt_tokens, completion_tokens, engine, "
    "created_at, expires_at FROM cache WHERE key = ?"
)
_HIT_SQL = "UPDATE cache SET hits = hits + 1, last_hit_at = ? WHERE key = ?"
_EXPIRED = "(expires_at IS NOT NULL AND expires_at <= ?)"
_AUTO_VACUUM_INCREMENTAL = 2


@dataclass
class CacheStats:
    """What ``agentos cache stats`` shows: a summary of the whole ``cache`` table."""

    entries: int
    hits: int
    """Sum of the entries' hit counters (hits served from the store or from memory)."""
    bytes: int
    """Approximate size: the summed byte lengths of the stored JSON and text columns."""
    oldest: float | None
    """``created_at`` of the oldest entry (unix seconds); None when the cache is empty."""
    newest: float | None
    expired: int
    """Entries past their ``expires_at``: never served again, deleted by a prune."""
    by_model: dict[str, int] = field(default_factory=dict)


def lookup_row(store: Store, key: str) -> tuple[Any, ...] | None:
    """The stored entry for ``key`` as a tuple in the order of ``_LOOKUP_SQL``, or None.

    One primary-key lookup on ``store.db``, with the cursor read to the end so no read
    transaction stays open (an open one would pin the WAL and stop checkpoints). Through
    ``store.db.execute``, not its ``conn``: on a cluster node without the database file
    ``store.db`` is a :class:`~agentos.cluster.reads.RemoteDatabase`, which has no
    connection (the router actor of a ``ray://`` driver looks entries up there).
    """
    rows = store.db.execute(_LOOKUP_SQL, (key,)).fetchall()
    return rows[0] if rows else None


def key_rows_after(store: Store, rowid: int, limit: int) -> tuple[list[tuple[int, str]], int]:
    """Up to ``limit`` (rowid, key) pairs of entries past ``rowid``, in rowid order, and
    the table's highest rowid now (0 when it is empty)."""
    rows = store.db.execute(
        "SELECT rowid, key FROM cache WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)
    ).fetchall()
    highest = store.db.execute("SELECT max(rowid) FROM cache").fetchall()[0][0]
    return rows, highest or 0


def cache_insert(
    *,
    key: str,
    kind: str,
    model: str,
    request_json: str,
    response_json: str,
    text: str,
    embedding_json: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    engine: str,
    created_at: float,
    expires_at: float | None,
) -> Insert:
    """The writer op that stores one entry, replacing any older entry with the same key."""
    return Insert(
        CACHE_TABLE,
        {
            "key": key,
            "kind": kind,
            "model": model,
            "request": request_json,
            "response": response_json,
            "text": text,
            "embedding": embedding_json,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "engine": engine,
            "created_at": created_at,
            "expires_at": expires_at,
            "hits": 0,
            "last_hit_at": None,
        },
        replace=True,
    )


def cache_hit(key: str, at: float) -> Execute:
    """The writer op that counts one hit; a no-op if the entry was deleted meanwhile."""
    return Execute(_HIT_SQL, (at, key), (CACHE_TABLE,))


def cache_reject(key: str, text: str) -> Execute:
    """The writer op that deletes the entry ``key`` if it still holds the answer ``text``
    (an agent refused it); a newer answer stored under the key meanwhile is kept."""
    return Execute("DELETE FROM cache WHERE key = ? AND text = ?", (key, text), (CACHE_TABLE,))


def cache_stats(store: Store, *, now: float | None = None) -> CacheStats:
    """Count, size, age range, expired entries and entries per model (two table scans)."""
    now = time.time() if now is None else now
    row = store.db.conn.execute(
        "SELECT count(*), coalesce(sum(hits), 0), coalesce(sum("
        "length(CAST(request AS BLOB)) + length(CAST(response AS BLOB))"
        " + length(CAST(text AS BLOB)) + coalesce(length(CAST(embedding AS BLOB)), 0)), 0),"
        f" min(created_at), max(created_at), coalesce(sum({_EXPIRED}), 0) FROM cache",
        (now,),
    ).fetchall()[0]
    by_model = store.db.conn.execute(
        "SELECT model, count(*) FROM cache GROUP BY model ORDER BY model"
    ).fetchall()
    return CacheStats(
        entries=row[0],
        hits=row[1],
        bytes=row[2],
        oldest=row[3],
        newest=row[4],
        expired=row[5],
        by_model={model: count for model, count in by_model},
    )


def clear_cache(store: Store) -> int:
    """Delete every entry; returns how many there were. Flushes (blocks for one commit)."""
    return _delete_where(store, "1", ())


def prune_cache(
    store: Store,
    *,
    older_than_s: float | None = None,
    expired_only: bool = False,
    now: float | None = None,
) -> int:
    """Delete entries past their ``expires_at``, and, with ``older_than_s``, entries created
    more than that many seconds ago; returns how many. Flushes (blocks for one commit).

    Expired entries are always deleted: they can never be served again. ``expired_only``
    says explicitly that only those go, so it cannot be combined with ``older_than_s``.
    Space is reclaimed as the module docstring says: ``incremental_vacuum`` where
    ``auto_vacuum`` is incremental, otherwise the freed pages stay in the file for reuse.
    """
    if expired_only and older_than_s is not None:
        raise ValueError("prune_cache: expired_only and older_than_s exclude each other")
    if older_than_s is not None and older_than_s < 0:
        raise ValueError(f"prune_cache: older_than_s must not be negative, got {older_than_s}")
    now = time.time() if now is None else now
    if older_than_s is None:
        return _delete_where(store, _EXPIRED, (now,))
    return _delete_where(store, f"{_EXPIRED} OR created_at < ?", (now, now - older_than_s))


def _delete_where(store: Store, where: str, params: Sequence[Any]) -> int:
    count: int = store.db.conn.execute(
        f"SELECT count(*) FROM cache WHERE {where}", params
    ).fetchall()[0][0]
    if count:
        store.submit(Execute(f"DELETE FROM cache WHERE {where}", params))
        store.flush()
        _reclaim_space(store)
    return count


def _reclaim_space(store: Store) -> None:
    """Hand freed pages back to the file system if the database has incremental auto-vacuum.

    Not through the writer: Python's ``sqlite3`` steps a ``PRAGMA incremental_vacuum`` only
    once per ``execute``, which frees a single page; ``executescript`` runs it to the end.
    It runs after the delete is committed, as a transaction of its own on ``store.db``
    (waiting the busy timeout for the write lock like any writer).
    """
    mode = store.db.conn.execute("PRAGMA auto_vacuum").fetchall()[0][0]
    if mode == _AUTO_VACUUM_INCREMENTAL:
        store.db.conn.executescript("PRAGMA incremental_vacuum;")
