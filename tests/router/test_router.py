"""The router against the loopback test engine: limits, priority order, retry classes, and
refusals. Every request crosses real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
    NoEngineError,
)
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.router import EngineHandle, Router
from agentos.testing.engine import CostModel, Faults, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01, jitter=0.5)
"""Retries that wait a few milliseconds, so that every retry class runs in a test."""


def ask(text: str, model: str | None = None) -> InferenceRequest:
    return InferenceRequest(kind="chat", model=model, messages=[{"role": "user", "content": text}])


def asked(engine: LoopbackEngine) -> list[str]:
    """The user message of every request the engine received, in arrival order."""
    return [body["messages"][-1]["content"] for _path, body in engine.stats.recorded]


async def sample_in_flight(handles: list[EngineHandle], peaks: dict[str, int]) -> None:
    """Note the highest in-flight count the router itself shows, at every loop turn."""
    while True:
        for handle in handles:
            peaks[handle.name] = max(peaks.get(handle.name, 0), handle.stats.in_flight)
        await asyncio.sleep(0)


async def test_limit_never_exceeded_under_200_concurrent_submits(connect: Connect) -> None:
    async with LoopbackEngine(cost=CostModel(slots=8, per_request_ms=5)) as engine:
        handle = await connect(engine, max_requests=3)
        peaks: dict[str, int] = {}
        async with asyncio.timeout(20), Router([handle]) as router:
            sampler = asyncio.create_task(sample_in_flight([handle], peaks))
            answers = await asyncio.gather(*(router.submit(ask(f"job {i}")) for i in range(200)))
            sampler.cancel()
    assert len(answers) == 200
    assert all(a.engine == "loop" and a.text for a in answers)
    assert engine.stats.requests == 200
    assert engine.stats.max_in_flight <= 3
    assert peaks["loop"] == 3  # the limit is used, and never passed
    assert handle.stats.in_flight == 0


async def test_two_engines_share_a_model_each_within_its_own_limit(connect: Connect) -> None:
    async with (
        LoopbackEngine(cost=CostModel(slots=8, per_request_ms=10)) as first,
        LoopbackEngine(cost=CostModel(slots=8, per_request_ms=10)) as second,
    ):
        a = await connect(first, name="a", max_requests=2)
        b = await connect(second, name="b", max_requests=3)
        peaks: dict[str, int] = {}
        async with asyncio.timeout(20), Router([a, b]) as router:
            sampler = asyncio.create_task(sample_in_flight([a, b], peaks))
            answers = await asyncio.gather(
                *(router.submit(ask(f"job {i}", model="test-model")) for i in range(60))
            )
            sampler.cancel()
    served = {name: sum(1 for x in answers if x.engine == name) for name in ("a", "b")}
    assert served["a"] > 0 and served["b"] > 0
    assert served["a"] + served["b"] == 60
    assert first.stats.requests == served["a"] and second.stats.requests == served["b"]
    assert first.stats.max_in_flight <= 2 and second.stats.max_in_flight <= 3
    assert peaks["a"] <= 2 and peaks["b"] <= 3


async def test_waiting_jobs_are_served_by_priority_class_then_in_arrival_order(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=1)
        engine.cost = CostModel(slots=4, per_request_ms=600)
        async with asyncio.timeout(20), Router([handle]) as router:
            blocker = asyncio.create_task(router.submit(ask("blocker"), priority="background"))
            while engine.stats.requests == 0:
                await asyncio.sleep(0.005)
            engine.cost = CostModel(slots=4, per_request_ms=10)  # the blocker keeps its 600 ms
            order = [
                ("background", "bg-1"),
                ("user", "user-1"),
                ("kernel", "kernel-1"),
                ("background", "bg-2"),
                ("system", "system-1"),
                ("user", "user-2"),
                ("kernel", "kernel-2"),
                ("system", "system-2"),
            ]
            waiting = [
                asyncio.create_task(router.submit(ask(text), priority=priority))
                for priority, text in order
            ]
            while len(router.queue) < len(order):
                await asyncio.sleep(0.001)
            assert not blocker.done(), "the engine must still be busy while the jobs queue"
            await asyncio.gather(blocker, *waiting)
    assert asked(engine) == [
        "blocker",
        "system-1",
        "system-2",
        "kernel-1",
        "kernel-2",
        "user-1",
        "user-2",
        "bg-1",
        "bg-2",
    ]


async def test_5xx_is_retried_until_it_succeeds(connect: Connect, recorder: ListRecorder) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(fail_first=2, error_status=500)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            answer = await router.submit(ask("hello"), retry=FAST_RETRY)
    assert answer.text
    assert engine.stats.requests == 3
    assert engine.stats.by_status == {500: 2, 200: 1}
    assert [c.status for c in recorder.calls] == ["error", "error", "ok"]


async def test_503_exhausts_max_attempts_then_fails_the_job(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(error_rate=1.0, error_status=503)
        policy = RetryPolicy(max_attempts=4, backoff_initial=0.001, backoff_max=0.01)
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineStatusError) as failure:
                await router.submit(ask("hello"), retry=policy)
    assert failure.value.status == 503
    assert engine.stats.requests == 4
    assert router.jobs_failed == 1 and router.jobs_done == 0


async def test_429_waits_at_least_retry_after(connect: Connect, recorder: ListRecorder) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(fail_first=1, error_status=429, retry_after=0.3)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            started = time.monotonic()
            answer = await router.submit(ask("hello"), retry=FAST_RETRY)
            elapsed = time.monotonic() - started
    assert answer.text
    assert engine.stats.requests == 2
    assert elapsed >= 0.3
    failed_at, retried_record_at = recorder.received_at
    retried_latency = recorder.calls[1].latency_ms / 1000
    assert retried_record_at - retried_latency - failed_at >= 0.3 - 0.01
    assert recorder.calls[0].http_status == 429


async def test_a_job_waiting_out_retry_after_holds_no_slot(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=1)
        engine.faults = Faults(fail_first=1, error_status=429, retry_after=0.4)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            limited = asyncio.create_task(router.submit(ask("limited"), retry=FAST_RETRY))
            while not recorder.calls:
                await asyncio.sleep(0.005)
            assert router.snapshot()["retrying"] == 1
            await router.submit(ask("meanwhile"))
            assert not limited.done()
            await limited
    assert asked(engine) == ["limited", "meanwhile", "limited"]


async def test_429_without_retry_after_is_still_retried(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(error_rate=1.0, error_status=429)
        policy = RetryPolicy(max_attempts=2, backoff_initial=0.001)
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineStatusError) as failure:
                await router.submit(ask("hello"), retry=policy)
    assert failure.value.status == 429
    assert engine.stats.requests == 2


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_other_4xx_are_not_retried(connect: Connect, status: int) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(error_rate=1.0, error_status=status)
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineStatusError) as failure:
                await router.submit(ask("hello"), retry=FAST_RETRY)
    assert failure.value.status == status
    assert engine.stats.requests == 1


async def test_404_for_a_model_the_engine_lacks_is_not_retried(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, models=["test-model", "ghost-model"])
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineStatusError) as failure:
                await router.submit(ask("hello", model="ghost-model"), engine="loop")
    assert failure.value.status == 404
    assert "ghost-model" in str(failure.value)
    assert engine.stats.requests == 1


async def test_timeouts_are_retried_then_fail_with_engine_timeout(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, timeout=0.2)
        engine.faults = Faults(hang_rate=1.0)
        async with asyncio.timeout(10), Router([handle]) as router:
            started = time.monotonic()
            with pytest.raises(EngineTimeout):
                await router.submit(ask("hello"), retry=FAST_RETRY)
            elapsed = time.monotonic() - started
    assert engine.stats.requests == FAST_RETRY.max_attempts
    assert elapsed >= 0.2 * FAST_RETRY.max_attempts


async def test_dropped_connections_are_retried_then_fail_as_connection_errors(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(drop_rate=1.0)
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineConnectionError):
                await router.submit(ask("hello"), retry=FAST_RETRY)
    assert engine.stats.requests == FAST_RETRY.max_attempts


async def test_malformed_answers_are_retried_then_fail_as_malformed(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(malformed_rate=1.0)
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(EngineMalformedAnswer):
                await router.submit(ask("hello"), retry=FAST_RETRY)
    assert engine.stats.requests == FAST_RETRY.max_attempts


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (Faults(seed=1, drop_rate=0.5), EngineConnectionError),
        (Faults(seed=1, malformed_rate=0.5), EngineMalformedAnswer),
    ],
)
async def test_a_drop_or_malformed_answer_then_a_good_one_succeeds(
    connect: Connect, recorder: ListRecorder, faults: Faults, expected: type[EngineError]
) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        # random.Random(1) draws 0.134 then 0.847: the first request is hit, the second not.
        engine.faults = faults
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            answer = await router.submit(ask("hello"), retry=FAST_RETRY)
    assert answer.text
    assert engine.stats.requests == 2
    first, second = recorder.calls
    assert first.status == "error"
    assert first.error_class == f"{expected.__name__}/transient"
    assert second.status == "ok"


async def test_no_engine_for_the_model_names_the_model_and_the_engines(
    connect: Connect,
) -> None:
    async with LoopbackEngine(models=("test-model", "other-model")) as engine:
        handle = await connect(engine, name="loopy")
        async with Router([handle]) as router:
            with pytest.raises(NoEngineError) as failure:
                await router.submit(ask("hello", model="missing-model"))
    message = str(failure.value)
    assert "missing-model" in message
    assert "loopy" in message and "test-model" in message and "other-model" in message
    assert engine.stats.requests == 0


async def test_unknown_pinned_engine_is_refused(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = await connect(engine, name="loopy")
        async with Router([handle]) as router:
            with pytest.raises(NoEngineError) as failure:
                await router.submit(ask("hello"), engine="elsewhere")
    assert "elsewhere" in str(failure.value) and "loopy" in str(failure.value)
    assert engine.stats.requests == 0


async def test_no_engines_at_all_is_refused() -> None:
    async with Router([]) as router:
        with pytest.raises(NoEngineError) as failure:
            await router.submit(ask("hello", model="any"))
    assert "no engines configured" in str(failure.value)


async def test_a_pinned_engine_gets_all_of_its_jobs(connect: Connect) -> None:
    async with LoopbackEngine() as first, LoopbackEngine() as second:
        a = await connect(first, name="a")
        b = await connect(second, name="b")
        async with asyncio.timeout(10), Router([a, b]) as router:
            answers = await asyncio.gather(
                *(router.submit(ask(f"job {i}"), engine="b") for i in range(10))
            )
    assert {x.engine for x in answers} == {"b"}
    assert first.stats.requests == 0 and second.stats.requests == 10


async def test_embeddings_and_completions_go_to_their_endpoints(connect: Connect) -> None:
    async with LoopbackEngine(embedding_dim=8) as engine:
        handle = await connect(engine)
        async with asyncio.timeout(10), Router([handle]) as router:
            vector = await router.submit(InferenceRequest(kind="embeddings", input=["a b c"]))
            text = await router.submit(InferenceRequest(kind="completions", prompt="one two"))
    assert vector.embedding is not None and len(vector.embedding) == 8
    assert text.text and text.embedding is None and text.prompt_tokens == 2
    assert [path for path, _body in engine.stats.recorded] == [
        "/v1/embeddings",
        "/v1/completions",
    ]
