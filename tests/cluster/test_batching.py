"""Calls coalesced per event-loop tick, answered in batches (``agentos.cluster.batching``).

The actor's side (``Answers``) and the caller's (``CallBatcher``) are the real classes;
only the wire between them is a direct call in the same event loop instead of a Ray
actor call, so these run without Ray (the path through a real actor is covered by the
cluster tests: every model call of a run on a worker goes through it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentos.cluster.batching import Answers, CallBatcher, SharedFlush


class Wire:
    """An actor holding ``Answers`` whose items are ``handle(item)``; counts its calls."""

    def __init__(self, handle: Any) -> None:
        self.answers = Answers()
        self.handle = handle
        self.sent: list[int] = []
        self.fail_send: Exception | None = None

    async def send(self, caller: str, items: list[tuple[int, Any]]) -> None:
        await asyncio.sleep(0)
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append(len(items))
        for number, item in items:
            self.answers.start(caller, number, self.handle(item))

    async def take(self, caller: str, timeout_s: float) -> list[tuple[int, bool, Any]]:
        return await self.answers.take(caller, timeout_s)

    def batcher(self) -> CallBatcher:
        return CallBatcher(self.send, self.take)


async def double(item: int) -> int:
    await asyncio.sleep(0.001)
    return item * 2


async def test_calls_of_one_tick_go_as_one_send_and_each_gets_its_answer() -> None:
    wire = Wire(double)
    batcher = wire.batcher()
    answers = await asyncio.gather(*(batcher.call(i) for i in range(50)))
    assert answers == [i * 2 for i in range(50)]
    assert wire.sent == [50]
    assert batcher.sends == 1
    assert batcher.takes < 50


async def test_calls_made_while_a_send_goes_wait_for_it_and_go_as_one() -> None:
    wire = Wire(double)
    acked = asyncio.Event()
    send = wire.send

    async def slow_send(caller: str, items: list[tuple[int, Any]]) -> None:
        await send(caller, items)
        await acked.wait()

    batcher = CallBatcher(slow_send, wire.take)
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.01)
    later = []
    for i in range(2, 8):  # one per tick, as a lane dispatches
        later.append(asyncio.ensure_future(batcher.call(i)))
        await asyncio.sleep(0)
    assert await asyncio.wait_for(first, 2) == 2  # answered while its send is unacknowledged
    assert wire.sent == [1]
    acked.set()
    assert await asyncio.wait_for(asyncio.gather(*later), 2) == [4, 6, 8, 10, 12, 14]
    assert wire.sent == [1, 6]


async def test_a_slow_item_does_not_hold_back_the_answers_of_its_batch() -> None:
    release = asyncio.Event()

    async def handle(item: str) -> str:
        if item == "slow":
            await release.wait()
        return item.upper()

    wire = Wire(handle)
    batcher = wire.batcher()
    slow = asyncio.ensure_future(batcher.call("slow"))
    fast = [asyncio.ensure_future(batcher.call(f"fast{i}")) for i in range(5)]
    assert await asyncio.wait_for(asyncio.gather(*fast), 2) == [f"FAST{i}" for i in range(5)]
    assert not slow.done()
    assert wire.sent == [6]
    release.set()
    assert await asyncio.wait_for(slow, 2) == "SLOW"


async def test_an_items_error_is_raised_to_its_own_caller_only() -> None:
    async def handle(item: int) -> int:
        if item == 3:
            raise ValueError("item 3 is bad")
        return item

    batcher = Wire(handle).batcher()
    results = await asyncio.gather(*(batcher.call(i) for i in range(6)), return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "item 3 is bad"


async def test_a_failed_send_fails_every_call_it_carried() -> None:
    wire = Wire(double)
    wire.fail_send = ConnectionError("actor died")
    batcher = wire.batcher()
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.call(i) for i in range(4)), return_exceptions=True), 2
    )
    assert all(isinstance(r, ConnectionError) for r in results), results


async def test_a_failed_take_fails_every_call_waiting() -> None:
    never = asyncio.Event()

    async def handle(item: int) -> int:
        await never.wait()
        return item

    wire = Wire(handle)

    async def take(caller: str, timeout_s: float) -> list[tuple[int, bool, Any]]:
        await asyncio.sleep(0.01)
        raise ConnectionError("actor died while polling")

    batcher = CallBatcher(wire.send, take)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.call(i) for i in range(3)), return_exceptions=True), 2
    )
    assert [type(r) for r in results] == [ConnectionError] * 3
    await wire.answers.aclose()


async def test_a_cancelled_call_leaves_the_others_answered_and_the_poll_ends() -> None:
    release = asyncio.Event()

    async def handle(item: int) -> int:
        await release.wait()
        return item

    wire = Wire(handle)
    batcher = wire.batcher()
    calls = [asyncio.ensure_future(batcher.call(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    calls[1].cancel()
    release.set()
    assert await asyncio.wait_for(asyncio.gather(calls[0], calls[2], calls[3]), 2) == [0, 2, 3]
    with pytest.raises(asyncio.CancelledError):
        await calls[1]
    poller = batcher._poller
    assert poller is not None
    await asyncio.wait_for(poller, 2)  # nothing left waiting: no poll outlives the calls


async def test_calls_from_a_second_event_loop_start_afresh() -> None:
    wire = Wire(double)
    batcher = wire.batcher()
    assert await batcher.call(1) == 2

    def in_another_loop() -> int:
        other = Wire(double)
        batcher._send, batcher._take = other.send, other.take  # that loop's actor side
        result: int = asyncio.run(batcher.call(5))
        return result

    assert await asyncio.to_thread(in_another_loop) == 10


async def test_flushes_asked_for_at_once_share_one_and_none_returns_early() -> None:
    committed: list[int] = []
    submitted: list[int] = []
    gate = asyncio.Event()

    async def flush() -> None:
        upto = len(submitted)
        await gate.wait()
        committed.append(upto)

    shared = SharedFlush(flush)

    async def run(i: int) -> int:
        submitted.append(i)
        await shared()
        assert committed and committed[-1] >= submitted.index(i) + 1, "returned before commit"
        return i

    first = [asyncio.ensure_future(run(i)) for i in range(10)]
    await asyncio.sleep(0.01)  # the first flush is in flight, held at the gate
    later = [asyncio.ensure_future(run(i)) for i in range(10, 15)]
    await asyncio.sleep(0.01)
    assert shared.flushes == 1 and not any(t.done() for t in first + later)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*first, *later), 2) == list(range(15))
    assert shared.flushes == 2  # the 5 that came while the first was in flight shared one
    assert committed == [10, 15]


async def test_a_failed_flush_fails_its_callers_and_the_next_one_flushes_again() -> None:
    calls = 0

    async def flush() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("queue gone")

    shared = SharedFlush(flush)
    results = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    await shared()
    assert calls == 2
