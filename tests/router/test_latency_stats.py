"""The figures ``top`` shows beside the counters: latency percentiles and tokens per second
per engine and per process, the current wait of a process's oldest queued job, and the
CPU and memory of a model server process read from ``/proc``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos.router.jobs import InferenceRequest
from agentos.router.procstat import ServerUsage, cpu_seconds, resident_bytes
from agentos.router.router import Router
from agentos.router.stats import LATENCY_BOUNDS_S, LatencyHistogram, TokenRate
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.router.conftest import Connect


def ask(text: str, n: int) -> InferenceRequest:
    """A chat job; jobs of different ``n`` differ in ``max_tokens``, so none share a batch."""
    return InferenceRequest(
        kind="chat", messages=[{"role": "user", "content": text}], params={"max_tokens": 16 + n}
    )


def test_histogram_percentiles_are_within_a_bucket_of_the_truth() -> None:
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) is None
    assert histogram.snapshot() == {"p50_s": None, "p99_s": None}
    durations = [0.010 + 0.001 * i for i in range(98)] + [2.0, 3.0]  # 10..107 ms, 2 slow
    for d in durations:
        histogram.add(d)
    p50, p99 = histogram.quantile(0.5), histogram.quantile(0.99)
    assert p50 is not None and p99 is not None
    true_p50 = sorted(durations)[49]
    assert true_p50 <= p50 < true_p50 * 1.25
    assert 2.0 <= p99 < 2.0 * 1.25  # the 99th of 100 is the first slow one
    histogram.add(1e9)  # beyond the last bound: counted, shown as the last bound
    assert histogram.quantile(1.0) == LATENCY_BOUNDS_S[-1]
    assert histogram.total == 101


def test_token_rate_is_over_the_last_ten_seconds() -> None:
    rate = TokenRate()
    assert rate.rate(100.0, 0) == 0.0
    for second in range(1, 31):
        shown = rate.rate(100.0 + second, 50 * second)  # 50 tokens a second for 30 s
    assert shown == pytest.approx(50.0)
    assert len(rate.samples) <= 12
    assert rate.rate(135.0, 1500) == pytest.approx(250 / 10, rel=0.15)  # 5 s of nothing new
    assert rate.rate(200.0, 1500) == 0.0  # nothing new for a minute


async def test_snapshot_has_latency_tokens_per_second_and_the_oldest_wait(
    connect: Connect,
) -> None:
    async with LoopbackEngine(cost=CostModel(slots=1, per_request_ms=150)) as engine:
        handle = await connect(engine, max_requests=1)
        async with asyncio.timeout(20), Router([handle]) as router:
            first = [
                asyncio.create_task(router.submit(ask(f"a b c {i}", i), process="writer"))
                for i in range(4)
            ]
            await asyncio.sleep(0.35)  # two answered, one in flight, one queued since 0
            shown = router.snapshot()
            writer = next(p for p in shown["processes"] if p["name"] == "writer")
            assert 0.3 <= writer["wait_s"] < 0.6
            assert writer["queued"] == 2
            await asyncio.gather(*first)
            await asyncio.sleep(1.0)
            router.snapshot()  # a second sample a second later: tokens per second
            done = router.snapshot()
    (engine_shown,) = done["engines"]
    writer = next(p for p in done["processes"] if p["name"] == "writer")
    assert writer["wait_s"] == 0.0, "nothing of it waits any more"
    assert 0.15 <= engine_shown["p50_s"] < 0.15 * 1.25 + 0.05
    assert engine_shown["p99_s"] >= engine_shown["p50_s"]
    # a job's latency counts its wait: the k-th waited for k - 1 requests before its own
    assert 0.3 <= writer["p50_s"] < 0.3 * 1.25 + 0.05
    assert 0.6 <= writer["p99_s"] < 0.6 * 1.25 + 0.05
    tokens = handle.stats.prompt_tokens + handle.stats.completion_tokens
    assert tokens > 0
    assert 0 < engine_shown["tokens_per_s"] <= tokens / 1.0
    assert 0 < writer["tokens_per_s"] <= tokens / 1.0


def test_server_usage_reads_a_busy_child_process(tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here")
    busy = subprocess.Popen([sys.executable, "-c", "x = bytearray(64 << 20)\nwhile True: pass"])
    try:
        usage = ServerUsage()
        time.sleep(0.5)
        first = usage.read(busy.pid)
        assert first["cpu_pct"] is None, "the first reading only sets the baseline"
        time.sleep(1.0)
        second = usage.read(busy.pid)
        assert second["pid"] == busy.pid
        cpu = second["cpu_pct"]
        assert isinstance(cpu, float) and 20 <= cpu <= 110  # one spinning thread
        rss = second["rss_bytes"]
        assert isinstance(rss, int) and rss >= 64 << 20
    finally:
        busy.kill()
        busy.wait()
    assert cpu_seconds(busy.pid) is None and resident_bytes(busy.pid) is None
    gone = usage.read(busy.pid)
    assert gone["cpu_pct"] is None and gone["rss_bytes"] is None
    assert usage.read(None) == {"pid": None, "cpu_pct": None, "rss_bytes": None}
