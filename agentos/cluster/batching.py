"""Many small calls to one actor as few Ray calls: sent together, answered in batches
through a long poll.

An actor call costs ~0.3–1 ms of CPU on this machine (docs/cluster.md §1), more than a
run's own work, and the cluster path makes several per run (a model submit per job, the
run's dispatch). :class:`CallBatcher` (the caller's side) sends a call at once when no
send of its is in flight, else with every call made until that send is acknowledged, as
**one** actor call (``send(caller, items)``): batches grow with the load, and a lone call
waits for nothing. The actor starts each item as its own coroutine in an
:class:`Answers` and returns at once, and the caller keeps **one** long poll
(``take(caller, timeout_s)``) that returns every answer ready so far. So answers do not
wait for each other (a job held up by its retries delays only its own run), and the Ray
calls per item fall with the load: measured with ``benchmarks/ray_probe/coalesce.py``,
0.04 ms of CPU per item instead of 1.1 ms.

Errors: an item's exception is its own caller's (pickled as it is: the router's
``AgentosError`` subclasses, for one); a failed ``send`` or ``take`` (the actor died)
fails every call waiting on it with that Ray error, as a plain actor call would.

Each caller is named (a fresh id per batcher), so one actor serves many workers; the
answers of a caller that died are kept until the actor ends (at most what it had in
flight).

:class:`SharedFlush` is the same idea for a worker's record flushes (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Reply = tuple[int, bool, Any]
"""(item number, ok, result or exception)."""

TAKE_TIMEOUT_S = 5.0
"""How long one long poll waits for an answer before asking again."""


@dataclass
class _Box:
    ready: list[Reply] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    pending: int = 0


class Answers:
    """The actor's side: items run as coroutines, their answers kept per caller."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, caller: str, number: int, work: Awaitable[Any]) -> None:
        """Run ``work`` (item ``number`` of ``caller``); its answer goes to the box."""
        box = self._boxes.setdefault(caller, _Box())
        box.pending += 1
        task = asyncio.ensure_future(self._answer(box, number, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, box: _Box, number: int, work: Awaitable[Any]) -> None:
        try:
            answer: Reply = (number, True, await work)
        except Exception as exc:  # the caller's to raise, as a plain call would
            answer = (number, False, exc)
        except asyncio.CancelledError:  # the actor is stopping
            answer = (number, False, RuntimeError("the actor stopped before answering"))
        box.pending -= 1
        box.ready.append(answer)
        box.arrived.set()

    async def take(self, caller: str, timeout_s: float) -> list[Reply]:
        """Every answer of ``caller`` ready now, waiting up to ``timeout_s`` for one."""
        box = self._boxes.setdefault(caller, _Box())
        if not box.ready:
            box.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.arrived.wait(), timeout_s)
            # answers resolved together (one engine batch) land in the next few ticks
            await asyncio.sleep(0)
        ready, box.ready = box.ready, []
        if not ready and not box.pending:
            self._boxes.pop(caller, None)
        return ready

    async def aclose(self) -> None:
        """Cancel the items still running (each answers with an error)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CallBatcher:
    """The caller's side: ``await batcher.call(item)`` → the actor's answer for ``item``.

    One send in flight at a time: calls made while one goes wait for its acknowledgement
    and go together as the next. (Coalescing per event-loop tick alone barely batches:
    the lane's dispatches and a worker's model calls come one or two per tick, each
    after awaits of its own.)

    ``send(caller, [(number, item), ...])`` and ``take(caller, timeout_s)`` start the
    actor's two methods and return their ``ObjectRef`` (awaitable). Bound to the event
    loop it is first used in; a call from another loop starts afresh (a Ray task's
    ``asyncio.run`` per run).
    """

    def __init__(
        self,
        send: Callable[[str, list[tuple[int, Any]]], Any],
        take: Callable[[str, float], Any],
    ) -> None:
        self._send = send
        self._take = take
        self.caller = uuid.uuid4().hex
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[int, Any]] = []
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = False
        self.sends = 0
        self.takes = 0

    async def call(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._outbox, self._waiting, self._poller = loop, [], {}, None
            self._sending = False
        number = next(self._numbers)
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[number] = future
        if not self._outbox and not self._sending:
            loop.call_soon(self._flush)
        self._outbox.append((number, item))
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())
        try:
            return await future
        finally:
            self._waiting.pop(number, None)

    def _flush(self) -> None:
        items, self._outbox = self._outbox, []
        if not items:
            return
        self._sending = True
        self.sends += 1
        task = asyncio.ensure_future(self._sent(self._send(self.caller, items), items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sent(self, ref: Any, items: list[tuple[int, Any]]) -> None:
        try:
            await ref
        except Exception as exc:  # the actor is gone: none of these will be answered
            for number, _ in items:
                self._settle(number, False, exc)
        finally:
            self._sending = False
            self._flush()  # what came while this send went

    async def _poll(self) -> None:
        while self._waiting:
            self.takes += 1
            try:
                answers = await self._take(self.caller, TAKE_TIMEOUT_S)
            except Exception as exc:
                for number in list(self._waiting):
                    self._settle(number, False, exc)
                return
            for number, ok, value in answers:
                self._settle(number, ok, value)

    def _settle(self, number: int, ok: bool, value: Any) -> None:
        future = self._waiting.pop(number, None)
        if future is None or future.done():
            return  # its caller stopped waiting (a cancelled run)
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SharedFlush:
    """Group commit: ``await shared()`` returns once everything submitted before the call
    is committed, and the callers waiting at once share one ``flush()``.

    One flush is in flight at a time; callers that come while it goes share the next,
    which starts when it ends. A worker's runs each end with a flush (their records
    committed before the driver acts on the outcome); one actor call and one commit per
    run cost more than the rest of the run's way there.
    """

    def __init__(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush
        self._current: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self.flushes = 0

    async def __call__(self) -> None:
        if self._next is None:
            self._next = asyncio.ensure_future(self._flush_after(self._current))
        await asyncio.shield(self._next)

    async def _flush_after(self, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own callers'
        else:
            await asyncio.sleep(0)  # runs that end in the same tick join
        me = self._next
        self._current, self._next = me, None
        self.flushes += 1
        try:
            await self._flush()
        finally:
            if self._current is me:
                self._current = None
