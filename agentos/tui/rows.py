"""The values the dashboard shows, as plain frozen dataclasses.

They are built off the UI thread (:mod:`agentos.tui.data`, :mod:`agentos.tui.timeline_data`)
and handed to it in a message; being frozen, they need no copying and no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def as_int(value: Any) -> int:
    """A counter from a JSON value; 0 where a snapshot lacks it (an older runtime)."""
    return int(value) if isinstance(value, int | float) else 0


def as_float(value: Any) -> float:
    """A time or rate from a JSON value; 0.0 where a snapshot lacks it."""
    return float(value) if isinstance(value, int | float) else 0.0


def as_opt_float(value: Any) -> float | None:
    """A figure that may be absent (no latency before the first answer): None then."""
    return float(value) if isinstance(value, int | float) else None


def as_opt_int(value: Any) -> int | None:
    """A counter that may be absent (a system process has no runs): None then."""
    return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """One runtime (an ``agentos run`` process) as its last snapshot shows it."""

    runtime_id: str
    pid: int
    host: str
    started_at: float
    updated_at: float
    attached: bool
    finished: bool
    jobs_done: int
    uptime_s: float


@dataclass(frozen=True, slots=True)
class Totals:
    """The global figures, summed over the runtimes shown (uptime: the longest)."""

    jobs_done: int
    jobs_failed: int
    cache_hits: int
    requests: int
    request_time_s: float
    idle_s: float
    waiting: int
    intake: int
    retrying: int
    planning_s: float
    uptime_s: float
    cost_today: str = "-"
    """Today's cost as shown (``0.001234 USD``, ``no price``), from the freshest
    snapshot that carries one; ``-`` when none does (no ``pricing:``-aware runtime)."""

    @property
    def jobs_per_request(self) -> float:
        """Jobs answered by an engine per request made (above 1 means batching)."""
        return (self.jobs_done - self.cache_hits) / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class EngineRow:
    """One engine of one runtime."""

    key: str
    label: str
    """The engine's name, prefixed with its runtime's pid when several runtimes show."""
    endpoint: str
    state: str
    max_requests: int
    limit: int
    """The concurrency the router allows now (below ``max_requests`` after a 429)."""
    max_batch_size: int
    requests: int
    jobs: int
    busy_s: float
    idle_s: float
    wasted_s: float
    failed_requests: int
    failed_jobs: int
    circuit: str
    p50_s: float | None = None
    """Median request latency since the runtime started (None before an answer)."""
    p99_s: float | None = None
    tokens_per_s: float = 0.0
    """Prompt and completion tokens answered per second, over the last ten seconds."""
    cpu_pct: float | None = None
    """CPU of the model server agentos started (100 = one core); None for other engines."""
    rss_bytes: int | None = None
    """Resident memory of the model server agentos started; None for other engines."""


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process (an agent or a system process) of one runtime."""

    key: str
    label: str
    """The process's name, prefixed with its runtime's pid when several runtimes show."""
    name: str
    kind: str
    state: str
    runs: int | None
    successes: int | None
    failures: int | None
    requests: int
    jobs: int
    tokens: int
    avg_wait_s: float
    run_id: str | None
    """Its latest run, if it has runs."""
    cost: str = "-"
    """Its cost today as shown (``no price`` when none of its calls has one)."""
    wait_s: float = 0.0
    """How long its oldest job still in the router's queue has waited (0: none waits)."""
    p50_s: float | None = None
    """Median time from a job's submission to its answer (queue wait included)."""
    p99_s: float | None = None
    tokens_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node of the Ray cluster a runtime runs on (``agentos run --cluster``)."""

    key: str
    label: str
    """The node's short id, prefixed with its runtime's pid when several runtimes show."""
    address: str
    alive: bool
    cpus: float
    runs: int
    """Runs in flight on it."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of ``runs``."""

    id: str
    agent: str
    status: str
    successes: int
    wanted: int | None
    attempts: int
    started_at: float
    finished_at: float | None
    error: str | None

    def took_s(self, now: float) -> float:
        """How long it ran (until ``now`` while it still runs)."""
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)


@dataclass(frozen=True, slots=True)
class CommandState:
    """A control command the dashboard sent that a runtime has carried out."""

    id: int
    command: str
    target: str | None
    done_at: float
    done_by: str | None


@dataclass(frozen=True, slots=True)
class TopView:
    """Everything one refresh shows, read at ``now``."""

    now: float
    runtimes: tuple[RuntimeState, ...] = ()
    """The runtimes shown: the attached ones, or else the one seen last."""
    totals: Totals | None = None
    engines: tuple[EngineRow, ...] = ()
    processes: tuple[ProcessRow, ...] = ()
    runs: tuple[RunRow, ...] = ()
    nodes: tuple[NodeRow, ...] = ()
    """The cluster's nodes, when a runtime shown runs on one; empty otherwise."""
    done_commands: tuple[CommandState, ...] = ()
    problem: str | None = None
    """Why nothing could be read (no database yet, an older schema …), else None."""

    @property
    def attached(self) -> tuple[RuntimeState, ...]:
        return tuple(r for r in self.runtimes if r.attached)

    @property
    def last_seen(self) -> float | None:
        return max((r.updated_at for r in self.runtimes), default=None)


def run_row(row: dict[str, Any]) -> RunRow:
    """A :class:`RunRow` from a ``runs`` row (as :func:`queries.list_runs` returns it)."""
    return RunRow(
        id=row["id"],
        agent=row["agent"],
        status=row["status"],
        successes=as_int(row.get("successes")),
        wanted=as_opt_int(row.get("wanted")),
        attempts=as_int(row.get("attempts")),
        started_at=as_float(row.get("started_at")),
        finished_at=row.get("finished_at"),
        error=row.get("error"),
    )
