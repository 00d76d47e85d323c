"""Life-cycles: how a runtime turns each selected agent into runs, over time.

Every run of every kind is made by ``registry.make_run(spec, context, variables=...)``
and shares the runtime's one :class:`~agentos.agents.base.RunContext`. What starts runs:

- ``single-shot``: one piece of work now, then the agent is done.
- ``perpetual`` with ``every``: a fire every interval from the runtime's start, until the
  runtime stops.
- ``perpetual`` without ``every`` (it has an ``input_sink``): a run per item of the sink,
  as items arrive, until the runtime stops.
- ``scheduled``: a fire at each time of the cron expression, in the agent's time zone.

An agent's part is an :class:`AgentLane`; the loops that fire the lanes over time are
:class:`~agentos.scheduler.runtime.Runtime`'s.

Each run of a perpetual or scheduled agent asks for fresh samples (a range of sample
indices of its own); a single-shot run asks for the same ones every time (see
:mod:`agentos.scheduler.samples`).

*A piece of work* (what one fire, or a single-shot agent, does) is one run, or, for an
agent with an ``input_sink``, one run per item pending in the sink (the item's fields are
the run's template variables, over ``--var`` values and ``vars``). When agents of the same
runtime write that sink (its *upstream*), a single-shot reader (and any reader under
``--once``) also takes their items as they come, until every upstream agent is done and
its items are taken: a producer and its reader in one file work as one pipeline. (Agents
that write each other's sinks in a cycle do not wait for each other.) A single-shot sink
reader with nothing to take runs once with the ``--var`` values when there are some, and
otherwise says there is nothing to do.

``--once`` (``Runtime(once=True)``, what cron and launchd call): single-shot agents as
usual; a perpetual agent does one piece of work and stops; a scheduled agent runs the
latest fire that is due (at or before now) unless some process already claimed it, with
catch-up applied: missed fires since the last one seen are coalesced into it, and with
``catch_up: false`` a fire found later than :data:`~agentos.scheduler.fires.GRACE_S`
is recorded as skipped instead.

**Overlap** (``life_cycle.overlap``), when a fire comes while the agent's previous piece of
work still goes: ``skip`` records the fire as skipped; ``queue`` claims it and starts it
when the current work ends (one at most: a further fire while one waits is skipped);
``allow`` starts it alongside. A sink reader takes one item at a time unless ``allow``,
then up to ``life_cycle.concurrency`` at once.

**Catch-up.** A daemon wakes at each fire; when it finds several fires due (it was down, or
the machine slept), they are coalesced into one run of the latest. With ``catch_up:
false`` a fire found more than ``GRACE_S`` late is recorded as skipped, not run. The
fires seen are recorded in ``schedule_fires`` (see :mod:`agentos.scheduler.fires`), so a
restarted daemon knows what it missed; on its very first start an agent has missed
nothing (fires up to ``GRACE_S`` before the start still count as on time).

**Sink deliveries.** A run's item is acknowledged when the run succeeded (or was cancelled
from ``agentos top``: a person decided), and released for another try after
:data:`SINK_RETRY_DELAY_S` when it failed (the sink marks it failed after its attempt
cap); a runtime stopped mid-run releases its items at once. Claims are renewed while the
run goes, so a long run keeps its item.

**Stopping.** ``Runtime.stop()`` ends every loop at its next wait: nothing new starts,
work in flight finishes, queued fires are marked cancelled. Cancelling the task that
runs the runtime (Ctrl-C, SIGTERM) cancels the runs in flight too; each records itself as
cancelled, and so do their fires.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from agentos.agents.base import AgentRun
from agentos.agents.registry import make_run
from agentos.errors import AgentosError
from agentos.scheduler import samples
from agentos.scheduler.budget import BudgetGuard, BudgetRouter, refuses, stop_when_idle
from agentos.scheduler.cached import CacheTally, TallyingDisplay, TallyingRouter, with_tally
from agentos.scheduler.display import RunOutcome
from agentos.scheduler.fires import Fire
from agentos.spec.agents import AgentSpec
from agentos.usage.pricing import Pricing

if TYPE_CHECKING:
    from agentos.scheduler.runtime import Runtime
    from agentos.sinks import SinkItem


SINK_LEASE_S = 300.0
"""How long a claim on a sink item lasts; renewed every third of it while the run goes."""

SINK_RETRY_DELAY_S = 30.0
"""How long an item whose run failed waits before it can be claimed again."""

SINK_WAIT_S = 5.0
"""How long one wait for new sink items lasts before the loop looks again."""

OUTCOMES_KEPT = 10_000
"""Outcomes a lane keeps to return (a daemon runs for months; its counters stay exact)."""

FIRE_TIME_VARIABLE = "fire_time"
"""The template variable a cron fire's runs get: the fire time in the agent's zone, ISO
8601 (a task agent's period; a prompt can say which day it reports on)."""


class AgentLane:
    """One selected agent inside a runtime: its pieces of work in flight, its overlap
    policy, its counters for ``top``, and the target of ``top``'s pause and resume.

    As a :class:`~agentos.scheduler.control.Controllable` it stands for the agent: a
    pause holds its runs in flight and every run it starts until the resume. Its
    ``run_id`` is empty, so a cancel (which names a run) never matches it.
    """

    run_id = ""

    def __init__(self, spec: AgentSpec, runtime: Runtime) -> None:
        self.spec = spec
        self.runtime = runtime
        self.active: list[AgentRun] = []
        """Runs in flight."""
        self.work: set[asyncio.Task[Any]] = set()
        """Pieces of work in flight (a fire's run, or its runs over the sink's items)."""
        self.queued: Fire | None = None
        """A fire waiting for the work in flight to end (overlap ``queue``)."""
        self.paused = False
        self.done = False
        self.next_fire_at: float | None = None
        self.outcomes: collections.deque[RunOutcome] = collections.deque(maxlen=OUTCOMES_KEPT)
        """How its runs ended, oldest first (the latest OUTCOMES_KEPT)."""
        self.last_run_id: str | None = None
        self.finished = asyncio.Event()
        """Set once the life-cycle is done (``done``), for readers of its output sink."""
        self._finished = {"runs": 0, "succeeded": 0, "failed": 0, "successes": 0, "failures": 0}
        self._changed = asyncio.Event()
        self.budget: BudgetGuard | None = None
        """The agent's ``budget`` (:mod:`agentos.scheduler.budget`), when it has one."""
        if spec.budget is not None:
            pricing = Pricing.from_config(runtime.context.config)
            store = runtime.context.store
            self.budget = BudgetGuard(
                spec.name, spec.budget, store, pricing, clock=runtime.clock.now
            )
        self._stopping: set[asyncio.Task[None]] = set()

    # -- control --------------------------------------------------------------------------

    @property
    def agent(self) -> str:
        return self.spec.name

    def pause(self) -> None:
        self.paused = True
        for run in self.active:
            run.pause()

    def resume(self) -> None:
        self.paused = False
        for run in self.active:
            run.resume()

    def cancel(self, reason: str) -> None:
        """Lanes are not cancelled; runs are, by id."""

    # -- what top shows ---------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """The agent's state and run counters, as the snapshot's processes show them."""
        states = [run.state for run in self.active]
        if any(state == "paused" for state in states) or (self.paused and not self.done):
            state = "paused"
        elif states:
            state = "running"
        elif self.done and self.outcomes:
            state = self.outcomes[-1].status
        else:
            state = "idle" if not self.done else "done"
        budget = self.budget
        paused_by = budget.reason if budget is not None and not budget.renewed else None
        if paused_by is not None and not self.done:
            state = "paused"
        health = self.runtime.health.rows.get(self.spec.name) if self.runtime.health else None
        in_a_row = health["consecutive_failures"] if health else 0
        if in_a_row and state == "idle":
            state = f"failing {in_a_row}"  # a daemon whose last runs failed (agentos status)
        finished = self._finished
        return {
            "paused_by": paused_by,
            "kind": "agent",
            "life_cycle": self.spec.life_cycle.type,
            "state": state,
            "runs": finished["runs"] + len(self.active),
            "runs_succeeded": finished["succeeded"],
            "runs_failed": finished["failed"],
            "successes": finished["successes"] + sum(r.successes for r in self.active),
            "failures": finished["failures"] + sum(r.failed_attempts for r in self.active),
            "run_id": self.last_run_id,
            "next_fire_at": self.next_fire_at,
            "failures_in_a_row": in_a_row,
            "last_success_at": health["last_success_at"] if health else None,
        }

    # -- runs -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.runtime.context.display.message(f"{self.spec.name}: {text}")

    async def run(
        self, variables: dict[str, Any] | None = None, *, item: SinkItem | None = None
    ) -> RunOutcome:
        """One run of the agent, from start to end; with ``item``, its delivery is settled
        by the outcome (see the module docstring)."""
        runtime = self.runtime
        router = runtime.context.router
        if self.budget is not None:
            refused = await self._budget_refuses(item)
            if refused is not None:
                return refused
            router = BudgetRouter(router, self.budget, self._budget_spent)
        values = {**(variables or {}), **runtime.variables, **(item.data if item else {})}
        run: AgentRun | None = None
        renewing: asyncio.Task[None] | None = None
        tally = CacheTally()
        context = dataclasses.replace(
            runtime.context,
            router=TallyingRouter(router, tally),
            display=TallyingDisplay(runtime.context.display, tally),
        )
        try:
            try:
                base = await self._sample_base()
                executor = runtime.executor
                new_run = make_run if executor is None else executor.make_run
                run = new_run(self.spec, context, variables=values, sample_base=base)
                self.active.append(run)
                runtime.controllables.append(run)
                if self.paused:
                    run.pause()
                if item is not None:
                    renewing = asyncio.create_task(self._renew(item), name="sink-lease")
                outcome = await run.run()
            except AgentosError as exc:
                outcome = RunOutcome(
                    run_id=run.run_id if run is not None else "",
                    agent=self.spec.name,
                    status="failed",
                    wanted=self.spec.life_cycle.length,
                    successes=run.successes if run is not None else 0,
                    attempts=run.attempts if run is not None else 0,
                    error=exc.message,
                )
                if item is None and self.spec.life_cycle.type == "single-shot":
                    runtime.errors.append(exc)
                else:
                    self.say(f"run failed: {exc.message}")
        except asyncio.CancelledError:
            if item is not None and runtime.sinks is not None:
                # stopping: hand the item back now rather than when its lease runs out
                with contextlib.suppress(AgentosError):
                    runtime.sinks.nack(item.id, self.spec.name)
            raise
        finally:
            if renewing is not None:
                renewing.cancel()
            if run is not None:
                self.active.remove(run)
                runtime.controllables.remove(run)
                samples.record_base(runtime.context.store, run.run_id, run.sample_base)
        outcome = with_tally(outcome, tally)
        self._count(outcome, run.failed_attempts if run is not None else 0)
        if item is not None:
            await self._settle(item, outcome)
        return outcome

    async def _budget_refuses(self, item: SinkItem | None) -> RunOutcome | None:
        """The outcome of a run its budget does not let start (among the lane's outcomes,
        so ``agentos run`` exits 1: the work was not done), or None."""
        assert self.budget is not None
        refused = await refuses(self, self.budget, item)
        if refused is not None:
            self.outcomes.append(refused)
        return refused

    def _budget_spent(self, reason: str) -> None:
        self.say(reason)
        for run in list(self.active):
            task = asyncio.create_task(stop_when_idle(run, reason), name="budget-stop")
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _sample_base(self) -> int:
        """0, or for a perpetual or scheduled agent the start of a range of sample indices
        no other run of it asks for (:mod:`agentos.scheduler.samples`)."""
        if not samples.fresh_samples(self.spec):
            return 0
        store = self.runtime.context.store
        count = samples.samples_per_run(self.spec)
        return await asyncio.to_thread(samples.reserve, store, self.spec.name, count)

    def _count(self, outcome: RunOutcome, failed_attempts: int) -> None:
        finished = self._finished
        finished["runs"] += 1
        finished["succeeded"] += outcome.status == "succeeded"
        finished["failed"] += outcome.status in ("failed", "cancelled")
        finished["successes"] += outcome.successes
        finished["failures"] += failed_attempts
        self.last_run_id = outcome.run_id or self.last_run_id
        self.outcomes.append(outcome)
        if self.runtime.health is not None:
            self.runtime.health.run_finished(self, outcome)
        self._changed.set()

    async def _renew(self, item: SinkItem) -> None:
        sinks = self.runtime.sinks
        assert sinks is not None
        while True:
            await asyncio.sleep(SINK_LEASE_S / 3)
            await asyncio.to_thread(sinks.renew, item.id, self.spec.name, lease_s=SINK_LEASE_S)

    async def _settle(self, item: SinkItem, outcome: RunOutcome) -> None:
        sinks = self.runtime.sinks
        assert sinks is not None
        try:
            if outcome.status in ("succeeded", "cancelled"):
                await sinks.aack(item.id, self.spec.name, run_id=outcome.run_id or None)
                return
            status = await sinks.anack(item.id, self.spec.name, delay_s=SINK_RETRY_DELAY_S)
        except AgentosError as exc:
            self.say(f"could not settle item {item.id} of sink '{item.sink}': {exc.message}")
            return
        if status == "failed":
            self.say(f"item {item.id} of sink '{item.sink}' failed {item.attempts} times; dropped")

    # -- pieces of work -----------------------------------------------------------------------

    @property
    def reads_sink(self) -> bool:
        return bool(self.spec.input_sink) and self.runtime.sinks is not None

    @property
    def sink_parallelism(self) -> int:
        cycle = self.spec.life_cycle
        return cycle.concurrency if cycle.overlap == "allow" else 1

    async def piece_of_work(
        self, variables: dict[str, Any] | None = None, *, by_hand: bool = False
    ) -> list[RunOutcome]:
        """One run, or one run per pending item of the input sink (module docstring).

        ``by_hand``: with nothing pending, run once with the ``--var`` values if there are
        some, else say that there is nothing to do.
        """
        if not self.reads_sink:
            return [await self.run(variables)]
        upstream = self.upstream() if by_hand else []
        outcomes = await self.consume(variables, follow=False, upstream=upstream)
        if outcomes or not by_hand:
            return outcomes
        if self.runtime.variables:
            return [await self.run(variables)]
        producers = ", ".join(f"'{lane.spec.name}'" for lane in upstream)
        got = (
            f"got no items from {producers} in this run"
            if upstream
            else "has no items pending for it"
        )
        self.say(
            f"nothing to do: sink '{self.spec.input_sink}' {got} "
            "(give its variables with --var NAME=VALUE to run it once without an item)"
        )
        return []

    def producers(self) -> list[AgentLane]:
        """The other lanes of the runtime that write this lane's input sink."""
        sink = self.spec.input_sink
        if not sink:
            return []
        return [
            lane
            for lane in self.runtime.lanes
            if lane is not self and lane.spec.output_sink == sink
        ]

    def upstream(self) -> list[AgentLane]:
        """The producers to wait for: those that do not (through other sinks) wait for
        this lane, so a cycle of agents never waits on itself."""
        return [lane for lane in self.producers() if self not in _feeding(lane)]

    async def consume(
        self,
        variables: dict[str, Any] | None = None,
        *,
        follow: bool,
        upstream: Sequence[AgentLane] = (),
    ) -> list[RunOutcome]:
        """Runs over the items of the input sink: those pending now, or (``follow``) as
        they arrive until the runtime stops, or (``upstream``) as they arrive until those
        lanes are done and their items taken."""
        runtime = self.runtime
        sinks = runtime.sinks
        sink = self.spec.input_sink
        assert sinks is not None and sink is not None
        outcomes: list[RunOutcome] = []
        running: set[asyncio.Task[RunOutcome]] = set()
        crashed: list[BaseException] = []
        slot_free = asyncio.Event()
        waiting_said = False
        flushed = False

        def finished(task: asyncio.Task[RunOutcome]) -> None:
            running.discard(task)
            slot_free.set()
            if task.cancelled():
                return
            if (error := task.exception()) is not None:
                crashed.append(error)
            else:
                outcomes.append(task.result())

        try:
            while not runtime.stopping:
                if crashed:
                    raise crashed[0]
                budget = self.budget
                if budget is not None and budget.reason is not None and not budget.renewed:
                    if not follow:
                        break  # the items stay in the sink for another day
                    await self.runtime.sleep_until(budget.day_ends)
                    continue
                free = self.sink_parallelism - len(running)
                if free <= 0:
                    slot_free.clear()
                    await runtime.until_stopped(slot_free.wait())
                    continue
                settled = all(lane.done for lane in upstream)
                if upstream and settled and not flushed:
                    # their last items may still be queued on the store's writer
                    await runtime.context.store.aflush()
                    flushed = True
                items = await sinks.aclaim(sink, self.spec.name, limit=free, lease_s=SINK_LEASE_S)
                for item in items:
                    task = asyncio.create_task(
                        self.run(variables, item=item), name=f"run-{self.spec.name}"
                    )
                    running.add(task)
                    task.add_done_callback(finished)
                if items:
                    continue
                if not follow and settled:
                    break
                if not waiting_said:
                    pending = [lane.spec.name for lane in upstream if not lane.done]
                    source = f" from {', '.join(pending)}" if pending and not follow else ""
                    self.say(f"waiting for items of sink '{sink}'{source}")
                    waiting_said = True
                wakes = [lane.finished.wait() for lane in upstream if not lane.done]
                if upstream and not follow and not wakes:
                    continue  # done since the claim: one more look after a flush
                await runtime.until_stopped(
                    _first(sinks.wait(sink, SINK_WAIT_S, consumer=self.spec.name), *wakes)
                )
            if running:
                await asyncio.gather(*running)
            if crashed:
                raise crashed[0]
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return outcomes

    # -- fires ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.work)

    async def fire(self, fire: Fire) -> None:
        """A fire is due: start its work now, queue it, or skip it (overlap policy)."""
        if self.budget is not None and self.budget.reason and not self.budget.renewed:
            return  # paused by its budget until midnight (said once)
        if self.busy:
            policy = self.spec.life_cycle.overlap
            if policy == "queue" and self.queued is None:
                if await self.claim(fire, status="queued"):
                    self.queued = fire
                    self.say(f"fire {fire.label} queued behind the work in progress")
                return
            if policy != "allow":
                await self.claim(fire, status="skipped-overlap", quiet=True)
                why = "another fire is already queued" if policy == "queue" else "overlap: skip"
                self.say(f"fire {fire.label} skipped: the previous run still goes ({why})")
                if self.runtime.health is not None and fire.key is not None:
                    self.runtime.health.fire_missed(
                        self, fire.label, fire.time, f"skipped, the previous run still went ({why})"
                    )
                return
        if await self.claim(fire):
            self.start_fire(fire)

    async def skip_missed(self, fire: Fire) -> None:
        """Record a fire that was missed and is not caught up on (``catch_up: false``)."""
        await self.claim(fire, status="skipped-missed", quiet=True)
        self.say(f"fire {fire.label} was missed; skipped (catch_up: false)")
        if self.runtime.health is not None:
            self.runtime.health.fire_missed(
                self, fire.label, fire.time, "nothing ran at that time (catch_up: false)"
            )

    async def claim(self, fire: Fire, *, status: str = "running", quiet: bool = False) -> bool:
        if fire.key is None:
            return True
        ledger = self.runtime.ledger
        won = await asyncio.to_thread(ledger.claim, fire, source=self.runtime.source, status=status)
        if not won and not quiet:
            row = ledger.get(fire.key) or {}
            self.say(
                f"fire {fire.label} already claimed ({row.get('status') or 'claimed'}, by "
                f"{row.get('source') or 'another'} runtime {row.get('claimed_by') or '?'}); "
                "not run again"
            )
        return won

    def start_fire(self, fire: Fire) -> asyncio.Task[Any]:
        """Start ``fire``'s work as a task of the runtime."""
        task = self.runtime.spawn(self.fire_work(fire), name=f"fire-{self.spec.name}")
        self.work.add(task)
        task.add_done_callback(self._work_done)
        return task

    def _work_done(self, task: asyncio.Task[Any]) -> None:
        self.work.discard(task)
        self._changed.set()

    async def fire_work(self, fire: Fire) -> list[RunOutcome]:
        """The work of one claimed fire, recorded on its row; then the queued fire, if
        any."""
        ledger = self.runtime.ledger
        if fire.missed:
            self.say(f"{fire.missed} missed fire(s) coalesced into the fire of {fire.label}")
        variables = {FIRE_TIME_VARIABLE: fire.label} if fire.key is not None else {}
        try:
            outcomes = await self.piece_of_work(variables)
        except asyncio.CancelledError:
            ledger.finish(fire, status="cancelled", run_id=None)
            self._drop_queued()
            raise
        ledger.finish(fire, status=_fire_status(outcomes), run_id=_last_run_id(outcomes))
        if self.queued is not None:
            if self.runtime.stopping:
                self._drop_queued()
            else:
                queued, self.queued = self.queued, None
                ledger.update(queued, status="running")
                self.start_fire(queued)
        return outcomes

    def _drop_queued(self) -> None:
        if self.queued is not None:
            self.runtime.ledger.finish(self.queued, status="cancelled", run_id=None)
            self.queued = None

    async def wait_idle(self) -> None:
        """Wait until no work of this lane is in flight or queued."""
        while self.work or self.queued is not None:
            self._changed.clear()
            await self._changed.wait()


def _feeding(lane: AgentLane) -> set[AgentLane]:
    """The lanes whose output reaches ``lane``'s input sink, through any chain of sinks."""
    seen: set[AgentLane] = set()
    todo = [lane]
    while todo:
        for producer in todo.pop().producers():
            if producer not in seen:
                seen.add(producer)
                todo.append(producer)
    return seen


async def _first(*awaitables: Awaitable[Any]) -> None:
    """Wait until one of ``awaitables`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fire_status(outcomes: Sequence[RunOutcome]) -> str:
    if not outcomes:
        return "empty"
    if all(o.status == "succeeded" for o in outcomes):
        return "succeeded"
    if any(o.status == "failed" for o in outcomes):
        return "failed"
    return "cancelled"


def _last_run_id(outcomes: Sequence[RunOutcome]) -> str | None:
    ids = [o.run_id for o in outcomes if o.run_id]
    return ids[-1] if ids else None
