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

from agentos.store.writer import Insert

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
