"""The runtime: the selected agents of one ``agentos run``, each driven by its life-cycle.

What each life-cycle does, and the rules for overlap, catch-up, sink deliveries and
stopping, are in :mod:`agentos.scheduler.lifecycle`; an agent's part of it is its
:class:`~agentos.scheduler.lifecycle.AgentLane`. This module holds the loops that start
the lanes' work over time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agentos.agents.base import RunContext
from agentos.errors import AgentosError
from agentos.scheduler.clock import Clock
from agentos.scheduler.control import Controllable
from agentos.scheduler.display import RunOutcome
from agentos.scheduler.fires import (
    GRACE_S,
    CronSeries,
    Fire,
    FireLedger,
    FireSeries,
    IntervalSeries,
    cron_series,
    due_once,
    fire_key,
)
from agentos.scheduler.lifecycle import AgentLane
from agentos.spec.agents import AgentSpec

if TYPE_CHECKING:
    from agentos.agents.base import AgentRun
    from agentos.health.board import HealthBoard
    from agentos.sinks import SinkStore

T = TypeVar("T")


class RunExecutor(Protocol):
    """Makes the runs of a runtime that execute elsewhere (a Ray cluster)."""

    def make_run(
        self,
        spec: AgentSpec,
        context: RunContext,
        *,
        variables: dict[str, Any] | None = None,
        sample_base: int = 0,
    ) -> AgentRun: ...


class Runtime:
    """The selected agents of one ``agentos run``, each driven by its life-cycle.

    ``controllables`` is the live list the control poller reads (the lanes, then every run
    in flight as it starts); :meth:`processes` is what the snapshot writer shows. Both see
    every run the runtime starts, also those started long after it began.
    """

    def __init__(
        self,
        context: RunContext,
        *,
        clock: Clock,
        runtime_id: str,
        variables: dict[str, Any] | None = None,
        once: bool = False,
        sinks: SinkStore | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.context = context
        self.clock = clock
        self.runtime_id = runtime_id
        self.variables = dict(variables or {})
        self.once = once
        self.sinks = sinks
        self.source = "once" if once else "daemon"
        """How this runtime's fire claims are labelled in ``schedule_fires.source``."""
        self.stop_event = stop if stop is not None else asyncio.Event()
        self.ledger = FireLedger(context.store, claimed_by=runtime_id)
        self.lanes: list[AgentLane] = []
        self.controllables: list[Controllable] = []
        self.errors: list[AgentosError] = []
        self.health: HealthBoard | None = None
        """Where its daemons' heartbeats and runs are written (``agent_health``)."""
        self.executor: RunExecutor | None = None
        """Where runs execute when not in this process (``agentos run --cluster``: a
        :class:`~agentos.cluster.executor.ClusterExecutor`); its ``make_run`` replaces
        ``registry.make_run`` in the lanes."""
        self._group: asyncio.TaskGroup | None = None

    # -- for the loops ------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        """Start nothing new; let the work in flight finish (see the module docstring)."""
        self.stop_event.set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        assert self._group is not None, "the runtime is not running"
        return self._group.create_task(coro, name=name)

    async def until_stopped(self, awaitable: Awaitable[T]) -> T | None:
        """``awaitable``'s result, or ``None`` once the runtime is stopped first."""
        task = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.result() if task.done() and not task.cancelled() else None

    async def sleep_until(self, when: float) -> bool:
        """Sleep on the clock until ``when``; False when the runtime was stopped first."""
        await self.until_stopped(self.clock.sleep_until(when))
        return not self.stopping

    def processes(self) -> dict[str, dict[str, Any]]:
        """Per agent: its state and run counters, for the snapshot writer."""
        return {lane.spec.name: lane.counters() for lane in self.lanes}

    # -- running ------------------------------------------------------------------------------

    def add(self, agents: Sequence[AgentSpec]) -> None:
        """Give each agent a lane (before :meth:`run`, so ``top`` sees them at once)."""
        for spec in agents:
            lane = AgentLane(spec, self)
            self.lanes.append(lane)
            self.controllables.append(lane)
        if self.health is not None:
            self.health.register(self.lanes)

    async def run(self) -> list[RunOutcome]:
        """Drive every lane until its life-cycle is done (or the runtime is stopped);
        outcomes by agent, in the order their runs ended."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for lane in self.lanes:
                    group.create_task(self._drive(lane), name=f"life-cycle-{lane.spec.name}")
        finally:
            self._group = None
        if self.errors:
            raise self.errors[0]
        return [outcome for lane in self.lanes for outcome in lane.outcomes]

    async def _drive(self, lane: AgentLane) -> None:
        cycle = lane.spec.life_cycle
        try:
            if cycle.type == "single-shot":
                await lane.piece_of_work(by_hand=True)
            elif cycle.type == "scheduled":
                series = cron_series(lane.spec)
                if self.once:
                    await self._cron_once(lane, series)
                else:
                    await self._follow_fires(lane, series, recorded=True)
            elif self.once:
                await lane.piece_of_work(by_hand=True)
            elif cycle.every_s is not None:
                start = self.clock.now()
                series_every = IntervalSeries(start, cycle.every_s)
                await self._follow_fires(lane, series_every, recorded=False, last=start - 1)
            else:
                await lane.consume(follow=True)
            await lane.wait_idle()
        finally:
            lane.done = True
            lane.next_fire_at = None
            lane.finished.set()

    async def _cron_once(self, lane: AgentLane, series: CronSeries) -> None:
        now = self.clock.now()
        last = self.ledger.last_fire_time(lane.spec.name)
        decision = due_once(lane.spec, series, now=now, last_seen=last)
        lane.next_fire_at = series.next_after(now)  # what agentos status expects next
        if decision.action == "run" and decision.fire is not None:
            if await lane.claim(decision.fire):
                await lane.fire_work(decision.fire)
            return
        if decision.action == "missed" and decision.fire is not None:
            await lane.skip_missed(decision.fire)
        reason = decision.reason()
        if decision.action == "claimed" and decision.fire is not None:
            row = self.ledger.get(decision.fire.key or "")
            if row is not None:
                reason += f" ({row['status']}, by a {row['source']} runtime)"
        nxt = series.label(series.next_after(now))
        lane.say(f"nothing due: {reason}; next fire {nxt}")

    async def _follow_fires(
        self, lane: AgentLane, series: FireSeries, *, recorded: bool, last: float | None = None
    ) -> None:
        """Fire ``lane`` at each time of ``series`` until the runtime stops, with catch-up
        after a late wake (module docstring)."""
        name = lane.spec.name
        if last is None:
            seen = self.ledger.last_fire_time(name)
            last = seen if seen is not None else self.clock.now() - GRACE_S
        while not self.stopping:
            now = self.clock.now()
            due = series.latest_at_or_before(now)
            if due is None or due <= last:
                lane.next_fire_at = series.next_after(max(now, last))
                if not await self.sleep_until(lane.next_fire_at):
                    break
                continue
            label = series.label(due)
            key = fire_key(name, label) if recorded else None
            fire = Fire(name, due, label, key, series.count_between(last, due))
            last = due
            if now - due > GRACE_S and not lane.spec.life_cycle.catch_up:
                if recorded:
                    await lane.skip_missed(fire)
                else:
                    lane.say(f"fire {label} was missed; skipped (catch_up: false)")
                continue
            await lane.fire(fire)
