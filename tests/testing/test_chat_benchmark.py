"""benchmarks/chat.py runs end to end with tiny numbers and reports every figure.

No performance is asserted (machines vary; the benchmark reports its targets itself).
What is checked: it stops by itself, drives every in-project client against the loopback
test engine (the peers' venv is skipped), loses no job, and ends with one JSON line of
min/median/max figures, ratios and targets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "chat.py"


def test_the_chat_benchmark_ends_with_one_json_line_of_figures() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            *("--rounds", "2", "--jobs", "150", "--peer-jobs", "20", "--run-jobs", "100"),
            "--skip-peers",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    clients = report["clients"]
    assert set(clients) == {"ceiling", "router-chat", "router-batch", "agentos-run", "httpx"}
    for name, figures in clients.items():
        assert figures["rounds"] == 2, name
        assert figures["failed"] == 0, name
        rate = figures["jobs_per_s"]
        assert 0 < rate["min"] <= rate["median"] <= rate["max"], name
        assert figures["cpu_ms_per_job"]["median"] > 0, name
    assert clients["ceiling"]["jobs"] == 150 and clients["httpx"]["jobs"] == 20
    assert clients["agentos-run"]["jobs"] == 100
    assert clients["agentos-run"]["peak_rss_mb"]["median"] > 10
    assert clients["router-chat"]["jobs_per_request"]["median"] == 1.0
    assert report["best_one_request_per_job_jobs_per_s"] == 3168.3168  # 64 / 20.2 ms
    assert report["ratios"]["router_chat_to_ceiling"] > 0
    targets = report["targets"]
    assert targets["router_to_ceiling"]["met"] in (True, False)
    assert targets["run_jobs_per_s"]["note"] == "the target is for N=10000"
    assert targets["run_rss_growth"]["met"] is None  # no 100,000-job run asked for
    assert "medians" in result.stderr and "target router_to_ceiling" in result.stderr
