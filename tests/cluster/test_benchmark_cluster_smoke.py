"""``benchmarks/cluster.py`` runs end to end with tiny numbers and reports every figure.

It starts its own two-node local Ray cluster (and shuts it down), so it is marked
``cluster``. No performance is asserted (machines vary; the benchmark reports whether
its targets are met). What is checked: it ends by itself with one JSON line, every run
of every part succeeded on one machine and on the cluster, the cluster's runs were
spread over both nodes, and the CPU-bound task agent's runs used both nodes' CPUs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

pytestmark = pytest.mark.cluster

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster.py"


def test_the_cluster_benchmark_ends_with_one_json_line_of_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--jobs", "40", "--cpu-runs", "2", "--cpu-ms", "400"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    samples = {(s["part"], s["where"]): s for s in report["samples"]}
    assert set(samples) == {
        ("runs", "one machine"),
        ("runs", "cluster"),
        ("burst", "one machine"),
        ("burst", "cluster"),
        ("cpu", "one machine"),
        ("cpu", "1 node"),
        ("cpu", "2 nodes"),
    }
    for (part, where), sample in samples.items():
        runs, jobs = {"runs": (40, 40), "burst": (1, 40), "cpu": (2, 2)}[part]
        assert (sample["runs"], sample["jobs"], sample["failed"]) == (runs, jobs, 0), where
        assert sample["wall_s"] > 0 and sample["cpu_ms_per_run"] > 0
    assert len(samples["runs", "cluster"]["nodes"]) == 2, "runs went to both run hosts"
    assert samples["runs", "cluster"]["ray_cpu_ms_per_run"] > 0
    assert samples["runs", "one machine"]["ray_cpu_ms_per_run"] == 0
    assert len(samples["cpu", "1 node"]["nodes"]) == 1
    assert len(samples["cpu", "2 nodes"]["nodes"]) == 2, "2 runs of 1 CPU each on 1-CPU nodes"
    over = report["overheads"]["runs_overhead_ms_per_run"]
    assert over["min"] == over["median"] == over["max"]  # one round
    target = report["targets"]["overhead_ms_per_run"]
    assert target["met"] == (target["value"] < 2.0)
    assert isinstance(report["targets"]["cpu_scaling"]["met"], bool)
    assert "overhead per run (cluster − one machine)" in result.stderr
