"""Accounting: requests, jobs, tokens, busy and idle time, failures, per engine and per
process, and one call record per HTTP request. Runs against the loopback test engine."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from agentos.errors import EngineError, EngineStatusError
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.router.router import Router
from agentos.router.stats import EngineStats, ProcessStats
from agentos.testing.engine import CostModel, Faults, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.01)


def ask(text: str, model: str | None = None) -> InferenceRequest:
    return InferenceRequest(kind="chat", model=model, messages=[{"role": "user", "content": text}])


def test_busy_time_is_wall_time_with_work_in_flight() -> None:
    stats = EngineStats(name="e", endpoint="http://x", max_requests=4, max_batch_size=1)
    stats.started_at = 100.0
    for _ in range(4):
        stats.request_started(now=101.0)
    assert stats.state == "busy - 4"
    for _ in range(4):
        stats.request_finished(jobs=1, ok=True, duration_s=1.0, now=102.0)
    stats.request_started(now=105.0)
    assert stats.busy_s(now=105.5) == pytest.approx(1.5)  # an open busy stretch counts
    stats.request_finished(jobs=1, ok=False, duration_s=1.0, now=106.0)
    assert stats.state == "idle"
    assert stats.busy_s(now=110.0) == pytest.approx(2.0)
    assert stats.idle_s(now=110.0) == pytest.approx(8.0)
    assert stats.uptime(now=110.0) == pytest.approx(10.0)
    assert (stats.requests, stats.jobs, stats.failed_requests) == (5, 4, 1)
    assert stats.wasted_s == pytest.approx(1.0)


def test_snapshot_busy_plus_idle_is_uptime() -> None:
    stats = EngineStats(name="e", endpoint="http://x", max_requests=1, max_batch_size=1)
    stats.started_at = 0.0
    stats.request_started(now=0.123456)
    stats.request_finished(jobs=1, ok=True, duration_s=0.1, now=0.234561)
    for now in (0.345678, 0.99995, 1.000049, 7.123456789):
        shown = stats.snapshot(now=now)
        assert shown["busy_s"] + shown["idle_s"] == pytest.approx(shown["uptime_s"], abs=1e-6)


def test_process_average_wait_counts_finished_jobs() -> None:
    process = ProcessStats(name="agent", jobs=3, failed_jobs=1, wait_total_s=2.0, waited=4)
    assert process.avg_wait_s == 0.5
    assert ProcessStats(name="idle").avg_wait_s == 0.0
    process.prompt_tokens, process.completion_tokens = 5, 7
    assert process.snapshot()["tokens"] == 12


async def test_accounting_sums_after_a_mixed_run(connect: Connect, recorder: ListRecorder) -> None:
    async with (
        LoopbackEngine(cost=CostModel(slots=4, per_request_ms=3)) as first,
        LoopbackEngine(cost=CostModel(slots=4, per_request_ms=3)) as second,
    ):
        a = await connect(first, name="a", max_requests=3, models=["test-model", "ghost"])
        b = await connect(second, name="b", max_requests=2)
        first.faults = Faults(error_rate=0.2, malformed_rate=0.1, seed=3)
        second.faults = Faults(error_rate=0.15, error_status=503, drop_rate=0.1, seed=4)
        async with asyncio.timeout(20), Router([a, b], recorder) as router:
            good = [router.submit(ask(f"job {i}"), retry=FAST_RETRY) for i in range(40)]
            missing = [router.submit(ask("x", model="ghost"), engine="a") for _ in range(3)]
            outcomes = await asyncio.gather(*good, *missing, return_exceptions=True)
            shown = router.snapshot()

    answers = [o for o in outcomes if isinstance(o, Completion)]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(f, EngineError) for f in failures)
    assert sum(isinstance(f, EngineStatusError) and f.status == 404 for f in failures) == 3
    assert answers, "most jobs succeed"
    assert router.jobs_done == len(answers) and router.jobs_failed == len(failures)
    assert shown["jobs_done"] == len(answers) and shown["jobs_failed"] == len(failures)

    for handle, engine in ((a, first), (b, second)):
        stats = handle.stats
        calls = [c for c in recorder.calls if c.engine == handle.name]
        ok_calls = [c for c in calls if c.status == "ok"]
        assert stats.requests == len(calls) == engine.stats.requests
        assert stats.requests == len(ok_calls) + stats.failed_requests
        assert stats.jobs == len(ok_calls) == sum(x.engine == handle.name for x in answers)
        assert stats.prompt_tokens == sum(c.prompt_tokens for c in ok_calls)
        assert stats.completion_tokens == sum(c.completion_tokens for c in ok_calls)
        assert stats.prompt_tokens == sum(
            x.prompt_tokens for x in answers if x.engine == handle.name
        )
        assert stats.wasted_s == pytest.approx(
            sum(c.latency_ms for c in calls if c.status == "error") / 1000
        )
        assert stats.in_flight == 0
    assert a.stats.jobs + b.stats.jobs == len(answers)
    assert a.stats.failed_jobs + b.stats.failed_jobs == len(failures)
    assert shown["requests"] == len(recorder.calls)

    for engine_shown in shown["engines"]:
        busy, idle, uptime = (
            engine_shown["busy_s"],
            engine_shown["idle_s"],
            engine_shown["uptime_s"],
        )
        assert busy + idle == pytest.approx(uptime, abs=1e-6)
        assert 0 < busy <= uptime
        longest = max(c.latency_ms for c in recorder.calls if c.engine == engine_shown["name"])
        assert busy >= longest / 1000 - 1e-4


async def test_busy_time_is_not_a_sum_of_overlapping_requests(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine(cost=CostModel(slots=4)) as engine:
        handle = await connect(engine, max_requests=4)
        engine.cost = CostModel(slots=4, per_request_ms=200)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            await asyncio.gather(*(router.submit(ask(f"job {i}")) for i in range(4)))
    assert engine.stats.max_in_flight == 4
    request_time = sum(c.latency_ms for c in recorder.calls) / 1000
    busy = handle.stats.busy_s()
    assert request_time >= 0.8
    assert 0.2 <= busy < 0.5


async def test_process_stats_per_process_name(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, models=["test-model", "ghost"])
        engine.faults = Faults(fail_first=1)
        async with asyncio.timeout(10), Router([handle]) as router:
            writer = [
                router.submit(ask("one two three"), process="writer", retry=FAST_RETRY)
                for _ in range(3)
            ]
            reader = [
                router.submit(ask("four five"), process="reader", retry=FAST_RETRY)
                for _ in range(2)
            ]
            answers = await asyncio.gather(*writer, *reader)
            with pytest.raises(EngineStatusError):
                await router.submit(ask("x", model="ghost"), process="reader")
            shown = {p["name"]: p for p in router.snapshot()["processes"]}
    tokens = Counter[str]()
    for answer, name in zip(answers, ["writer"] * 3 + ["reader"] * 2, strict=True):
        tokens[name] += answer.prompt_tokens + answer.completion_tokens
    writer_stats, reader_stats = router.processes["writer"], router.processes["reader"]
    assert (writer_stats.jobs, writer_stats.failed_jobs) == (3, 0)
    assert (reader_stats.jobs, reader_stats.failed_jobs) == (2, 1)
    assert writer_stats.requests + reader_stats.requests == engine.stats.requests == 7
    assert writer_stats.prompt_tokens == 9 and reader_stats.prompt_tokens == 4
    assert shown["writer"]["tokens"] == tokens["writer"]
    assert shown["reader"]["tokens"] == tokens["reader"]
    assert set(router.processes) == {"writer", "reader"}


async def test_one_record_per_request_with_attempt_numbers(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(fail_first=2, error_status=500)
        policy = RetryPolicy(max_attempts=3, backoff_initial=0.001)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            answer = await router.submit(
                ask("hello"), retry=policy, run_id="run-1", job_id="job-1", process="p"
            )
            engine.faults = Faults(error_rate=1.0, error_status=400)
            with pytest.raises(EngineStatusError):
                await router.submit(ask("again"), retry=policy, job_id="job-2")
    assert len(recorder.calls) == engine.stats.requests == 4
    first_job = recorder.for_job("job-1")
    assert [c.attempt for c in first_job] == [1, 2, 3]
    assert [c.status for c in first_job] == ["error", "error", "ok"]
    assert [c.http_status for c in first_job] == [500, 500, 200]
    assert [c.error_class for c in first_job] == [
        "EngineStatusError/transient",
        "EngineStatusError/transient",
        None,
    ]
    assert all(c.run_id == "run-1" and c.engine == "loop" for c in first_job)
    assert first_job[0].error is not None and "500" in first_job[0].error
    assert first_job[0].response is None and first_job[0].prompt_tokens == 0
    done = first_job[2]
    assert done.id == answer.call_id and done.response == answer.response
    assert done.error is None and done.prompt_tokens == answer.prompt_tokens == 1
    assert done.request == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hello"}],
    }
    assert done.finished_at >= done.started_at
    [refused] = recorder.for_job("job-2")
    assert (refused.attempt, refused.status, refused.http_status) == (1, "error", 400)
    assert refused.error_class == "EngineStatusError/no-retry"
