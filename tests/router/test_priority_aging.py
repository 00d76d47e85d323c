"""Priority admission against the loopback test engine: strict classes in front of a busy
engine, aging that lets an old background job overtake fresh user jobs, and background
work that finishes under sustained user load.

The engine has one slot for the router (``max_requests=1``); a blocker request holds it
while the jobs under test queue up, so the order in which the engine receives them is the
order the router chose.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentos.router.jobs import Completion, InferenceRequest
from agentos.router.router import Router, RouterSettings
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.router.conftest import Connect, agent_chat, templated, user_texts


def chat(text: str, group: int = 0) -> InferenceRequest:
    """A chat job. Jobs of different ``group`` differ in a sampling parameter, so they sit
    in different queue groups and the order between them is decided across groups."""
    return InferenceRequest(
        kind="chat",
        messages=[{"role": "user", "content": text}],
        params={"max_tokens": 64 + group},
    )


def received(engine: LoopbackEngine) -> list[list[str]]:
    """The texts of every request the engine received, in arrival order."""
    return [user_texts(path, body) for path, body in engine.stats.recorded]


async def block(router: Router, engine: LoopbackEngine, hold_ms: float) -> asyncio.Task[Completion]:
    """Occupy the router's one slot on ``engine`` for about ``hold_ms``; later requests
    are cheap."""
    engine.cost = CostModel(slots=4, per_request_ms=hold_ms)
    blocker = asyncio.create_task(router.submit(chat("blocker"), priority="system"))
    while engine.stats.requests == 0:
        await asyncio.sleep(0.002)
    engine.cost = CostModel(slots=4, per_request_ms=2)
    return blocker


async def queued(router: Router, n: int) -> None:
    while len(router.queue) < n:
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("groups", ["one group", "a group per job"])
async def test_a_busy_engine_serves_system_then_kernel_then_user_then_background(
    connect: Connect, groups: str
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=1)
        settings = RouterSettings(aging_s=1000.0)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            blocker = await block(router, engine, 400)
            arrivals = [
                ("user", "u1"), ("background", "b1"), ("system", "s1"), ("kernel", "k1"),
                ("background", "b2"), ("user", "u2"), ("kernel", "k2"), ("system", "s2"),
                ("user", "u3"), ("kernel", "k3"), ("background", "b3"), ("system", "s3"),
            ]  # fmt: skip
            tasks = [
                asyncio.create_task(
                    router.submit(chat(t, n if groups != "one group" else 0), priority=p)
                )
                for n, (p, t) in enumerate(arrivals)
            ]
            await queued(router, len(arrivals))
            assert not blocker.done()
            await asyncio.gather(blocker, *tasks)
    order = [texts[0] for texts in received(engine)]
    assert order == [
        "blocker",
        "s1",
        "s2",
        "s3",
        "k1",
        "k2",
        "k3",
        "u1",
        "u2",
        "u3",
        "b1",
        "b2",
        "b3",
    ]


async def test_inside_a_batch_group_higher_classes_fill_the_batches_first(
    connect: Connect,
) -> None:
    """Agents' chat jobs, batched as templated prompts: the best classes fill each batch."""
    async with LoopbackEngine() as engine:
        handle = await templated(
            await connect(engine, max_requests=1), max_batch_size=2, batch_window_s=0.0
        )
        settings = RouterSettings(aging_s=1000.0)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            blocker = await block(router, engine, 400)
            arrivals = [
                ("background", "b1"), ("user", "u1"), ("background", "b2"),
                ("system", "s1"), ("user", "u2"), ("system", "s2"),
            ]  # fmt: skip
            tasks = [
                asyncio.create_task(router.submit(agent_chat(t, k), priority=p))
                for k, (p, t) in enumerate(arrivals)
            ]
            await queued(router, len(arrivals))
            await asyncio.gather(blocker, *tasks)
    assert received(engine) == [["blocker"], ["s1", "s2"], ["u1", "u2"], ["b1", "b2"]]
    assert [path for path, _ in engine.stats.recorded][1:] == ["/v1/completions"] * 3


@pytest.mark.parametrize(
    ("aging_s", "bg_group", "first"),
    [(0.1, 0, "old-bg"), (0.1, 1, "old-bg"), (1000.0, 1, "fresh-user-0")],
)
async def test_an_old_background_job_overtakes_fresh_user_jobs(
    connect: Connect, aging_s: float, bg_group: int, first: str
) -> None:
    """With aging every 0.1 s, a background job that has waited a quarter second longer
    ranks above user jobs that arrived later (in its group or another); without aging it
    stays behind them."""
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=1)
        settings = RouterSettings(aging_s=aging_s)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            blocker = await block(router, engine, 400)
            old = asyncio.create_task(
                router.submit(chat("old-bg", bg_group), priority="background")
            )
            await asyncio.sleep(0.25)
            fresh = [
                asyncio.create_task(router.submit(chat(f"fresh-user-{i}"), priority="user"))
                for i in range(3)
            ]
            await queued(router, 4)
            assert not blocker.done()
            await asyncio.gather(blocker, old, *fresh)
    order = [texts[0] for texts in received(engine)]
    assert order[0] == "blocker" and order[1] == first
    assert sorted(order[1:]) == sorted(["old-bg", "fresh-user-0", "fresh-user-1", "fresh-user-2"])


@pytest.mark.parametrize(("aging_s", "finishes"), [(0.1, True), (1000.0, False)])
async def test_background_work_finishes_under_sustained_user_load(
    connect: Connect, aging_s: float, finishes: bool
) -> None:
    """Four user jobs are always waiting for the engine's one slot; with aging the
    background job still gets through while that load lasts, without aging it starves."""
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=1)
        engine.cost = CostModel(slots=4, per_request_ms=10)
        settings = RouterSettings(aging_s=aging_s)
        stop = asyncio.Event()

        async def user_load() -> None:
            while not stop.is_set():
                await router.submit(chat("user"), priority="user")

        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            load = [asyncio.create_task(user_load()) for _ in range(5)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            background = asyncio.create_task(
                router.submit(chat("bg", group=1), priority="background")
            )
            while not background.done() and time.monotonic() - started < 0.8:
                await asyncio.sleep(0.01)
            finished_under_load = background.done()
            waiting_users = router.snapshot()["waiting"]
            stop.set()
            await asyncio.gather(background, *load)
    assert finished_under_load is finishes
    assert waiting_users >= 3, "the user load was still queued when we looked"
    order = [texts[0] for texts in received(engine)]
    assert order.index("bg") >= 5, "it ranked below the user jobs until it had aged"
