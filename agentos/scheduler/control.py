"""Commands from outside (``agentos top``), picked up from the store's ``control`` table.

The dashboard is another process, so it cannot call into the runtime; it inserts a row
(``pause``/``resume`` an agent, ``cancel`` a run) and every runtime on the database polls
for rows it has not seen, about twice a second. A runtime carries out only the commands
that name its own agents or runs, and only those created after it started (so a stale
``pause`` never reaches a later run), then marks them done with its runtime id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

from agentos.errors import StoreError
from agentos.store import Store
from agentos.store.writer import Update

POLL_INTERVAL_S = 0.5
CLOCK_SLACK_S = 1.0
"""Commands up to this long before the runtime started still count (clock jitter)."""


class Controllable(Protocol):
    """A run as the control poller sees it (``PromptAgentRun``)."""

    run_id: str

    @property
    def agent(self) -> str: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def cancel(self, reason: str) -> None: ...


class ControlPoller:
    def __init__(
        self,
        store: Store,
        runs: Sequence[Controllable],
        *,
        runtime_id: str,
        started_at: float,
        interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.store = store
        self.runs = runs
        self.runtime_id = runtime_id
        self.since = started_at - CLOCK_SLACK_S
        self.interval_s = interval_s
        self.seen: set[int] = set()
        self.applied: list[dict[str, Any]] = []

    def pending(self) -> list[dict[str, Any]]:
        rows = self.store.db.execute(
            "select id, command, target, args from control "
            "where done_at is null and created_at >= ? order by id",
            [self.since],
        ).fetchall()
        return [
            {"id": r[0], "command": r[1], "target": r[2], "args": json.loads(r[3] or "null")}
            for r in rows
            if r[0] not in self.seen
        ]

    def apply(self, command: dict[str, Any]) -> bool:
        """Carry out one command if it names something of this runtime."""
        name, target = command["command"], command["target"]
        if name in ("pause", "resume"):
            runs = [r for r in self.runs if r.agent == target]
            for run in runs:
                run.pause() if name == "pause" else run.resume()
            return bool(runs)
        if name == "cancel":
            runs = [r for r in self.runs if r.run_id and r.run_id == target]
            for run in runs:
                run.cancel("cancelled from agentos top")
            return bool(runs)
        return False

    def poll_once(self) -> int:
        done = 0
        for command in self.pending():
            self.seen.add(command["id"])
            if self.apply(command):
                self.store.submit(
                    Update(
                        "control",
                        command["id"],
                        {"done_at": time.time(), "done_by": self.runtime_id},
                    )
                )
                self.applied.append(command)
                done += 1
        return done

    async def run(self) -> None:
        """Poll until cancelled; ends quietly when the store refuses writes (the runner
        reports that failure)."""
        while True:
            try:
                self.poll_once()
            except StoreError:
                return
            await asyncio.sleep(self.interval_s)
