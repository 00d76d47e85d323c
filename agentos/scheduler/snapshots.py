"""The running process's accounting, written to the store about twice a second.

``agentos top`` (another process) reads these rows instead of talking to the runtime, so
it can attach to any number of runtimes on one database and still show the last state
when nothing runs. One row per runtime in ``runtime_snapshots``, replaced in place, so the
table stays small however long a runtime lives; the write goes through the store's writer
and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from agentos.errors import StoreError
from agentos.router.router import Router
from agentos.store import Store, queries
from agentos.store.writer import Execute, Insert
from agentos.usage.pricing import Pricing
from agentos.usage.report import cost_today

SNAPSHOT_INTERVAL_S = 0.5
COST_EVERY_S = 5.0
"""How often today's cost is counted from the record for the snapshot (in a thread)."""
KEEP_FINISHED_S = 24 * 3600
"""Finished runtimes' last snapshots are kept this long (the newest one always), so that
``top`` can show the last state while a cron-driven setup does not pile up rows."""


class SnapshotWriter:
    """Writes ``router.snapshot()`` plus the agents' run counters for one runtime."""

    def __init__(
        self,
        store: Store,
        router: Router,
        processes: Callable[[], dict[str, dict[str, Any]]],
        *,
        interval_s: float = SNAPSHOT_INTERVAL_S,
        pricing: Pricing | None = None,
    ) -> None:
        """``pricing``: the runtime's prices; with them the snapshot carries today's cost
        (:func:`agentos.usage.report.cost_today`), counted every :data:`COST_EVERY_S`."""
        self.store = store
        self.router = router
        self.processes = processes
        self.interval_s = interval_s
        self.runtime_id = queries.new_id()
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.writes = 0
        self.pricing = pricing
        self.nodes: Callable[[], list[dict[str, Any]]] | None = None
        """On a Ray cluster: the node table (``nodes`` in the snapshot: per node ``node``,
        ``address``, ``alive``, ``cpus``, ``runs`` in flight), from the executor."""
        self.router_snapshot: Callable[[], dict[str, Any] | None] | None = None
        """On a Ray cluster: the router actor's last snapshot, instead of ``router``'s."""
        self.cost: dict[str, Any] | None = None
        self._costing: asyncio.Task[None] | None = None
        self._cost_at = -COST_EVERY_S

    def data(self, *, finished: bool = False) -> dict[str, Any]:
        snap = self.router_snapshot() if self.router_snapshot is not None else None
        if snap is None:
            snap = self.router.snapshot()
        agents = self.processes()
        merged: dict[str, dict[str, Any]] = {}
        for proc in snap["processes"]:
            if proc["name"]:
                merged[proc["name"]] = dict(proc)
        for name, counters in agents.items():
            merged.setdefault(name, {"name": name}).update(counters)
        snap["processes"] = list(merged.values())
        snap["finished"] = finished
        if self.nodes is not None:
            snap["nodes"] = self.nodes()
        if self.cost is not None:
            snap["cost"] = self.cost
        return snap

    def write(self, *, finished: bool = False) -> None:
        now = time.time()
        self.store.submit(
            Insert(
                "runtime_snapshots",
                {
                    "runtime_id": self.runtime_id,
                    "pid": self.pid,
                    "host": self.host,
                    "started_at": self.started_at,
                    "updated_at": now,
                    "data": json.dumps(self.data(finished=finished), default=str),
                },
                replace=True,
            )
        )
        self.writes += 1

    def _count_cost(self) -> None:
        """Start counting today's cost when it is due and no count is under way."""
        now = time.monotonic()
        if self.pricing is None or now - self._cost_at < COST_EVERY_S:
            return
        if self._costing is not None and not self._costing.done():
            return
        self._cost_at = now
        self._costing = asyncio.create_task(self._cost(self.pricing), name="snapshot-cost")

    async def _cost(self, pricing: Pricing) -> None:
        with contextlib.suppress(StoreError, sqlite3.Error):
            self.cost = await asyncio.to_thread(cost_today, self.store.path, pricing)

    def forget_old_runtimes(self) -> None:
        """Drop the snapshots of runtimes that finished long ago (all but the newest)."""
        self.store.submit(
            Execute(
                "DELETE FROM runtime_snapshots WHERE updated_at < ? "
                "AND json_extract(data, '$.finished') = 1 "
                "AND runtime_id != (SELECT runtime_id FROM runtime_snapshots "
                "ORDER BY updated_at DESC LIMIT 1)",
                [time.time() - KEEP_FINISHED_S],
            )
        )

    async def run(self) -> None:
        """Write every ``interval_s`` until cancelled, then once more, marked finished.

        Ends quietly when the store refuses writes: the runner reports that failure."""
        try:
            self.forget_old_runtimes()
            while True:
                self._count_cost()
                self.write()
                await asyncio.sleep(self.interval_s)
        except StoreError:
            return
        finally:
            if self._costing is not None:
                self._costing.cancel()
            with contextlib.suppress(StoreError):
                self.write(finished=True)
