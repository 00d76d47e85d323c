"""Failover against the loopback test engine: no job is lost or done twice under injected
faults, a failed batch's jobs are retried one by one (on another engine when one serves
them), an engine that keeps failing is cooled down and probed, and jobs wait for an engine
up to their deadline.

Every prompt carries ``ANSWER: <job id>``, so a job that receives another job's answer is
caught. "Done once" is checked on the call records: a done job has exactly one successful
record, a failed job none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from agentos.errors import EngineConnectionError, EngineError, EngineStatusError, NoEngineError
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.testing.engine import CostModel, Faults, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01, jitter=0.5)
ONE_TRY = RetryPolicy(max_attempts=1, backoff_initial=0.001, backoff_max=0.01)


def batching(
    handle: EngineHandle, *, max_batch_size: int = 8, max_requests: int = 2
) -> EngineHandle:
    assert handle.info.prompt_batching
    return dataclasses.replace(
        handle,
        prompt_batching=True,
        max_batch_size=max_batch_size,
        batch_window_s=0.02,
        max_requests=max_requests,
    )


def completion(job_id: str) -> InferenceRequest:
    return InferenceRequest(kind="completions", prompt=f"job {job_id} ANSWER: {job_id}")


def chat(job_id: str) -> InferenceRequest:
    content = f"job {job_id} ANSWER: {job_id}"
    return InferenceRequest(kind="chat", messages=[{"role": "user", "content": content}])


def count_requests(recorder: ListRecorder) -> int:
    """HTTP requests behind the records: a batch's jobs share a batch id."""
    batches = {c.batch_id for c in recorder.calls if c.batch_id is not None}
    return len(batches) + sum(1 for c in recorder.calls if c.batch_id is None)


def check_every_job_ended_once(
    router: Router, recorder: ListRecorder, ids: list[str], outcomes: list[Any]
) -> tuple[list[str], list[str]]:
    """The invariants of failover; returns the ids of the done and of the failed jobs."""
    assert len(outcomes) == len(ids)
    done = [i for i, o in zip(ids, outcomes, strict=True) if isinstance(o, Completion)]
    failed = [i for i, o in zip(ids, outcomes, strict=True) if not isinstance(o, Completion)]
    for job_id, outcome in zip(ids, outcomes, strict=True):
        records = recorder.for_job(job_id)
        ok = [c for c in records if c.status == "ok"]
        if isinstance(outcome, Completion):
            assert outcome.text == job_id, "a job got another job's answer"
            assert len(ok) == 1 and ok[0].id == outcome.call_id, f"{job_id} done {len(ok)} times"
        else:
            assert isinstance(outcome, EngineError) and str(outcome), outcome
            assert not ok and records and records[-1].status == "error"
            assert records[-1].error == str(outcome)
    assert router.jobs_done == len(done) and router.jobs_failed == len(failed)
    assert len(done) + len(failed) == len(ids)
    engines = router.snapshot()["engines"]
    assert sum(e["jobs"] for e in engines) == len(done)
    assert sum(e["failed_jobs"] for e in engines) == len(failed)
    assert all(e["in_flight"] == 0 for e in engines)
    assert sum(e["requests"] for e in engines) == count_requests(recorder), "counted once"
    return done, failed


def check_failed_batches_retried_solo(recorder: ListRecorder) -> int:
    """Every job of a failed batch went on in requests of its own; returns how many jobs
    were in failed batches."""
    hit = 0
    for job_id in {c.job_id for c in recorder.calls}:
        records = recorder.for_job(job_id)
        failed_batch = [
            n for n, c in enumerate(records) if c.status == "error" and c.batch_size > 1
        ]
        if failed_batch:
            hit += 1
            assert all(c.batch_size == 1 for c in records[failed_batch[0] + 1 :]), records
    return hit


FAULTS = {
    "error_500": Faults(seed=1, error_rate=0.35, error_status=500),
    "hang": Faults(seed=1, hang_rate=0.35),
    "drop": Faults(seed=1, drop_rate=0.35),
    "malformed": Faults(seed=1, malformed_rate=0.35),
}
"""random.Random(1) draws 0.134 first: the first request, a full batch, always fails."""


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_no_job_is_lost_or_done_twice_under_faults(
    connect: Connect, recorder: ListRecorder, fault: str
) -> None:
    async with LoopbackEngine(cost=CostModel(slots=4, per_request_ms=5)) as engine:
        timeout = 0.2 if fault == "hang" else 2.0
        handle = batching(await connect(engine, timeout=timeout), max_requests=4)
        settings = RouterSettings(cooldown_s=0.05, failure_threshold=3)
        ids = [f"j{i:02d}" for i in range(24)]
        engine.faults = FAULTS[fault]
        async with asyncio.timeout(10), Router([handle], recorder, settings=settings) as router:
            outcomes = await asyncio.gather(
                *(router.submit(completion(i), job_id=i, retry=FAST_RETRY) for i in ids),
                return_exceptions=True,
            )
    done, _failed = check_every_job_ended_once(router, recorder, ids, outcomes)
    assert done, "jobs get through a 35 % fault rate"
    assert sum(engine.stats.errors_injected.values()) >= 1
    assert check_failed_batches_retried_solo(recorder) >= 8
    # a request can die before the engine reads it, never the other way round
    assert router.snapshot()["engines"][0]["requests"] >= engine.stats.requests


async def test_jobs_of_a_batch_that_keeps_failing_each_fail_once_after_bounded_retries(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_requests=4)
        engine.faults = Faults(error_rate=1.0, error_status=500)
        settings = RouterSettings(failure_threshold=1000, failover_attempts=3)
        ids = [f"j{i}" for i in range(8)]
        async with asyncio.timeout(10), Router([handle], recorder, settings=settings) as router:
            outcomes = await asyncio.gather(
                *(router.submit(completion(i), job_id=i, retry=ONE_TRY) for i in ids),
                return_exceptions=True,
            )
    _, failed = check_every_job_ended_once(router, recorder, ids, outcomes)
    assert failed == ids
    assert all(isinstance(o, EngineStatusError) and o.status == 500 for o in outcomes)
    # one batch, then each job alone until it has had failover_attempts tries
    assert engine.stats.requests == 1 + 8 * 2
    assert all([c.batch_size for c in recorder.for_job(i)] == [8, 1, 1] for i in ids)
    assert check_failed_batches_retried_solo(recorder) == 8


async def test_an_engine_dying_in_the_middle_of_a_batch_loses_no_job(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine, timeout=2.0))
        engine.cost = CostModel(slots=4, per_request_ms=300)
        settings = RouterSettings(cooldown_s=0.05, failure_threshold=3)
        retry = RetryPolicy(max_attempts=5, backoff_initial=0.05, backoff_max=0.2)
        ids = [f"j{i:02d}" for i in range(16)]
        async with asyncio.timeout(10), Router([handle], recorder, settings=settings) as router:
            tasks = [
                asyncio.create_task(router.submit(completion(i), job_id=i, retry=retry))
                for i in ids
            ]
            while engine.stats.in_flight < 2:  # both batches are being processed
                await asyncio.sleep(0.005)
            engine.kill()
            await asyncio.sleep(0.1)
            engine.cost = CostModel(slots=4, per_request_ms=5)
            await engine.start()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    done, failed = check_every_job_ended_once(router, recorder, ids, outcomes)
    assert sorted(done) == ids, failed
    killed = [c for c in recorder.calls if c.status == "error" and c.batch_size == 8]
    assert len(killed) == 16, "both batches died with the engine"
    assert all(c.error_class == "EngineConnectionError/transient" for c in killed)
    assert check_failed_batches_retried_solo(recorder) == 16


async def test_a_batch_refused_with_400_is_retried_one_by_one(
    connect: Connect, recorder: ListRecorder
) -> None:
    """A 400 for a batch may be the fault of one prompt (too long, too many): each job is
    tried alone once and gets its own verdict, instead of the whole batch failing."""
    async with LoopbackEngine(cost=CostModel(max_batch=4)) as engine:  # refuses more than 4
        handle = batching(await connect(engine), max_batch_size=8)
        ids = [f"j{i}" for i in range(8)]
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            outcomes = await asyncio.gather(
                *(router.submit(completion(i), job_id=i, retry=FAST_RETRY) for i in ids),
                return_exceptions=True,
            )
    done, _ = check_every_job_ended_once(router, recorder, ids, outcomes)
    assert done == ids
    assert engine.stats.by_status == {400: 1, 200: 8}
    assert check_failed_batches_retried_solo(recorder) == 8


async def test_a_failed_batch_is_retried_on_the_other_engine(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as bad_engine, LoopbackEngine() as good_engine:
        bad = batching(await connect(bad_engine, name="bad"), max_requests=4)
        good = batching(await connect(good_engine, name="good"), max_requests=8)
        bad_engine.faults = Faults(error_rate=1.0, error_status=500)
        ids = [f"j{i:02d}" for i in range(16)]
        async with asyncio.timeout(10), Router([bad, good], recorder) as router:
            outcomes = await asyncio.gather(
                *(router.submit(completion(i), job_id=i, retry=FAST_RETRY) for i in ids),
                return_exceptions=True,
            )
    done, _ = check_every_job_ended_once(router, recorder, ids, outcomes)
    assert done == ids
    assert bad_engine.stats.requests == 1, "only the first batch went to the failing engine"
    retried = {c.job_id for c in recorder.calls if c.status == "error"}
    assert len(retried) == 8
    for job_id in retried:
        *_, last = recorder.for_job(job_id)
        assert last.engine == "good" and last.batch_size == 1
    assert sum(1 for body in good_engine.stats.recorded if isinstance(body[1]["prompt"], str)) == 8


async def wait_for_state(handle: EngineHandle, state: str) -> None:
    while handle.health.state != state:
        await asyncio.sleep(0.005)


async def test_an_engine_that_keeps_failing_is_cooled_down_and_probed(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as flaky_engine, LoopbackEngine() as steady_engine:
        flaky = await connect(flaky_engine, name="flaky", max_requests=2)
        steady = await connect(steady_engine, name="steady", max_requests=2)
        flaky_engine.faults = Faults(error_rate=1.0, error_status=500)
        settings = RouterSettings(failure_threshold=2, cooldown_s=0.7)
        async with asyncio.timeout(10), Router([flaky, steady], settings=settings) as router:
            for i in range(2):
                with pytest.raises(EngineStatusError):
                    await router.submit(chat(f"doomed{i}"), engine="flaky", retry=ONE_TRY)
            assert flaky.health.state == "open"
            opened = time.monotonic()
            before = flaky_engine.stats.requests
            answers = await asyncio.gather(*(router.submit(chat(f"a{i}")) for i in range(10)))
            assert time.monotonic() - opened < 0.7, "still inside the cooldown"
            assert {a.engine for a in answers} == {"steady"}
            assert flaky_engine.stats.requests == before, "no traffic while open"
            assert router.snapshot()["engines"][0]["circuit"] == "open"

            flaky_engine.faults = Faults()
            await wait_for_state(flaky, "closed")
            assert time.monotonic() - opened >= 0.7
            assert flaky_engine.stats.by_path.get("/v1/models", 0) >= 1, "probed"
            answers = await asyncio.gather(*(router.submit(chat(f"b{i}")) for i in range(10)))
    assert {a.engine for a in answers} == {"flaky", "steady"}, "traffic is back"
    assert [a.text for a in answers] == [f"b{i}" for i in range(10)]


async def test_jobs_wait_while_every_engine_is_cooling_down_then_succeed(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=2)
        engine.faults = Faults(error_rate=1.0, error_status=500)
        settings = RouterSettings(failure_threshold=2, cooldown_s=0.3)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            for i in range(2):
                with pytest.raises(EngineStatusError):
                    await router.submit(chat(f"doomed{i}"), retry=ONE_TRY)
            assert handle.health.state == "open"
            opened = time.monotonic()
            requests_before = engine.stats.requests
            waiting = [asyncio.create_task(router.submit(chat(f"w{i}"))) for i in range(3)]
            await asyncio.sleep(0.1)
            snapshot = router.snapshot()
            assert snapshot["waiting"] + snapshot["intake"] == 3
            assert engine.stats.requests == requests_before
            engine.faults = Faults()  # recovers; the probe after the cooldown finds out
            answers = await asyncio.gather(*waiting)
            waited = time.monotonic() - opened
    assert [a.text for a in answers] == ["w0", "w1", "w2"]
    assert waited >= 0.3
    assert router.jobs_done == 3 and router.jobs_failed == 2


async def test_jobs_fail_with_no_engine_error_after_their_deadline(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=2)
        settings = RouterSettings(failure_threshold=2, cooldown_s=0.1)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            engine.kill()  # probes fail too: the circuit stays open
            for i in range(2):
                with pytest.raises(EngineConnectionError):
                    await router.submit(chat(f"doomed{i}"), retry=ONE_TRY)
            assert handle.health.state == "open"
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(router.submit(chat(f"late{i}"), deadline_s=0.3) for i in range(3)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            while handle.health.openings < 2:  # the probe fails: open again, longer
                await asyncio.sleep(0.01)
            assert handle.health.state == "open"
    assert all(isinstance(o, NoEngineError) for o in outcomes), outcomes
    assert "loop open" in str(outcomes[0])
    assert 0.3 <= elapsed < 2.0
    assert router.jobs_failed == 5 and router.jobs_done == 0
