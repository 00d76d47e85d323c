"""What the dashboard reads from the store, turned into plain values off the UI thread.

``agentos top`` never talks to a runtime: every running agentos writes its accounting to
``runtime_snapshots`` about twice a second (:mod:`agentos.scheduler.snapshots`; with
``--cluster``, the Ray cluster's nodes too), and this module reads those rows, the recent
``runs`` (a ``running`` one whose process is provably gone shows as ``crashed``,
:func:`agentos.store.owners.crashed_view`; the dashboard only reads, the next ``agentos
run`` or ``agentos runs`` writes it) and the state of the commands the dashboard sent.
That is why it works from another terminal, shows several runtimes on one database
together, and still shows the last state once nothing runs.

A :class:`StoreReader` holds one read-only connection and is used by one thread at a time
(the app's refresh worker); everything it returns is a frozen dataclass, so a value can be
handed to the UI thread without copying. Every figure comes from a row; nothing here makes
one up.

A runtime is *attached* when its snapshot is fresher than :data:`ATTACHED_WITHIN_S` and
not marked finished. With runtimes attached, only those are shown (their global figures
summed); with none, the one seen last is shown as it was.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agentos.errors import StoreError
from agentos.store import owners, queries
from agentos.store.db import Store
from agentos.tui.rows import (
    CommandState,
    EngineRow,
    NodeRow,
    ProcessRow,
    RuntimeState,
    TopView,
    Totals,
    as_float,
    as_int,
    as_opt_float,
    as_opt_int,
    run_row,
)
from agentos.tui.timeline_data import PAGE_EVENTS, Timeline, read_timeline

ATTACHED_WITHIN_S: Final = 3.0
"""A snapshot older than this means its runtime is gone (it writes every 0.5 s)."""

RECENT_RUNS: Final = 50
"""How many runs the runs table lists, newest first."""

SNAPSHOT_ROWS: Final = 64
"""How many of the most recently updated runtime snapshots one read considers."""

THROUGHPUT_SAMPLES: Final = 300
"""How many throughput samples the dashboard keeps (five minutes at one read a second)."""


# -- the accounting view ----------------------------------------------------------------


def _snapshot_data(raw: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _totals(datas: Sequence[dict[str, Any]]) -> Totals:
    return Totals(
        jobs_done=sum(as_int(d.get("jobs_done")) for d in datas),
        jobs_failed=sum(as_int(d.get("jobs_failed")) for d in datas),
        cache_hits=sum(as_int(d.get("cache_hits")) for d in datas),
        requests=sum(as_int(d.get("requests")) for d in datas),
        request_time_s=sum(as_float(d.get("request_time_s")) for d in datas),
        idle_s=sum(as_float(d.get("idle_s")) for d in datas),
        waiting=sum(as_int(d.get("waiting")) for d in datas),
        intake=sum(as_int(d.get("intake")) for d in datas),
        retrying=sum(as_int(d.get("retrying")) for d in datas),
        planning_s=sum(as_float(d.get("planning_s")) for d in datas),
        uptime_s=max((as_float(d.get("uptime_s")) for d in datas), default=0.0),
        cost_today=_cost_total(datas),
    )


def _cost_total(datas: Sequence[dict[str, Any]]) -> str:
    """Today's cost from the last runtime shown that counted it (every runtime counts the
    whole database's day, so they are not summed)."""
    for data in reversed(datas):
        cost = data.get("cost")
        if isinstance(cost, dict) and "total" in cost:
            total = cost.get("total")
            if total is None:
                return "no price"
            unpriced = as_int(cost.get("unpriced_calls"))
            return f"{total} {cost.get('currency') or ''}".strip() + ("*" if unpriced else "")
    return "-"


def _process_cost(data: dict[str, Any], name: str) -> str:
    cost = data.get("cost")
    if not isinstance(cost, dict) or not isinstance(cost.get("by_process"), dict):
        return "-"
    by_process = cost["by_process"]
    if name not in by_process:
        return "0"
    shown = by_process[name]
    return "no price" if shown is None else str(shown)


def _engine_rows(runtime: RuntimeState, data: dict[str, Any], prefix: str) -> list[EngineRow]:
    rows = []
    for e in data.get("engines") or []:
        if not isinstance(e, dict):
            continue
        name = str(e.get("name") or "?")
        max_requests = as_int(e.get("max_requests"))
        rows.append(
            EngineRow(
                key=f"{runtime.runtime_id}/{name}",
                label=prefix + name,
                endpoint=str(e.get("endpoint") or ""),
                state=str(e.get("state") or "?"),
                max_requests=max_requests,
                limit=as_int(e.get("limit", max_requests)),
                max_batch_size=as_int(e.get("max_batch_size")),
                requests=as_int(e.get("requests")),
                jobs=as_int(e.get("jobs")),
                busy_s=as_float(e.get("busy_s")),
                idle_s=as_float(e.get("idle_s")),
                wasted_s=as_float(e.get("wasted_s")),
                failed_requests=as_int(e.get("failed_requests")),
                failed_jobs=as_int(e.get("failed_jobs")),
                circuit=str(e.get("circuit") or "closed"),
                p50_s=as_opt_float(e.get("p50_s")),
                p99_s=as_opt_float(e.get("p99_s")),
                tokens_per_s=as_float(e.get("tokens_per_s")),
                cpu_pct=as_opt_float(e.get("cpu_pct")),
                rss_bytes=as_opt_int(e.get("rss_bytes")),
            )
        )
    return rows


def _process_rows(runtime: RuntimeState, data: dict[str, Any], prefix: str) -> list[ProcessRow]:
    rows = []
    for p in data.get("processes") or []:
        if not isinstance(p, dict) or not p.get("name"):
            continue
        name = str(p["name"])
        state = p.get("state")
        if state is None:
            state = "running" if as_int(p.get("queued")) else "idle"
        if state == "paused" and p.get("paused_by"):
            state = "paused (budget)"
        rows.append(
            ProcessRow(
                key=f"{runtime.runtime_id}/{name}",
                label=prefix + name,
                name=name,
                kind=str(p.get("kind") or "-"),
                state=str(state),
                runs=as_opt_int(p.get("runs")),
                successes=as_opt_int(p.get("successes")),
                failures=as_opt_int(p.get("failures")),
                requests=as_int(p.get("requests")),
                jobs=as_int(p.get("jobs")),
                tokens=as_int(p.get("tokens")),
                avg_wait_s=as_float(p.get("avg_wait_s")),
                run_id=str(p["run_id"]) if p.get("run_id") else None,
                cost=_process_cost(data, name),
                wait_s=as_float(p.get("wait_s")),
                p50_s=as_opt_float(p.get("p50_s")),
                p99_s=as_opt_float(p.get("p99_s")),
                tokens_per_s=as_float(p.get("tokens_per_s")),
            )
        )
    return rows


def _node_rows(runtime: RuntimeState, data: dict[str, Any], prefix: str) -> list[NodeRow]:
    """The snapshot's ``nodes`` (a list of ``{"node", "address", "alive", "cpus",
    "runs"}``, written by a runtime on a Ray cluster); none when it has no such key."""
    rows = []
    for n in data.get("nodes") or []:
        if not isinstance(n, dict) or not n.get("node"):
            continue
        node = str(n["node"])
        rows.append(
            NodeRow(
                key=f"{runtime.runtime_id}/{node}",
                label=prefix + node,
                address=str(n.get("address") or ""),
                alive=bool(n.get("alive")),
                cpus=as_float(n.get("cpus")),
                runs=as_int(n.get("runs")),
            )
        )
    return rows


def build_view(
    now: float,
    snapshot_rows: Iterable[dict[str, Any]],
    run_rows: Iterable[dict[str, Any]] = (),
    done_commands: Iterable[CommandState] = (),
) -> TopView:
    """The view of ``runtime_snapshots`` and ``runs`` rows at ``now`` (pure)."""
    parsed: list[tuple[RuntimeState, dict[str, Any]]] = []
    for row in snapshot_rows:
        data = _snapshot_data(row.get("data"))
        if data is None:
            continue
        updated_at = as_float(row.get("updated_at"))
        finished = bool(data.get("finished"))
        runtime = RuntimeState(
            runtime_id=str(row["runtime_id"]),
            pid=as_int(row.get("pid")),
            host=str(row.get("host") or ""),
            started_at=as_float(row.get("started_at")),
            updated_at=updated_at,
            attached=not finished and now - updated_at < ATTACHED_WITHIN_S,
            finished=finished,
            jobs_done=as_int(data.get("jobs_done")),
            uptime_s=as_float(data.get("uptime_s")),
        )
        parsed.append((runtime, data))
    shown = [(r, d) for r, d in parsed if r.attached]
    if not shown and parsed:
        shown = [max(parsed, key=lambda rd: rd[0].updated_at)]
    shown.sort(key=lambda rd: (rd[0].started_at, rd[0].runtime_id))
    engines: list[EngineRow] = []
    processes: list[ProcessRow] = []
    nodes: list[NodeRow] = []
    for runtime, data in shown:
        prefix = f"{runtime.pid}/" if len(shown) > 1 else ""
        engines.extend(_engine_rows(runtime, data, prefix))
        processes.extend(_process_rows(runtime, data, prefix))
        nodes.extend(_node_rows(runtime, data, prefix))
    return TopView(
        now=now,
        runtimes=tuple(r for r, _ in shown),
        totals=_totals([d for _, d in shown]) if shown else None,
        engines=tuple(engines),
        processes=tuple(processes),
        runs=tuple(run_row(r) for r in run_rows),
        nodes=tuple(nodes),
        done_commands=tuple(done_commands),
    )


class StoreReader:
    """Reads the dashboard's view from the database at ``db_path``, read-only.

    Opens the database lazily and again after a failure, so the dashboard can be started
    before the first ``agentos run`` creates the database and simply waits for it. Not
    thread-safe: use it from one thread at a time.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path).expanduser()
        self._store: Store | None = None
        # Held while reading and closing, so that closing from the UI thread (on exit)
        # waits for a read in flight instead of closing its connection under it.
        self._lock = threading.Lock()

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store(self.path, readonly=True)
        return self._store

    def _forget(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with contextlib.suppress(StoreError):
                store.close()

    def read(self, now: float, watch: Sequence[int] = ()) -> TopView:
        """The view at ``now``; ``watch``: ids of sent commands to report once done.

        Never raises for a missing, locked or too old database: the view says why instead.
        """
        with self._lock:
            return self._read(now, watch)

    def _read(self, now: float, watch: Sequence[int]) -> TopView:
        try:
            store = self._open()
            snapshots = list(
                store.db.query(
                    "SELECT runtime_id, pid, host, started_at, updated_at, data "
                    "FROM runtime_snapshots ORDER BY updated_at DESC LIMIT ?",
                    [SNAPSHOT_ROWS],
                )
            )
            runs = owners.crashed_view(store, queries.list_runs(store, limit=RECENT_RUNS), now=now)
            done = self._done_commands(store, watch)
        except StoreError as exc:
            self._forget()
            return TopView(now=now, problem=exc.message)
        except sqlite3.Error as exc:
            self._forget()
            return TopView(now=now, problem=f"cannot read the database {self.path}: {exc}")
        return build_view(now, snapshots, runs, done)

    @staticmethod
    def _done_commands(store: Store, watch: Sequence[int]) -> list[CommandState]:
        if not watch:
            return []
        marks = ",".join("?" * len(watch))
        rows = store.db.query(
            "SELECT id, command, target, done_at, done_by FROM control "
            f"WHERE done_at IS NOT NULL AND id IN ({marks}) ORDER BY id",
            list(watch),
        )
        return [CommandState(**row) for row in rows]

    def timeline(
        self, run_id: str, *, after: Timeline | None = None, limit: int | None = PAGE_EVENTS
    ) -> Timeline | None:
        """A page of the timeline of run ``run_id`` (see :func:`read_timeline`); raises
        StoreError."""
        with self._lock:
            try:
                return read_timeline(self._open(), run_id, after=after, limit=limit)
            except sqlite3.Error as exc:
                self._forget()
                raise StoreError(f"cannot read the database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._forget()


# -- throughput ------------------------------------------------------------------------


@dataclass
class ThroughputMeter:
    """Jobs done per second, from successive views the dashboard has read.

    Each runtime's rate is the change of its ``jobs_done`` over the change of its
    snapshot's ``updated_at`` (the runtime's clock, not the reader's, so a late read does
    not make a dip); the sample of one read is the sum over the attached runtimes. A read
    that finds nothing attached adds no sample, so the line keeps its last shape when
    nothing runs. At most :data:`THROUGHPUT_SAMPLES` samples are kept.
    """

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=THROUGHPUT_SAMPLES))
    _last: dict[str, tuple[float, int, float]] = field(default_factory=dict)
    """Per runtime id: updated_at, jobs_done and the rate computed from them."""

    def add(self, view: TopView) -> None:
        total, known = 0.0, False
        last: dict[str, tuple[float, int, float]] = {}
        for runtime in view.attached:
            previous = self._last.get(runtime.runtime_id)
            rate = 0.0
            if previous is not None:
                known = True
                updated_at, jobs_done, rate = previous
                if runtime.updated_at > updated_at:
                    rate = max(0, runtime.jobs_done - jobs_done) / (runtime.updated_at - updated_at)
            last[runtime.runtime_id] = (runtime.updated_at, runtime.jobs_done, rate)
            total += rate
        if view.attached:
            self._last = last
        if known:
            self.samples.append(total)

    @property
    def current(self) -> float | None:
        return self.samples[-1] if self.samples else None
