"""The task agents of ``benchmarks/cluster.py`` (``run: cluster_bench_tasks:...``).

``agentos run`` imports this file from the folder of the benchmark's agents file (the
benchmark copies it there), on the driver and on Ray workers alike: a local cluster
shares the filesystem.
"""

from __future__ import annotations

from typing import Any


def feed(n: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` sink items, one per run of the reader: ``{"id": "<prefix>-<i>", "i": i}``."""
    return [{"id": f"{prefix}-{i}", "i": i} for i in range(n)]


def spin(turns: int) -> int:
    """Pure-Python CPU work: ``turns`` loop turns (holds the GIL throughout)."""
    total = 0
    for k in range(turns):
        total = (total + k * k) % 1_000_003
    return total


def crunch(turns: int, context: Any) -> dict[str, Any]:
    """A CPU-bound task run: the same ``turns`` of work wherever it runs."""
    return {"id": str(context.variables.get("id", context.run_id)), "sum": spin(turns)}
