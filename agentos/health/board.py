"""The runtime's side: each daemon's row of ``agent_health``, and the alerts its runs set off.

A runtime registers its daemons (perpetual and scheduled lanes) when it starts; a row
carries on from the one an earlier process left (failures in a row, last success, runs),
so a daemon restarted by hand or by cron keeps its history. Every heartbeat of the
runtime (:data:`agentos.store.owners.HEARTBEAT_INTERVAL_S`) writes each row's
``heartbeat_at`` and ``next_fire_at``; every run that ends writes how. Rows are written
whole through the store's writer, so nothing here waits for the disk.

Alerts: the run that makes an agent's failures in a row reach a rule's ``failures`` sets
it off (once per streak: the next success ends the streak); a fire skipped because the
previous run still went on, or missed with ``catch_up: false``, sets off ``missed``.
Deliveries run as tasks of their own and are waited for (up to their timeouts) when the
runtime stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agentos.health.alerts import Alert, Alerts
from agentos.store import Store
from agentos.store.writer import Insert

if TYPE_CHECKING:
    from agentos.scheduler.display import RunOutcome
    from agentos.scheduler.lifecycle import AgentLane

DAEMONS = ("perpetual", "scheduled")


class HealthBoard:
    """The ``agent_health`` rows of one runtime's daemons, and their alerts."""

    def __init__(self, store: Store, owner: str, alerts: Alerts) -> None:
        self.store = store
        self.owner = owner
        self.alerts = alerts
        self.rows: dict[str, dict[str, Any]] = {}
        self.sending: set[asyncio.Task[Any]] = set()

    def register(self, lanes: Iterable[AgentLane]) -> None:
        """Start a row for each daemon among ``lanes``, from the last one it had."""
        now = time.time()
        for lane in lanes:
            cycle = lane.spec.life_cycle.type
            if cycle not in DAEMONS or lane.spec.name in self.rows:
                continue
            found = self.store.db.execute(
                "SELECT last_run_id, last_status, last_error, last_success_at, "
                "last_failure_at, consecutive_failures, runs FROM agent_health WHERE agent = ?",
                [lane.spec.name],
            ).fetchone()
            before = dict(
                zip(
                    (
                        "last_run_id",
                        "last_status",
                        "last_error",
                        "last_success_at",
                        "last_failure_at",
                        "consecutive_failures",
                        "runs",
                    ),
                    found or (None, None, None, None, None, 0, 0),
                    strict=True,
                )
            )
            row = {
                "agent": lane.spec.name,
                "owner": self.owner,
                "life_cycle": cycle,
                "heartbeat_at": now,
                "next_fire_at": lane.next_fire_at,
                **before,
                "consecutive_failures": before["consecutive_failures"] or 0,
                "runs": before["runs"] or 0,
                "updated_at": now,
            }
            self.rows[lane.spec.name] = row
            self._write(row)

    def beat(self, lanes: Iterable[AgentLane]) -> None:
        """The heartbeat of every daemon of ``lanes`` (with its next fire)."""
        now = time.time()
        for lane in lanes:
            row = self.rows.get(lane.spec.name)
            if row is None:
                continue
            row["heartbeat_at"] = row["updated_at"] = now
            if lane.next_fire_at is not None:  # a lane that is done keeps the last one
                row["next_fire_at"] = lane.next_fire_at
            self._write(row)

    def run_finished(self, lane: AgentLane, outcome: RunOutcome) -> None:
        row = self.rows.get(lane.spec.name)
        if row is None:
            return
        now = time.time()
        row["runs"] += 1
        row["last_run_id"] = outcome.run_id or row["last_run_id"]
        row["last_status"] = outcome.status
        row["heartbeat_at"] = row["updated_at"] = now
        if lane.next_fire_at is not None:
            row["next_fire_at"] = lane.next_fire_at
        if outcome.status == "succeeded":
            row["last_success_at"] = now
            row["consecutive_failures"] = 0
            row["last_error"] = None
        else:
            row["last_failure_at"] = now
            row["consecutive_failures"] += 1
            row["last_error"] = outcome.error
        self._write(row)
        streak = row["consecutive_failures"]
        if not streak:
            return
        alert = Alert(
            agent=lane.spec.name,
            kind="failures",
            message=(
                f"{lane.spec.name} failed {streak} run(s) in a row; the last one, "
                f"{outcome.run_id or '-'}: {outcome.error or outcome.status}"
            ),
            ref=f"failures:{outcome.run_id}",
            run_id=outcome.run_id or None,
            details={"failures_in_a_row": streak, "error": outcome.error},
        )
        rules = [r for r in self.alerts.rules_for(alert) if r.failures == streak]
        if rules:
            self._send(alert, rules)

    def fire_missed(self, lane: AgentLane, label: str, fire_time: float, why: str) -> None:
        """A fire of ``lane`` was not run (``why``)."""
        alert = Alert(
            agent=lane.spec.name,
            kind="missed",
            message=f"{lane.spec.name} missed its fire at {label}: {why}",
            ref=f"missed:{fire_time}",
            details={"fire": label, "reason": why},
        )
        rules = self.alerts.rules_for(alert)
        if rules:
            self._send(alert, rules)

    async def close(self, lanes: Iterable[AgentLane]) -> None:
        """The last heartbeat, and the deliveries still going (up to their timeouts)."""
        self.beat(lanes)
        if self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)

    def _send(self, alert: Alert, rules: list[Any]) -> None:
        task = asyncio.create_task(self.alerts.send(alert, rules), name=f"alert-{alert.agent}")
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    def _write(self, row: dict[str, Any]) -> None:
        self.store.submit(Insert("agent_health", dict(row), replace=True))
