"""Accounting as ``router.snapshot()`` shows it, against the loopback test engine: busy +
idle == uptime per engine at every instant, busy time is wall time with a request in
flight (never a sum of overlapping requests), requests are counted once per HTTP request
and jobs once per job, batching shows as jobs per request, and queued jobs show as
waiting + intake while the engine is blocked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.router import EngineHandle, Router
from agentos.testing.engine import CostModel, Faults, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder, agent_chat, templated

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01, jitter=0.5)


def chat(text: str) -> InferenceRequest:
    return InferenceRequest(kind="chat", messages=[{"role": "user", "content": text}])


def completion(text: str) -> InferenceRequest:
    return InferenceRequest(kind="completions", prompt=f"{text} ANSWER: {text}")


def check_time_adds_up(snapshot: dict[str, Any]) -> None:
    for engine in snapshot["engines"]:
        assert abs(engine["busy_s"] + engine["idle_s"] - engine["uptime_s"]) <= 1e-3, engine
        assert 0.0 <= engine["busy_s"] <= engine["uptime_s"] + 1e-3
        assert engine["idle_s"] >= -1e-3


async def sample_snapshots(router: Router, into: list[dict[str, Any]]) -> None:
    while True:
        into.append(router.snapshot())
        await asyncio.sleep(0.005)


async def test_busy_plus_idle_is_uptime_and_overlapping_requests_count_once(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=4)
        engine.cost = CostModel(slots=4, per_request_ms=200)
        snapshots: list[dict[str, Any]] = []
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            sampler = asyncio.create_task(sample_snapshots(router, snapshots))
            await asyncio.gather(*(router.submit(chat(f"c{i}")) for i in range(4)))
            after_work = router.snapshot()
            await asyncio.sleep(0.1)
            later = router.snapshot()
            sampler.cancel()
    assert any(s["engines"][0]["in_flight"] == 4 for s in snapshots)
    assert any(s["engines"][0]["state"] == "busy - 4" for s in snapshots)
    for snapshot in [*snapshots, after_work, later]:
        check_time_adds_up(snapshot)
    busy = after_work["engines"][0]["busy_s"]
    durations = [c.latency_ms / 1000 for c in recorder.calls]
    assert len(durations) == 4
    assert busy >= max(durations) - 0.005
    assert busy < 0.5 * sum(durations), "four requests at once: busy once, not four times"
    assert later["engines"][0]["busy_s"] == busy, "no request in flight: busy time stands"
    assert later["engines"][0]["state"] == "idle"
    assert later["engines"][0]["idle_s"] >= after_work["engines"][0]["idle_s"] + 0.1 - 1e-3


async def test_requests_count_once_per_http_request_and_jobs_once_per_job(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as first, LoopbackEngine() as second:
        a = await connect(first, name="a", max_requests=2)
        b = await connect(second, name="b", max_requests=2)
        first.faults = Faults(fail_first=3, error_status=500)
        async with asyncio.timeout(10), Router([a, b]) as router:
            await asyncio.gather(
                *(
                    router.submit(chat(f"x{i}"), process="agent-x", retry=FAST_RETRY)
                    for i in range(12)
                ),
                *(
                    router.submit(chat(f"y{i}"), process="agent-y", retry=FAST_RETRY)
                    for i in range(8)
                ),
            )
            snapshot = router.snapshot()
    check_time_adds_up(snapshot)
    engines = {e["name"]: e for e in snapshot["engines"]}
    assert engines["a"]["requests"] == first.stats.requests
    assert engines["b"]["requests"] == second.stats.requests
    assert snapshot["requests"] == first.stats.requests + second.stats.requests == 23
    assert engines["a"]["failed_requests"] == 3 and engines["b"]["failed_requests"] == 0
    assert engines["a"]["jobs"] + engines["b"]["jobs"] == 20
    assert engines["a"]["jobs"] == first.stats.by_status.get(200, 0)
    assert engines["b"]["jobs"] == second.stats.by_status[200]
    assert snapshot["jobs_done"] == 20 and snapshot["jobs_failed"] == 0
    processes = {p["name"]: p for p in snapshot["processes"]}
    assert processes["agent-x"]["jobs"] == 12 and processes["agent-y"]["jobs"] == 8
    assert sum(p["requests"] for p in processes.values()) == 23
    assert all(p["queued"] == 0 and p["failed_jobs"] == 0 for p in processes.values())
    assert engines["a"]["wasted_s"] > 0 and engines["b"]["wasted_s"] == 0


async def test_jobs_per_request_shows_the_batching(connect: Connect) -> None:
    """Forty attempts of an agent (chat jobs, batched as templated prompts)."""
    async with LoopbackEngine() as engine:
        handle = await templated(
            await connect(engine, max_requests=2), max_batch_size=8, batch_window_s=0.02
        )
        engine.cost = CostModel(slots=4, per_request_ms=60)
        async with asyncio.timeout(10), Router([handle]) as router:
            answers = await asyncio.gather(
                *(
                    router.submit(agent_chat(f"j{i} ANSWER: j{i}", i), process="agent")
                    for i in range(40)
                )
            )
            snapshot = router.snapshot()
    assert [a.text for a in answers] == [f"j{i}" for i in range(40)]
    assert {path for path, _ in engine.stats.recorded} == {"/v1/completions"}
    assert snapshot["processes"][0]["jobs"] == 40 and snapshot["processes"][0]["requests"] == 5
    check_time_adds_up(snapshot)
    assert snapshot["requests"] == engine.stats.requests == 5
    assert snapshot["jobs_per_request"] == 8.0
    assert snapshot["engines"][0]["jobs"] == 40 and snapshot["jobs_done"] == 40
    assert snapshot["engines"][0]["max_batch_size"] == 8
    # planning is measured between awaits only: a small part of the ~0.2 s of engine time
    assert 0.0 < snapshot["planning_s"] < 0.25 * snapshot["uptime_s"]


async def test_queued_jobs_show_as_waiting_plus_intake_while_the_engine_is_blocked(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle: EngineHandle = await connect(engine, max_requests=1)
        engine.cost = CostModel(slots=4, per_request_ms=400)
        async with asyncio.timeout(10), Router([handle]) as router:
            blocker = asyncio.create_task(router.submit(chat("blocker"), process="p"))
            while engine.stats.requests == 0:
                await asyncio.sleep(0.002)
            engine.cost = CostModel(slots=4, per_request_ms=1)
            tasks = [
                asyncio.create_task(router.submit(chat(f"q{i}"), process="p", priority=priority))
                for i, priority in enumerate(["user", "background", "kernel"] * 4)
            ]
            await asyncio.sleep(0)  # the submits ran; the dispatcher has not yet
            unsorted = router.snapshot()
            await asyncio.sleep(0.05)
            blocked = router.snapshot()
            assert not blocker.done()
            await asyncio.gather(blocker, *tasks)
            drained = router.snapshot()
    assert (unsorted["waiting"], unsorted["intake"]) == (0, 12), "submit only appends"
    assert (blocked["waiting"], blocked["intake"]) == (12, 0), "then they are prioritized"
    assert blocked["engines"][0]["state"] == "busy - 1"
    assert blocked["processes"][0]["queued"] == 13  # twelve queued, the blocker in flight
    assert blocked["jobs_done"] == 0
    assert drained["waiting"] == drained["intake"] == drained["retrying"] == 0
    assert drained["processes"][0]["queued"] == 0 and drained["jobs_done"] == 13
    check_time_adds_up(blocked)
    check_time_adds_up(drained)
