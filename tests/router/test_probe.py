"""The capacity probe against loopback engines whose cost models make the right answer known.

Costs are chosen so that each expected suggestion holds with a wide margin. A client that
keeps only ``slots`` requests in flight leaves a slot idle for its turnaround between two
requests (under a millisecond on an idle machine, several on a loaded CI runner), which
more concurrency hides; a per-request cost of 200 ms and few requests per point keep
that gain far below the probe's 10 % threshold. The same turnaround makes batching look
more useful than it is, so "batching barely helps" is tested with 50 ms per prompt.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest

from agentos.errors import EngineConnectionError
from agentos.router.client import EngineClient
from agentos.router.probe import probe_engine
from agentos.testing.engine import CostModel, LoopbackEngine


@pytest.fixture
async def clients() -> AsyncIterator[list[EngineClient]]:
    made: list[EngineClient] = []
    yield made
    for client in made:
        await client.aclose()


async def _client(engine: LoopbackEngine, clients: list[EngineClient]) -> EngineClient:
    client = EngineClient("loop", engine.url, timeout=10.0)
    clients.append(client)
    return client


async def test_more_concurrency_than_slots_is_not_suggested(clients: list[EngineClient]) -> None:
    cost = CostModel(per_request_ms=200, per_prompt_ms=0, slots=2, max_batch=64)
    async with LoopbackEngine(cost=cost, record_requests=False) as engine:
        client = await _client(engine, clients)
        report = await probe_engine(
            client,
            "test-model",
            prompt_batching=False,
            concurrencies=(1, 2, 4),
            requests_per_point=2,
        )
        assert engine.stats.max_prompts_per_request == 1
        assert engine.stats.max_in_flight == 2
    assert report.engine == "loop"
    assert report.suggested_max_requests == 2
    assert report.suggested_max_batch_size == 1
    assert {p.batch_size for p in report.points} == {1}
    by_concurrency = {p.concurrency: p for p in report.points}
    assert set(by_concurrency) == {1, 2, 4}
    assert all(p.errors == 0 and p.p50_ms >= 200 for p in report.points)
    assert by_concurrency[2].prompts_per_s > 1.6 * by_concurrency[1].prompts_per_s
    assert any("prompt batching off" in note for note in report.notes)


async def test_batching_is_raised_to_the_engine_limit_when_it_pays(
    clients: list[EngineClient],
) -> None:
    cost = CostModel(per_request_ms=60, per_prompt_ms=0.1, slots=2, max_batch=64)
    async with LoopbackEngine(cost=cost, record_requests=False) as engine:
        client = await _client(engine, clients)
        report = await probe_engine(
            client,
            "test-model",
            prompt_batching=True,
            batch_sizes=(1, 4, 16, 64),
            concurrencies=(1, 2),
            requests_per_point=3,
        )
        assert engine.stats.max_prompts_per_request == 64
    assert report.suggested_max_batch_size == 64
    assert report.suggested_max_requests == 2
    assert [(p.batch_size, p.concurrency) for p in report.points] == [
        (1, 1),
        (4, 1),
        (16, 1),
        (64, 1),
        (64, 2),
    ]  # the (64, 1) point is measured once and reused by the concurrency sweep


async def test_a_batch_the_engine_refuses_is_noted_and_not_suggested(
    clients: list[EngineClient],
) -> None:
    cost = CostModel(per_request_ms=20, per_prompt_ms=0.05, slots=2, max_batch=16)
    async with LoopbackEngine(cost=cost, record_requests=False) as engine:
        client = await _client(engine, clients)
        report = await probe_engine(
            client,
            "test-model",
            prompt_batching=True,
            concurrencies=(1, 2),
            requests_per_point=3,
        )
        assert engine.stats.by_status.get(400) == 3
    refused = [p for p in report.points if p.batch_size == 32]
    assert len(refused) == 1 and refused[0].errors == 3 and refused[0].prompts_per_s == 0
    assert not any(p.batch_size > 32 for p in report.points)
    assert report.suggested_max_batch_size == 16
    assert any("batch size 32" in note and "400" in note for note in report.notes)


async def test_batching_that_barely_helps_keeps_the_suggestion_small(
    clients: list[EngineClient],
) -> None:
    cost = CostModel(per_request_ms=0.5, per_prompt_ms=50, slots=2, max_batch=64)
    async with LoopbackEngine(cost=cost, record_requests=False) as engine:
        client = await _client(engine, clients)
        report = await probe_engine(
            client,
            "test-model",
            prompt_batching=True,
            concurrencies=(1, 2),
            requests_per_point=2,
        )
    assert report.suggested_max_batch_size <= 2
    assert max(p.batch_size for p in report.points) <= 4
    assert any("not 10% above" in note for note in report.notes)


async def test_the_time_budget_bounds_the_probe(clients: list[EngineClient]) -> None:
    cost = CostModel(per_request_ms=200, slots=1)
    async with LoopbackEngine(cost=cost, record_requests=False) as engine:
        client = await _client(engine, clients)
        started = time.monotonic()
        report = await probe_engine(client, "test-model", prompt_batching=True, time_budget_s=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert report.points == []
    assert (report.suggested_max_batch_size, report.suggested_max_requests) == (1, 1)
    assert any("time budget" in note for note in report.notes)


async def test_an_unreachable_engine_is_an_engine_error(clients: list[EngineClient]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = EngineClient("gone", f"http://127.0.0.1:{port}", timeout=2.0)
    clients.append(client)
    with pytest.raises(EngineConnectionError):
        await probe_engine(client, "test-model", prompt_batching=True)
