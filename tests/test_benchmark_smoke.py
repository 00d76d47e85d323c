"""The router benchmark runs end to end with tiny numbers and reports every figure.

No performance is asserted here (CI machines vary); the benchmark itself reports whether
its targets are met. What is checked: it stops by itself, prints its tables, ends with
one JSON line holding the documented fields, lost no job, and computes the theoretical
best exactly.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "router.py"

FIELDS = (
    "jobs_per_s",
    "ratio_to_best",
    "ratio_to_plain",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "jobs_per_request",
    "p50_ms",
    "p99_ms",
    "plain_jobs_per_s",
    "best_jobs_per_s",
    "direct_p50_ms",
    "router_seq_p50_ms",
    "overhead_recorded_p50_ms",
    "recorded_seq_p50_ms",
)


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("router_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_benchmark_ends_with_one_json_line_of_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            *("--jobs", "60", "--plain-jobs", "8"),
            *("--overhead-samples", "30", "--overhead-warmup", "5"),
            "--skip-model",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["errors"] == []
    for name in FIELDS:
        assert isinstance(figures[name], float), name
        assert figures[name] > 0 or name.startswith("overhead"), name  # may be below 0
    assert (figures["jobs"], figures["plain_jobs"], figures["failed_jobs"]) == (60, 8, 0)
    assert figures["best_jobs_per_s"] == 750.0  # 30 prompts per slot: one 80 ms request each
    assert isinstance(figures["target_ratio_to_best_met"], bool)
    assert isinstance(figures["target_overhead_p50_met"], bool)
    assert isinstance(figures["target_recorded_overhead_p50_met"], bool)
    assert figures["router_settings"]["chat_template"] == "loopback /props"
    assert figures["jobs_per_request"] > 1, "the agents' chat jobs were batched"
    assert "model_jobs_per_s" not in figures
    table = "\n".join(lines[:-1])
    for heading in ("1. Batching", "(c) theoretical best", "2. Router overhead", "overhead p50"):
        assert heading in table


def test_the_theoretical_best_splits_prompts_evenly_over_slots(benchmark: ModuleType) -> None:
    cost = benchmark.GPU_LIKE  # 20 ms per request + 2 ms per prompt, 2 slots, batches ≤ 64
    best = benchmark.best_schedule(cost, 5000)
    assert best.elapsed_s == pytest.approx(5.8)  # 2500 per slot: 40 requests, 5000 ms of prompts
    assert best.requests == 80
    assert len(best.latencies_s) == 5000
    odd = benchmark.best_schedule(cost, 129)  # 65 + 64: one slot needs a second request
    assert odd.elapsed_s == pytest.approx(0.148 + 0.022)
    assert odd.requests == 3
    assert max(odd.latencies_s) == pytest.approx(odd.elapsed_s)
    assert sorted(odd.latencies_s)[:64] == [pytest.approx(0.148)] * 64
