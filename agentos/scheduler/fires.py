"""Fires: the moments at which a perpetual or scheduled agent is due to run.

A *fire series* says when an agent fires — :class:`CronSeries` at the times of a cron
expression read in a time zone, :class:`IntervalSeries` every N seconds from a start —
and answers the two questions a scheduler asks: which fire is the latest one due now,
and when is the next.

Each cron fire has an idempotency key, the agent's name and the fire time in the
agent's zone (``daily-report@2026-11-21T09:00:00+01:00``). :class:`FireLedger` claims
a fire by inserting its key into ``schedule_fires``, whose UNIQUE index on ``key`` lets
exactly one claim win across every process on the database: a daemon and a cron-driven
``agentos run --once`` that fire the same slot run it once, whichever comes first.
A claimed fire is never run again, also when the process that claimed it died mid-run
(at most once per slot; once the owner is known to be gone, its row reads ``crashed``:
:mod:`agentos.store.owners`). Fires a scheduler decides not to run
(an overlap it skips, a missed fire with ``catch_up: false``) are recorded too, so the
latest fire time in the table is what a restarted daemon has seen: fires after it are
the ones it missed.

Interval fires are not recorded: they count from the runtime's start, so no two
processes share one and a restart has nothing to catch up on.

:func:`due_once` is the decision of ``agentos run --once`` for a scheduled agent (run the
latest due fire, or why not), shared by the runtime and the look before engines start.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from croniter import CroniterBadDateError, croniter

from agentos.errors import StoreError
from agentos.store import Store
from agentos.store.writer import BUSY_TIMEOUT_MS, Execute

if TYPE_CHECKING:
    from agentos.spec.agents import AgentSpec

GRACE_S = 60.0
"""How late a fire may start and still count as on time: cron's resolution is a minute,
and a process that cron or launchd starts needs a moment to come up. A fire found later
than this was *missed* (downtime, a suspended machine): ``catch_up`` decides whether it
runs."""

COUNT_CAP = 10_000
"""Missed fires are counted (for the log line) up to this many."""

FireStatus = str
"""``running``, ``queued``, ``succeeded``, ``failed``, ``cancelled``, ``crashed`` (its
runtime died while it ran or waited), ``skipped-overlap``
(a fire while the previous run still went, overlap ``skip``) or ``skipped-missed`` (a fire
found late with ``catch_up: false``)."""


class FireSeries(Protocol):
    """When an agent fires."""

    def latest_at_or_before(self, when: float) -> float | None:
        """The latest fire time ``<= when``; ``None`` when there is none."""
        ...

    def next_after(self, when: float) -> float:
        """The first fire time ``> when``."""
        ...

    def count_between(self, after: float, before: float) -> int:
        """Fire times strictly between ``after`` and ``before`` (up to COUNT_CAP)."""
        ...

    def label(self, when: float) -> str:
        """The fire time as people and idempotency keys write it (ISO 8601, with offset)."""
        ...


def local_zone() -> tzinfo:
    """The machine's time zone, with its daylight-saving rules where they can be found.

    ``TZ`` when it names a zone, else ``/etc/localtime``, else the current UTC offset
    (a fixed offset is wrong across a DST change, which is why it is the last resort).
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    localtime = Path("/etc/localtime")
    if localtime.exists():
        try:
            with localtime.open("rb") as handle:
                return zoneinfo.ZoneInfo.from_file(handle, key="localtime")
        except (OSError, ValueError):
            pass
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def zone_named(name: str | None) -> tzinfo:
    """The IANA zone ``name``, or the machine's zone when ``name`` is unset."""
    return zoneinfo.ZoneInfo(name) if name else local_zone()


class CronSeries:
    """The times of a cron expression, read in ``zone``.

    Daylight saving is handled as cron does: a time in the hour that a spring change skips
    fires once, when the gap ends; in the hour that an autumn change repeats, an expression
    with a fixed hour (``30 2 * * *``) fires once, at the first occurrence, and one whose
    hour field is a wildcard (``30 * * * *``, ``*/2``) fires at both.
    """

    def __init__(self, expression: str, zone: tzinfo) -> None:
        self.expression = expression
        self.zone = zone
        fields = expression.split()
        self._every_hour = len(fields) >= 2 and fields[1].startswith("*")

    def _at(self, when: float) -> datetime:
        return datetime.fromtimestamp(when, self.zone)

    def _repeat(self, when: float) -> bool:
        """Whether ``when`` is the second occurrence of its wall time and is not fired."""
        return not self._every_hour and self._at(when).fold == 1

    def latest_at_or_before(self, when: float) -> float | None:
        # croniter's get_prev is strictly before its start; a microsecond on includes `when`
        iterator = croniter(self.expression, self._at(when) + timedelta(microseconds=1))
        try:
            found = iterator.get_prev(datetime).timestamp()
            while self._repeat(found):
                found = iterator.get_prev(datetime).timestamp()
        except CroniterBadDateError:
            return None
        return float(found)

    def next_after(self, when: float) -> float:
        iterator = croniter(self.expression, self._at(when))
        found = iterator.get_next(datetime).timestamp()
        while self._repeat(found):
            found = iterator.get_next(datetime).timestamp()
        return float(found)

    def count_between(self, after: float, before: float) -> int:
        count = 0
        iterator = croniter(self.expression, self._at(after))
        while count < COUNT_CAP:
            found = iterator.get_next(datetime).timestamp()
            if found >= before:
                break
            count += not self._repeat(found)
        return count

    def label(self, when: float) -> str:
        return self._at(when).isoformat()


class IntervalSeries:
    """Every ``every_s`` seconds from ``start`` (the first fire is ``start`` itself)."""

    def __init__(self, start: float, every_s: float) -> None:
        self.start = start
        self.every_s = every_s

    def _index(self, when: float) -> int:
        return int((when - self.start) // self.every_s)

    def latest_at_or_before(self, when: float) -> float | None:
        if when < self.start:
            return None
        return self.start + self._index(when) * self.every_s

    def next_after(self, when: float) -> float:
        if when < self.start:
            return self.start
        return self.start + (self._index(when) + 1) * self.every_s

    def count_between(self, after: float, before: float) -> int:
        # fires start + k * every_s with after < fire < before, k >= 0
        first = max(math.floor((after - self.start) / self.every_s) + 1, 0)
        last = math.ceil((before - self.start) / self.every_s) - 1
        return min(max(last - first + 1, 0), COUNT_CAP)

    def label(self, when: float) -> str:
        return datetime.fromtimestamp(when).astimezone().isoformat(timespec="milliseconds")


def fire_key(agent: str, label: str) -> str:
    """The idempotency key of ``agent``'s fire at ``label`` (see the module docstring)."""
    return f"{agent}@{label}"


@dataclass(frozen=True)
class Fire:
    """One fire of one agent."""

    agent: str
    time: float
    """Seconds since the epoch."""
    label: str
    """The fire time in the agent's zone, ISO 8601."""
    key: str | None
    """Idempotency key; ``None`` for interval fires, which are not recorded."""
    missed: int = 0
    """Earlier fires that were missed and are coalesced into this one (catch-up)."""


def cron_series(spec: AgentSpec) -> CronSeries:
    """The fires of a scheduled agent."""
    cycle = spec.life_cycle
    assert cycle.cron is not None
    return CronSeries(cycle.cron, zone_named(cycle.timezone))


@dataclass(frozen=True)
class OnceDecision:
    """What ``--once`` does for a scheduled agent (see :mod:`agentos.scheduler.lifecycle`)."""

    fire: Fire | None
    """The latest fire at or before now (``None``: the expression has none)."""
    action: Literal["run", "claimed", "missed", "none"]
    """``run`` it; it was already ``claimed``; it was ``missed`` and ``catch_up`` is false
    (record it as skipped); ``none`` due at all."""

    def reason(self) -> str:
        """Why nothing is run, in words."""
        label = self.fire.label if self.fire is not None else ""
        return {
            "run": "",
            "claimed": f"the latest fire ({label}) was already claimed",
            "missed": f"the latest fire ({label}) was missed and catch_up is false",
            "none": "its cron expression has no fire before now",
        }[self.action]


def due_once(
    spec: AgentSpec, series: FireSeries, *, now: float, last_seen: float | None
) -> OnceDecision:
    """What ``--once`` should do for scheduled agent ``spec`` at ``now``, given the latest
    fire time any process recorded for it."""
    due = series.latest_at_or_before(now)
    if due is None:
        return OnceDecision(None, "none")
    label = series.label(due)
    missed = 0 if last_seen is None else series.count_between(last_seen, due)
    fire = Fire(spec.name, due, label, fire_key(spec.name, label), missed)
    if last_seen is not None and due <= last_seen:
        return OnceDecision(fire, "claimed")
    if now - due > GRACE_S and not spec.life_cycle.catch_up:
        return OnceDecision(fire, "missed")
    return OnceDecision(fire, "run")


class FireLedger:
    """The ``schedule_fires`` table: claiming fires and recording how they ended.

    :meth:`claim` is the one write of agentos that bypasses the store's writer thread: it
    needs the answer (did this process win the slot?) before going on, and a lost race
    is an expected outcome, not a failed write for the writer to report. It commits on
    its own short-lived connection, with the store's busy timeout. Later updates of the
    row (status, run id) go through the writer as usual.
    """

    def __init__(self, store: Store, *, claimed_by: str) -> None:
        self.store = store
        self.claimed_by = claimed_by

    # Reads use ``store.db`` on the calling thread (the event loop's, like every other
    # reader of it in a runtime): one statement each, on indexed columns.

    def last_fire_time(self, agent: str) -> float | None:
        """The latest fire of ``agent`` that any process has claimed or recorded."""
        row = self.store.db.execute(
            "SELECT max(fire_time) FROM schedule_fires WHERE agent = ?", [agent]
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def get(self, key: str) -> dict[str, Any] | None:
        """The row of fire ``key``, or ``None`` when nobody has claimed it."""
        cursor = self.store.db.execute("SELECT * FROM schedule_fires WHERE key = ?", [key])
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def claim(self, fire: Fire, *, source: str, status: FireStatus = "running") -> bool:
        """Insert ``fire``'s row; True when this call won it, False when the key was taken.

        Blocks for one commit (at most the busy timeout while another process writes);
        asyncio code calls it in a thread.
        """
        assert fire.key is not None, "interval fires are not claimed"
        conn = sqlite3.connect(self.store.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            with conn:
                conn.execute(
                    "INSERT INTO schedule_fires (agent, fire_time, key, claimed_by, "
                    "claimed_at, source, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        fire.agent,
                        fire.time,
                        fire.key,
                        self.claimed_by,
                        time.time(),
                        source,
                        status,
                    ),
                )
            return True
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc).upper():
                raise StoreError(f"cannot record the fire {fire.key}: {exc}") from exc
            return False
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record the fire {fire.key}: {exc}") from exc
        finally:
            conn.close()

    def update(self, fire: Fire, **values: Any) -> None:
        """Set columns of ``fire``'s row (queued; ``finished_at`` is set with a final
        status)."""
        if fire.key is None or not values:
            return
        columns = ", ".join(f"{name} = ?" for name in values)
        self.store.submit(
            Execute(
                f"UPDATE schedule_fires SET {columns} WHERE key = ?",
                [*values.values(), fire.key],
            )
        )

    def finish(self, fire: Fire, *, status: FireStatus, run_id: str | None) -> None:
        """Record how the run of ``fire`` ended."""
        self.update(fire, status=status, run_id=run_id or None, finished_at=time.time())
