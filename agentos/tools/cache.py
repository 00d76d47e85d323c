"""The tool cache: answers of read-only tools kept in the database for a while.

A tool opts in by setting :attr:`~agentos.tools.types.Tool.cache_ttl_s` (``web_fetch`` and
``web_search`` do, with the ``ttl`` of their config). :meth:`ToolRegistry.call
<agentos.tools.registry.ToolRegistry.call>` then looks every call of it up here before
running it, and keeps every successful answer here after:

- The key is a hash of the tool's name and its *normalised* arguments: the tool's
  :attr:`~agentos.tools.types.Tool.cache_key` (``web_fetch`` lower-cases the host and
  drops a URL's ``#fragment``, ``web_search`` folds spaces, and both add the settings
  that change the answer), written as JSON with sorted keys, so arguments that ask for
  the same thing share one row.
- A row is served until ``expires_at``; the first call after that runs the tool again
  and replaces the row. Failed calls are never kept, so a page that was down is fetched
  again at the next call.
- A call served from here runs nothing; it is recorded like every call, with
  ``tool_calls.cache_hit = 1`` and ``cache_hit``/``cached_at`` in its ``tool_call`` event.

Reads use ``store.db`` on the event loop's thread (where tools run); the write goes
through the store's writer and is awaited, so the next call (the next step of a plan)
finds it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentos.store.writer import Execute, Insert

if TYPE_CHECKING:
    from agentos.store import Store
    from agentos.tools.types import Tool


@dataclass(frozen=True)
class CachedAnswer:
    """A kept answer: the tool's output and when it was made."""

    output: Any
    created_at: float


def cache_key(tool: Tool, arguments: dict[str, Any]) -> str:
    """The row key of a call of ``tool`` with ``arguments`` (see the module docstring)."""
    normalised = tool.cache_key(arguments) if tool.cache_key is not None else arguments
    text = json.dumps(
        [tool.name, normalised], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def lookup(store: Store, key: str, *, now: float | None = None) -> CachedAnswer | None:
    """The answer kept under ``key`` that has not expired at ``now``, or None."""
    row = store.db.execute(
        "SELECT output, created_at FROM tool_cache WHERE key = ? AND expires_at > ?",
        [key, time.time() if now is None else now],
    ).fetchone()
    if row is None:
        return None
    return CachedAnswer(json.loads(row[0]), float(row[1]))


async def keep(store: Store, key: str, tool: Tool, arguments: dict[str, Any], output: Any) -> None:
    """Keep ``output`` under ``key`` for the tool's TTL (replacing an expired row)."""
    assert tool.cache_ttl_s is not None
    now = time.time()
    store.submit(
        Insert(
            "tool_cache",
            {
                "key": key,
                "tool": tool.name,
                "arguments": json.dumps(arguments, ensure_ascii=False),
                "output": json.dumps(output, ensure_ascii=False),
                "created_at": now,
                "expires_at": now + tool.cache_ttl_s,
            },
            replace=True,
        )
    )
    await store.aflush()


@dataclass(frozen=True)
class ToolCacheStats:
    """What the tool cache holds, per tool."""

    entries: int
    expired: int
    by_tool: dict[str, int]


def tool_cache_stats(store: Store, *, now: float | None = None) -> ToolCacheStats:
    """Rows of the tool cache, how many have expired, and rows per tool."""
    now = time.time() if now is None else now
    rows = store.db.execute(
        "SELECT tool, count(*), sum(expires_at <= ?) FROM tool_cache GROUP BY tool", [now]
    ).fetchall()
    return ToolCacheStats(
        entries=sum(r[1] for r in rows),
        expired=sum(r[2] or 0 for r in rows),
        by_tool={str(r[0]): int(r[1]) for r in rows},
    )


def prune_tool_cache(
    store: Store, *, older_than_s: float | None = None, now: float | None = None
) -> int:
    """Delete expired rows (which are never served again), and with ``older_than_s`` the
    rows made longer ago than that; returns how many. Flushes (blocks for one commit)."""
    now = time.time() if now is None else now
    if older_than_s is None:
        return _delete_where(store, "expires_at <= ?", (now,))
    return _delete_where(store, "expires_at <= ? OR created_at < ?", (now, now - older_than_s))


def clear_tool_cache(store: Store) -> int:
    """Delete every row; returns how many there were. Flushes (blocks for one commit)."""
    return _delete_where(store, "1", ())


def _delete_where(store: Store, where: str, params: tuple[float, ...]) -> int:
    count = int(
        store.db.execute(f"SELECT count(*) FROM tool_cache WHERE {where}", params).fetchone()[0]
    )
    if count:
        store.submit(Execute(f"DELETE FROM tool_cache WHERE {where}", params, ("tool_cache",)))
        store.flush()
    return count
