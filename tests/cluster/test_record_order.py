"""The record queue admits each producer's batches in the order the producer numbered them,
whatever order Ray starts the ``put`` calls in (it does not keep one caller's order for an
async actor: ``benchmarks/ray_probe/async_order.py``).

No cluster: ``RecordQueue`` is the actor's class, driven here in one event loop with the
calls started deliberately out of order, so every case is deterministic. The 200-run
pipeline through ``agentos run --cluster`` is in ``test_cluster_cli.py``.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ray")

from agentos.cluster.records import RecordQueue
from agentos.errors import StoreError, StoreFailure
from agentos.store.writer import Update


def ops(tag: str, n: int = 1) -> list[Update]:
    return [Update("runs", tag, {"n": i}) for i in range(n)]


async def started(queue: RecordQueue, *puts: tuple[list[Update], str, int]) -> list[asyncio.Task]:
    """Start one ``put`` per (ops, producer, seq), in the order given, and let each run up
    to its first wait (as Ray starts a call on the actor's loop)."""
    tasks = []
    for batch, producer, seq in puts:
        tasks.append(asyncio.create_task(queue.put(batch, False, producer, seq)))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    return tasks


def taken_tags(batches: list[tuple[int, list[Update]]]) -> list[str]:
    return [str(batch[0].pk) for _, batch in batches]


async def test_a_producers_batches_started_in_reverse_are_admitted_in_seq_order() -> None:
    queue = RecordQueue()
    tasks = await started(queue, *[(ops(f"p{seq}"), "p", seq) for seq in (3, 2, 1, 0)])
    numbers = await asyncio.gather(*tasks)

    batches = await queue.take(0)
    assert taken_tags(batches) == ["p0", "p1", "p2", "p3"]
    assert [n for n, _ in batches] == [1, 2, 3, 4]
    assert numbers == [4, 3, 2, 1]  # each call got its batch's number in arrival order
    assert queue.stats()["held"] == 3


async def test_an_early_batch_waits_only_for_its_own_producer() -> None:
    queue = RecordQueue()
    early = await started(queue, (ops("a1"), "a", 1))
    others = await started(queue, (ops("b0"), "b", 0), (ops("b1"), "b", 1))
    await asyncio.gather(*others)
    assert not early[0].done()
    assert taken_tags(await queue.take(0)) == ["b0", "b1"]

    await asyncio.gather(*await started(queue, (ops("a0"), "a", 0)), *early)
    assert taken_tags(await queue.take(0)) == ["a0", "a1"]


async def test_held_batches_are_not_counted_as_queued_and_room_is_kept_in_order() -> None:
    queue = RecordQueue(max_ops=4)
    first = await started(queue, (ops("x0", 3), "x", 0))
    await asyncio.gather(*first)
    # y's second batch arrives first and is held; x's next batch waits for room
    held = await started(queue, (ops("y1", 2), "y", 1))
    waiting = await started(queue, (ops("x1", 3), "x", 1))
    assert queue.stats()["outstanding"] == 3  # the held batch is not counted
    assert not held[0].done() and not waiting[0].done()

    await queue.take(0)
    await queue.committed(1)
    await asyncio.gather(*waiting)
    assert queue.stats()["outstanding"] == 3
    # y0 arrives and fits (3 + 1 ops); y1 is released behind it and waits for room
    y0 = await started(queue, (ops("y0", 1), "y", 0))
    await asyncio.gather(*y0)
    assert not held[0].done()
    assert queue.stats()["outstanding"] == 4
    batches = await queue.take(0)
    assert taken_tags(batches) == ["x1", "y0"]
    await queue.committed(batches[-1][0])
    await asyncio.gather(*held)
    assert taken_tags(await queue.take(0)) == ["y1"]
    assert queue.stats()["outstanding"] == 2
    assert queue.stats()["max_outstanding"] <= 4


async def test_a_flush_behind_held_batches_returns_after_they_are_committed() -> None:
    queue = RecordQueue()
    held = await started(queue, (ops("z1"), "z", 1))
    flush = asyncio.create_task(queue.put([], True, "z", 2))
    await asyncio.sleep(0)
    await started(queue, (ops("z0"), "z", 0))
    batches = await queue.take(0)
    assert taken_tags([b for b in batches if b[1]]) == ["z0", "z1"]
    assert not flush.done()
    await queue.committed(batches[-1][0])
    await asyncio.gather(flush, *held)


async def test_a_failed_queue_releases_held_batches_with_its_failure() -> None:
    queue = RecordQueue()
    held = await started(queue, (ops("f2"), "f", 2))
    await queue.fail("disk full")
    with pytest.raises(StoreFailure, match="disk full"):
        await held[0]


async def test_a_batch_number_used_twice_is_refused() -> None:
    queue = RecordQueue()
    await queue.put(ops("d0"), False, "d", 0)
    with pytest.raises(StoreError, match="batch 0 of record producer d came twice"):
        await queue.put(ops("d0"), False, "d", 0)
