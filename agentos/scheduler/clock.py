"""The scheduler's sense of time: what time it is, and waiting until a given time.

Life-cycles never call ``time.time()`` or ``asyncio.sleep`` themselves; they ask a
:class:`Clock`. ``SystemClock`` is the real one. ``ManualClock`` stands still until a test
moves it, so a test of a daily cron schedule, of catch-up after a week of downtime or of
an overlap between two fires takes milliseconds, and is exactly reproducible.

Times are seconds since the epoch (floats), like every timestamp in the store. Cron
expressions are read in a time zone elsewhere (:mod:`agentos.scheduler.fires`); the
clock itself knows no zones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

MAX_NAP_S = 30.0
"""The longest single sleep of :class:`SystemClock`: it looks at the wall clock again at
least this often, so a machine that was suspended, or whose clock was set, wakes close to
the time it waits for instead of sleeping out a stale interval."""


class Clock(Protocol):
    """Wall time, and waiting for it."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when`` (at once when that is already so)."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        # asyncio sleeps on a monotonic clock, which stands still while the machine is
        # suspended; naps of at most MAX_NAP_S re-read the wall clock (see MAX_NAP_S).
        while (left := when - time.time()) > 0:
            await asyncio.sleep(min(left, MAX_NAP_S))


class ManualClock:
    """A clock that moves only when told to (tests).

    ``sleep_until`` parks the caller until :meth:`advance` or :meth:`set` moves the time
    to or past its wake-up time. :meth:`sleepers` and :meth:`wait_for_sleepers` let a
    test wait until the code under test has gone to sleep, so that "advance the clock,
    then look" never races the scheduler.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._order = itertools.count()
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (when, next(self._order), future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    def set(self, when: float) -> None:
        """Move the clock to ``when`` (never backwards) and wake whoever is due."""
        if when < self._now:
            raise ValueError(f"a clock does not go backwards ({when} < {self._now})")
        self._now = when
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on and wake whoever is due."""
        self.set(self._now + seconds)

    def sleepers(self) -> int:
        """Callers parked in ``sleep_until`` right now."""
        return sum(1 for _, _, future in self._waiters if not future.done())

    def next_wake(self) -> float | None:
        """The earliest time a parked caller waits for, or ``None``."""
        pending = [when for when, _, future in self._waiters if not future.done()]
        return min(pending) if pending else None

    async def wait_for_sleepers(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait (in real time, at most ``timeout`` s) until ``count`` callers are parked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sleepers() < count:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{self.sleepers()} callers parked on the clock, {count} expected"
                )
            await asyncio.sleep(0.002)
