"""A seeded agentos database for the dashboard tests: real Store, real rows, fixed times.

Every figure the tests compare against lives here, in the rows, so a test reads the
expected value from the same dict it wrote.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from agentos.store import Store
from agentos.store.writer import Execute, Insert

NOW = 1795248283.0
"""2026-11-21 08:04:43 UTC: the dashboard's clock in these tests."""

R0 = "019aa2a6f1c01d5e7b3a90"
R1 = "019aa5d0b7e83f1c2a9b04"
R2 = "019aa5d1a3c2774be0d513"
R3 = "019aa5d12f9e6a0c4d8e27"
RUNTIME_A = "019aa5cfe0a1b2c3d4e5f6"
RUNTIME_B = "019aa5d0c4f5e6d7c8b9a0"

R1_START = NOW - 60

SNAPSHOT_A: dict[str, Any] = {
    "uptime_s": 74.6,
    "jobs_done": 41,
    "jobs_failed": 2,
    "cache_hits": 3,
    "requests": 23,
    "jobs_per_request": 1.652,
    "request_time_s": 52.31,
    "idle_s": 96.89,
    "waiting": 4,
    "intake": 2,
    "retrying": 1,
    "planning_s": 0.0183,
    "finished": False,
    "engines": [
        {
            "name": "local",
            "endpoint": "http://127.0.0.1:52853",
            "state": "busy - 2",
            "in_flight": 2,
            "max_requests": 2,
            "max_batch_size": 8,
            "requests": 17,
            "jobs": 32,
            "failed_requests": 0,
            "failed_jobs": 0,
            "prompt_tokens": 7410,
            "completion_tokens": 2031,
            "busy_s": 48.12,
            "idle_s": 26.48,
            "uptime_s": 74.6,
            "wasted_s": 0.0,
            "circuit": "closed",
            "limit": 2,
            "healthy": True,
            "p50_s": 2.7756,
            "p99_s": 5.421,
            "tokens_per_s": 126.4,
            "pid": 52853,
            "cpu_pct": 187.5,
            "rss_bytes": 301989888,
        },
        {
            "name": "gpu-box",
            "endpoint": "http://10.0.0.7:8000/v1",
            "state": "idle",
            "in_flight": 0,
            "max_requests": 4,
            "max_batch_size": 1,
            "requests": 6,
            "jobs": 6,
            "failed_requests": 2,
            "failed_jobs": 1,
            "prompt_tokens": 880,
            "completion_tokens": 232,
            "busy_s": 4.19,
            "idle_s": 70.41,
            "uptime_s": 74.6,
            "wasted_s": 3.02,
            "circuit": "half-open",
            "limit": 2,
            "healthy": False,
            "p50_s": 0.5551,
            "p99_s": 0.8674,
            "tokens_per_s": 0.0,
        },
    ],
    "processes": [
        {
            "name": "capital-cities",
            "requests": 5,
            "jobs": 5,
            "failed_jobs": 0,
            "tokens": 609,
            "cache_hits": 1,
            "queued": 0,
            "avg_wait_s": 0.3012,
            "kind": "agent",
            "state": "succeeded",
            "runs": 2,
            "runs_succeeded": 2,
            "runs_failed": 0,
            "successes": 6,
            "failures": 1,
            "run_id": R1,
        },
        {
            "name": "summarize-news",
            "requests": 12,
            "jobs": 24,
            "failed_jobs": 1,
            "tokens": 8112,
            "cache_hits": 2,
            "queued": 4,
            "avg_wait_s": 1.52,
            "wait_s": 3.8,
            "p50_s": 3.4694,
            "p99_s": 8.2718,
            "tokens_per_s": 97.25,
            "kind": "agent",
            "state": "running",
            "runs": 1,
            "runs_succeeded": 0,
            "runs_failed": 0,
            "successes": 2,
            "failures": 1,
            "run_id": R2,
        },
        {
            "name": "extract-dates",
            "requests": 4,
            "jobs": 4,
            "failed_jobs": 1,
            "tokens": 1320,
            "cache_hits": 0,
            "queued": 0,
            "avg_wait_s": 0.08,
            "kind": "agent",
            "state": "failed",
            "runs": 1,
            "runs_succeeded": 0,
            "runs_failed": 1,
            "successes": 0,
            "failures": 4,
            "run_id": R3,
        },
        {
            "name": "background[embeddings]",
            "requests": 2,
            "jobs": 8,
            "failed_jobs": 0,
            "tokens": 512,
            "cache_hits": 0,
            "queued": 2,
            "avg_wait_s": 2.4,
            "wait_s": 12.6,
            "p50_s": 2.2204,
            "p99_s": 4.3368,
            "tokens_per_s": 6.5,
            "kind": "system",
            "state": "running",
        },
    ],
    "cost": {
        "currency": "USD",
        "day": "2026-11-21",
        "total": "0.004210",
        "unpriced_calls": 4,
        "by_process": {
            "capital-cities": "0.000560",
            "summarize-news": "0.003650",
            "extract-dates": None,
        },
    },
}
"""Runtime A's snapshot: two engines (one half-open after failures), three agents and a
system process. Sums agree: 17+6 requests, 32+6 = 41-3 jobs, busy+idle = uptime; today's
cost 0.000560 + 0.003650 (extract-dates' 4 calls have no price, embeddings cost 0)."""

SNAPSHOT_B: dict[str, Any] = {
    "uptime_s": 12.5,
    "jobs_done": 4,
    "jobs_failed": 0,
    "cache_hits": 0,
    "requests": 2,
    "jobs_per_request": 2.0,
    "request_time_s": 3.4,
    "idle_s": 9.1,
    "waiting": 1,
    "intake": 0,
    "retrying": 0,
    "planning_s": 0.0021,
    "finished": False,
    "engines": [
        {
            "name": "local",
            "endpoint": "http://127.0.0.1:41877",
            "state": "idle",
            "in_flight": 0,
            "max_requests": 1,
            "max_batch_size": 4,
            "requests": 2,
            "jobs": 4,
            "failed_requests": 0,
            "failed_jobs": 0,
            "busy_s": 3.4,
            "idle_s": 9.1,
            "uptime_s": 12.5,
            "wasted_s": 0.0,
            "circuit": "closed",
            "limit": 1,
            "healthy": True,
        }
    ],
    "processes": [
        {
            "name": "daily-report",
            "requests": 2,
            "jobs": 4,
            "failed_jobs": 0,
            "tokens": 388,
            "cache_hits": 0,
            "queued": 1,
            "avg_wait_s": 0.011,
            "kind": "agent",
            "state": "running",
            "runs": 1,
            "runs_succeeded": 0,
            "runs_failed": 0,
            "successes": 4,
            "failures": 0,
            "run_id": None,
        }
    ],
}
"""A second runtime on the same database (another terminal, another agents file)."""

NODES: list[dict[str, Any]] = [
    {"node": "a1b2c3d4", "address": "10.0.0.5", "alive": True, "cpus": 8.0, "runs": 2},
    {"node": "e5f60718", "address": "10.0.0.6", "alive": True, "cpus": 4.0, "runs": 1},
    {"node": "9f8e7d6c", "address": "10.0.0.7", "alive": False, "cpus": 4.0, "runs": 0},
]
"""A three-node Ray cluster as a runtime on it reports it (``agentos run --cluster``):
two nodes alive with runs in flight, one dead."""

SNAPSHOT_CLUSTER: dict[str, Any] = {**SNAPSHOT_A, "nodes": NODES}
"""Runtime A's snapshot on a cluster: the same figures, plus its nodes."""

RUNS: list[dict[str, Any]] = [
    {
        "id": R0,
        "agent": "capital-cities",
        "kind": "prompt",
        "status": "succeeded",
        "started_at": NOW - 86400 - 100,
        "finished_at": NOW - 86400 - 93.8,
        "wanted": 3,
        "successes": 3,
        "attempts": 3,
    },
    {
        "id": R1,
        "agent": "capital-cities",
        "kind": "prompt",
        "status": "succeeded",
        "started_at": R1_START,
        "finished_at": R1_START + 7.5,
        "wanted": 3,
        "successes": 3,
        "attempts": 4,
    },
    {
        "id": R3,
        "agent": "extract-dates",
        "kind": "prompt",
        "status": "failed",
        "started_at": NOW - 30,
        "finished_at": NOW - 12,
        "error": "reached the attempt cap (4) with 0 of 2 good results",
        "wanted": 2,
        "successes": 0,
        "attempts": 4,
    },
    {
        "id": R2,
        "agent": "summarize-news",
        "kind": "prompt",
        "status": "running",
        "started_at": NOW - 8,
        "wanted": 5,
        "successes": 2,
        "attempts": 3,
    },
]

PROMPT = "Name the capital city of France."
FORMAT = 'Answer with one JSON object like {"city": "..."} and nothing else.'
REASK = "That was not valid JSON. Answer again with only the JSON object."

R1_EVENTS: list[tuple[float, str, dict[str, Any]]] = [
    (0.002, "run_started", {"wanted": 3, "attempt_cap": 6, "variables": {"country": "France"}}),
    (0.010, "request", {"attempt": 1, "turn": 0, "messages": [
        {"role": "user", "content": f"{PROMPT}\n\n{FORMAT}"}]}),
    (0.011, "request", {"attempt": 2, "turn": 0, "messages": [
        {"role": "user", "content": f"{PROMPT}\n\n{FORMAT}"}]}),
    (0.525, "answer", {"attempt": 1, "turn": 0, "call_id": "c1", "engine": "local",
                       "model": "smollm2-135m", "text": '{"city": "Paris"}',
                       "latency_ms": 510.23, "tokens": 121}),
    (0.527, "parsed", {"attempt": 1, "turn": 0, "data": {"city": "Paris"}, "repairs": []}),
    (0.980, "answer", {"attempt": 2, "turn": 0, "call_id": "c2", "engine": "local",
                       "model": "smollm2-135m", "text": "The capital of France is Paris.",
                       "latency_ms": 962.4, "tokens": 126}),
    (0.981, "parse_error", {"attempt": 2, "turn": 0,
                            "error": "the answer is not JSON: The capital of France is Paris."}),
    (0.982, "request", {"attempt": 2, "turn": 1, "messages": [
        {"role": "user", "content": f"{PROMPT}\n\n{FORMAT}"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": REASK}]}),
    (1.020, "request", {"attempt": 3, "turn": 0, "messages": [
        {"role": "user", "content": f"{PROMPT}\n\n{FORMAT}"}]}),
    (1.460, "answer", {"attempt": 2, "turn": 1, "call_id": "c3", "engine": "local",
                       "model": "smollm2-135m", "text": '{"city":"Paris",}',
                       "latency_ms": 431.0, "tokens": 168}),
    (1.462, "parsed", {"attempt": 2, "turn": 1, "data": {"city": "Paris"},
                       "repairs": ["trailing comma"]}),
    (1.470, "request", {"attempt": 4, "turn": 0, "messages": [
        {"role": "user", "content": f"{PROMPT}\n\n{FORMAT}"}]}),
    (5.310, "answer", {"attempt": 3, "turn": 0, "call_id": "c5", "engine": "local",
                       "model": "smollm2-135m", "text": '{"city": "Paris"}',
                       "latency_ms": 0.4, "tokens": 121}),
    (5.312, "parsed", {"attempt": 3, "turn": 0, "data": {"city": "Paris"}, "repairs": []}),
    (7.480, "error", {"attempt": 4, "error": "gpu-box answered HTTP 503: overloaded",
                      "error_class": "EngineStatusError"}),
    (7.500, "run_finished", {"status": "succeeded", "error": None, "successes": 3}),
]  # fmt: skip
"""Run R1's events: (seconds after its start, type, payload), as the prompt agent writes
them: two attempts at once, a parse error and a re-ask, a cached answer, a failed attempt."""

R1_CALLS: list[dict[str, Any]] = [
    {"id": "c1", "job_id": f"{R1}:1:0", "engine": "local", "status": "ok",
     "latency_ms": 510.23, "batch_size": 2, "cache_hit": 0, "at": (0.012, 0.522)},
    {"id": "c2", "job_id": f"{R1}:2:0", "engine": "local", "status": "ok",
     "latency_ms": 962.4, "batch_size": 2, "cache_hit": 0, "at": (0.013, 0.975)},
    {"id": "c3", "job_id": f"{R1}:2:1", "engine": "local", "status": "ok",
     "latency_ms": 431.0, "batch_size": 1, "cache_hit": 0, "at": (1.025, 1.456)},
    {"id": "c4", "job_id": f"{R1}:3:0", "engine": "gpu-box", "status": "error",
     "error_class": "EngineTimeout", "error": "no answer from gpu-box within 2s",
     "latency_ms": 2000.0, "batch_size": 1, "cache_hit": 0, "at": (1.03, 3.03)},
    {"id": "c5", "job_id": f"{R1}:3:0", "engine": "local", "status": "ok",
     "latency_ms": 0.4, "batch_size": 1, "cache_hit": 1, "at": (5.309, 5.3094)},
    {"id": "c6", "job_id": f"{R1}:4:0", "engine": "gpu-box", "status": "error",
     "error_class": "EngineStatusError", "http_status": 503,
     "error": "gpu-box answered HTTP 503: overloaded",
     "latency_ms": 1020.0, "batch_size": 1, "cache_hit": 0, "at": (6.45, 7.47)},
]  # fmt: skip
"""Run R1's model calls; ``at`` is (started, finished) in seconds after the run's start."""


def snapshot_row(
    runtime_id: str, pid: int, data: dict[str, Any], *, updated_at: float, uptime_s: float
) -> dict[str, Any]:
    return {
        "runtime_id": runtime_id,
        "pid": pid,
        "host": "studio",
        "started_at": updated_at - uptime_s,
        "updated_at": updated_at,
        "data": json.dumps(data),
    }


def write_snapshot(
    db_path: Path,
    data: dict[str, Any],
    *,
    runtime_id: str = RUNTIME_A,
    pid: int = 4242,
    updated_at: float = NOW - 0.4,
) -> None:
    """Write (replace) one runtime's snapshot row, as the runtime's SnapshotWriter does."""
    with Store(db_path) as store:
        store.submit(
            Insert(
                "runtime_snapshots",
                snapshot_row(
                    runtime_id, pid, data, updated_at=updated_at, uptime_s=data["uptime_s"]
                ),
                replace=True,
            )
        )


def seed(
    db_path: Path,
    *,
    snapshot_age_s: float = 0.4,
    two_runtimes: bool = False,
    cluster: bool = False,
) -> None:
    """The runs, R1's events and calls, and runtime A's snapshot (and B's) at ``NOW``;
    with ``cluster``, A's snapshot carries its cluster's nodes (:data:`SNAPSHOT_CLUSTER`)."""
    snapshot_a = SNAPSHOT_CLUSTER if cluster else SNAPSHOT_A
    with Store(db_path) as store:
        for run in RUNS:
            store.submit(Insert("runs", {"spec": "{}", "pid": 4242, "host": "studio", **run}))
        for seq, (offset, type_, payload) in enumerate(R1_EVENTS, start=1):
            store.submit(
                Insert(
                    "events",
                    {
                        "run_id": R1,
                        "seq": seq,
                        "type": type_,
                        "time": R1_START + offset,
                        "payload": json.dumps(payload),
                    },
                )
            )
        for call in R1_CALLS:
            row = {k: v for k, v in call.items() if k != "at"}
            started, finished = call["at"]
            ok = call["status"] == "ok"
            store.submit(
                Insert(
                    "llm_calls",
                    {
                        **row,
                        "run_id": R1,
                        "attempt": 1,
                        "model": "smollm2-135m",
                        "kind": "chat",
                        "request": "{}",
                        "prompt_tokens": 97 if ok else 0,
                        "completion_tokens": 24 if ok else 0,
                        "started_at": R1_START + started,
                        "finished_at": R1_START + finished,
                    },
                )
            )
        store.submit(
            Insert(
                "runtime_snapshots",
                snapshot_row(
                    RUNTIME_A,
                    4242,
                    snapshot_a,
                    updated_at=NOW - snapshot_age_s,
                    uptime_s=SNAPSHOT_A["uptime_s"],
                ),
            )
        )
        if two_runtimes:
            store.submit(
                Insert(
                    "runtime_snapshots",
                    snapshot_row(
                        RUNTIME_B,
                        5151,
                        SNAPSHOT_B,
                        updated_at=NOW - 0.2,
                        uptime_s=SNAPSHOT_B["uptime_s"],
                    ),
                )
            )


def mark_done(db_path: Path, command_id: int, runtime_id: str = RUNTIME_A) -> None:
    """What a runtime does once it carried out a control command."""
    with Store(db_path) as store:
        store.submit(
            Execute(
                "UPDATE control SET done_at = ?, done_by = ? WHERE id = ? AND done_at IS NULL",
                [NOW, runtime_id, command_id],
            )
        )


def with_more_jobs(data: dict[str, Any], jobs: int, seconds: float) -> dict[str, Any]:
    """``data`` after its first engine and its first running process did another ``jobs``
    jobs, two to a request, over ``seconds`` (busy all along), as a runtime would report."""
    later = copy.deepcopy(data)
    requests = -(-jobs // 2)
    later["jobs_done"] += jobs
    later["requests"] += requests
    later["uptime_s"] = round(later["uptime_s"] + seconds, 3)
    later["request_time_s"] = round(later["request_time_s"] + seconds, 4)
    engine = later["engines"][0]
    engine["requests"] += requests
    engine["jobs"] += jobs
    engine["busy_s"] = round(engine["busy_s"] + seconds, 4)
    engine["uptime_s"] = round(engine["uptime_s"] + seconds, 4)
    for other in later["engines"][1:]:
        other["idle_s"] = round(other["idle_s"] + seconds, 4)
        other["uptime_s"] = round(other["uptime_s"] + seconds, 4)
    later["idle_s"] = round(sum(e["idle_s"] for e in later["engines"]), 4)
    process = next(p for p in later["processes"] if p.get("state") == "running")
    process["requests"] += requests
    process["jobs"] += jobs
    process["tokens"] += 121 * jobs
    return later
