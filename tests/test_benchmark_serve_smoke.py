"""The serve benchmark runs end to end in its quick mode and reports every figure.

No performance is asserted here (CI machines vary); the benchmark itself reports whether
its targets are met. What is checked: it stops by itself, prints its tables, ends with
one JSON line holding the documented fields with sane values (nothing failed, the direct
clients within the engine's ceiling of one request per job, serve's jobs batched), and
leaves no child process behind, also when it is stopped with SIGTERM half-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "serve.py"
MARK = "AGENTOS_SERVE_BENCH_SMOKE"


def _environment() -> tuple[dict[str, str], str]:
    """The environment of one benchmark run, with a mark that every process it starts
    inherits, so that its leftovers can be found in ``/proc`` afterwards."""
    mark = uuid.uuid4().hex
    return {**os.environ, MARK: mark}, mark


def _processes_marked(mark: str) -> list[str]:
    needle = f"{MARK}={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone, or not ours
    return found


def _median(figures: dict[str, object], name: str) -> float:
    value = figures[name]
    assert isinstance(value, dict), name
    assert value["min"] <= value["median"] <= value["max"], name
    return float(value["median"])


def test_quick_run_ends_with_one_json_line_of_figures(tmp_path: Path) -> None:
    env, mark = _environment()
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--skip-litellm", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert _processes_marked(mark) == []
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert (report["clients"], report["in_flight_per_client"], report["rounds"]) == (8, 16, 3)
    # 4 slots, 20 ms + 0.2 ms per prompt: 4 / 20.2 ms with one prompt per request
    assert abs(report["best_one_request_per_job_jobs_per_s"] - 4 / 0.0202) < 0.01

    assert set(report["latency"]) == {"direct", "serve"}
    for target, figures in report["latency"].items():
        assert (figures["requests"], figures["failed"], figures["rounds"]) == (200, 0, 3), target
        assert 0 < _median(figures, "p50_ms") <= _median(figures, "p99_ms"), target
    assert report["latency"]["direct"]["paired_with"] == "serve"
    serve_latency = report["latency"]["serve"]
    assert serve_latency["direct_p50_ms"] == report["latency"]["direct"]["p50_ms"]
    added = serve_latency["added_p50_ms"]["median"]
    assert report["added_p50_ms"]["serve"] == added
    assert -5 < added < 100  # a hop on loopback: neither free nor as slow as a model

    assert set(report["throughput"]) == {"direct", "serve"}
    for target, figures in report["throughput"].items():
        assert figures["rounds"] == 3 and figures["failed"] == 0, target
        assert figures["jobs"] > 0, target
        assert _median(figures, "p50_ms") <= _median(figures, "p99_ms"), target
        assert _median(figures, "client_cpu_ms_per_job") > 0, target
    direct, serve = report["throughput"]["direct"], report["throughput"]["serve"]
    # the engine's cost model caps one request per job; a window counted wrong breaks this
    assert 0 < _median(direct, "jobs_per_s") <= 1.05 * report["best_one_request_per_job_jobs_per_s"]
    assert direct["jobs_per_request"] is None and direct["server_cpu_ms_per_job"] is None
    assert _median(serve, "server_cpu_ms_per_job") > 0
    assert 1 < _median(serve, "jobs_per_request") <= 64, "concurrent clients' jobs were batched"
    ratio = report["ratios"]["serve_to_direct"]
    assert ratio == pytest.approx(
        _median(serve, "jobs_per_s") / _median(direct, "jobs_per_s"), 1e-3
    )
    assert report["ratios"]["serve_to_litellm"] is None

    for name in ("serve_added_p50_ms", "serve_to_direct"):
        assert isinstance(report["targets"][name]["met"], bool), name
    assert report["targets"]["serve_to_direct"]["value"] == ratio
    assert isinstance(report["serve_embedded"], int)
    for heading in ("Added latency", "Throughput", "target serve_to_direct"):
        assert heading in result.stderr
    assert (tmp_path / "serve.db").exists() and (tmp_path / "serve.log").exists()


def test_sigterm_stops_the_benchmark_and_every_child(tmp_path: Path) -> None:
    env, mark = _environment()
    command = [sys.executable, str(BENCHMARK), "--quick", "--skip-litellm"]
    process = subprocess.Popen(
        [*command, "--work-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the engines and serve are up once a round starts
            if line.startswith(b"round 1: direct throughput"):
                break
        else:
            raise AssertionError("the benchmark ended before its first throughput part")
        running = 1 + 2 + 1 + 8  # the benchmark, 2 engines, serve, 8 clients
        deadline = time.monotonic() + 20
        while len(_processes_marked(mark)) < running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_processes_marked(mark)) >= running
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 143
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    deadline = time.monotonic() + 10
    while _processes_marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_marked(mark) == []
