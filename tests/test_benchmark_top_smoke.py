"""The ``top`` benchmark runs end to end with tiny numbers and reports every figure.

No performance is asserted here (CI machines vary, and on two cores an attached ``top``
competes for them); the benchmark itself reports whether the slowdown is within 5 %.
What is checked: it stops by itself, really attaches ``top`` in a pseudo-terminal (and
gets it to quit), lost no job, prints its table, and ends with one JSON line holding the
documented fields; and the rounds alternate their order.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "top.py"


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("top_benchmark", BENCHMARK)
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
        [sys.executable, str(BENCHMARK), "--jobs", "200", "--rounds", "1", "--warmup-jobs", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["errors"] == []
    for name in ("jobs_per_s_without", "jobs_per_s_with", "ratio_with_to_without"):
        assert isinstance(figures[name], float), name
        assert figures[name] > 0, name
    assert (figures["rounds"], figures["jobs"], figures["failed_jobs"]) == (1, 200, 0)
    assert len(figures["runs_without"]) == len(figures["runs_with"]) == 1
    assert figures["top_attached_every_run"] is True
    assert isinstance(figures["within_5_percent"], bool)
    table = "\n".join(lines[:-1])
    assert "median jobs/s" in table and "slowdown within 5 %" in table
    assert [line.split()[1] for line in lines[2:4]] == ["without", "with"]


def test_rounds_alternate_so_that_drift_favours_neither(benchmark: ModuleType) -> None:
    order = benchmark.abba(3)
    assert order == ["without", "with", "with", "without", "without", "with"]
    assert order.count("with") == order.count("without") == 3
