"""Which keys the ``cache`` table may hold, in memory: most misses never touch SQLite.

The router asks the response cache for every job, on the event loop, and a job whose
request was never answered before (every new sample of a sampled agent) used to cost one
primary-key lookup on ``store.db``: cheap alone, but a call that lets go of the GIL,
which the store's writer thread then holds for a while. :class:`CacheKeyIndex` is a Bloom
filter over the stored keys: "certainly not stored" needs no read; "maybe stored" is
looked up as before. It never says "not stored" for a key that is stored, except as
below, so it never turns a hit into a miss that matters.

- **Fixed memory.** ``BITS`` bits (1 MiB) whatever the size of the table; with more keys
  only the share of needless lookups grows (about 3 % at a million keys).
- **Filled as it goes.** Until the whole table has been read, every key may be stored.
  Each :meth:`CacheKeyIndex.may_hold` call while filling reads the next ``CHUNK`` keys
  by ``rowid`` first, so a short run on a large cache pays for a few chunks only, and a
  long one for one pass over the table.
- **Other processes.** Keys this process stores are added by :meth:`add`. Keys other
  processes store later are picked up by reading the rows past the last ``rowid`` seen,
  at most every ``REFRESH_S`` (one indexed query, usually empty): until then a request
  another process just answered costs an engine call here, never a wrong answer. When
  the table's highest ``rowid`` went down (``agentos cache clear``), the index starts
  over; keys deleted otherwise stay set, which costs a lookup, nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from agentos.store.cache_queries import key_rows_after
from agentos.store.db import Store

BITS_LOG2 = 23
BITS = 1 << BITS_LOG2
"""Bits of the filter (1 MiB)."""
_MASK = BITS - 1
HASHES = 3
"""Bits set per key, each from its own 23 bits of the (uniformly random) sha256 key."""
_HEX_DIGITS = (BITS_LOG2 * HASHES + 3) // 4
CHUNK = 512
"""Keys read per call while the index is being filled."""
REFRESH_S = 5.0
"""How often a filled index reads the keys stored since (by any process)."""


class CacheKeyIndex:
    """A Bloom filter over the keys of the store's ``cache`` table; see the module
    docstring. Used from one thread (the response cache's, the event loop's)."""

    def __init__(self, store: Store, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.filled = False
        """Every row up to :attr:`last_rowid` has been read."""
        self.last_rowid = 0
        self._bits = bytearray(BITS // 8)
        self._refreshed_at = 0.0

    def add(self, key: str) -> None:
        """Mark ``key`` (a sha256 hex digest) as stored."""
        bits = self._bits
        value = int(key[:_HEX_DIGITS], 16)
        for _ in range(HASHES):
            position = value & _MASK
            bits[position >> 3] |= 1 << (position & 7)
            value >>= BITS_LOG2

    def may_hold(self, key: str) -> bool:
        """False only when ``key`` is certainly not in the table (as of the last refresh)."""
        if not self.filled:
            self._read_more()
            if not self.filled:
                return True
        elif self.clock() - self._refreshed_at >= REFRESH_S:
            self._read_more()
        bits = self._bits
        value = int(key[:_HEX_DIGITS], 16)
        for _ in range(HASHES):
            position = value & _MASK
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            value >>= BITS_LOG2
        return True

    def _read_more(self) -> None:
        self._refreshed_at = self.clock()
        rows, highest = key_rows_after(self.store, self.last_rowid, CHUNK)
        if highest < self.last_rowid:
            # the table was cleared (rowids start over): what it holds now is read anew
            self._bits = bytearray(BITS // 8)
            self.last_rowid = 0
            self.filled = False
            rows, highest = key_rows_after(self.store, 0, CHUNK)
        for rowid, key in rows:
            # a key that is not a hex digest is never asked for: nothing to mark
            with contextlib.suppress(TypeError, ValueError):
                self.add(key)
            self.last_rowid = rowid
        # a full chunk: there may be more, read before the next answer
        self.filled = len(rows) < CHUNK
