"""Agents' budgets (``budget:`` in agents.yaml): tokens or money per day, then a pause.

The day is the local day of the machine agentos runs on, midnight to midnight
(:func:`agentos.usage.report.day_start`). What an agent spent is counted:

- at the start of each of its runs, from the record: its ``llm_calls`` since midnight,
  as ``agentos usage`` counts them (cached answers are free, prices from config.yaml's
  ``pricing:``; the writer is flushed first, so the calls of runs just ended count);
- while a run goes, answer by answer (:class:`BudgetRouter`): tokens exactly, cost at
  the model's price, or for an engine priced by the hour the answer's whole latency (an
  upper bound of its share of busy time; the next count from the record is exact).

When the budget is spent:

- mid-run: no new attempt starts, the attempts in flight of a prompt run finish (their
  answers are kept), and the run ends: ``succeeded`` when they brought its target, else
  ``cancelled`` with the reason as its error (which ``agentos runs`` shows); either way
  its timeline has a ``budget_spent`` event. Runs of other kinds end at once;
- the agent is paused until the next local midnight: runs that would start are not
  started (a perpetual agent's ticks pass, a sink reader leaves its items in the sink),
  ``top`` shows it ``paused`` with the reason, and the output says so once. At midnight
  it counts again from the record and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agentos.agents.base import ModelRouter
from agentos.errors import AgentosError
from agentos.router.jobs import Completion, InferenceRequest
from agentos.scheduler.display import RunOutcome
from agentos.spec.agents import Budget
from agentos.store import Store
from agentos.usage.pricing import Pricing, money
from agentos.usage.report import day_of, day_start, next_day_start, spent

if TYPE_CHECKING:
    from agentos.agents.base import AgentRun
    from agentos.scheduler.lifecycle import AgentLane
    from agentos.sinks import SinkItem

SINK_RETRY_DELAY_S = 30.0
"""How long an item a paused agent did not take waits (as for a failed run)."""

CANCEL_POLL_S = 0.05
"""How often a run whose budget is spent is looked at until its attempts in flight end."""


class BudgetGuard:
    """One agent's budget inside a runtime: what it spent today, and whether it may go."""

    def __init__(
        self,
        agent: str,
        budget: Budget,
        store: Store,
        pricing: Pricing,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.budget = budget
        self.store = store
        self.pricing = pricing
        self.clock = clock
        self.tokens = 0
        self.cost = Decimal(0)
        self.day_ends = 0.0
        """The next local midnight after the day counted."""
        self.reason: str | None = None
        """Why the agent is paused (the budget is spent), or None."""
        self._counted = False

    async def count(self) -> None:
        """What the agent spent today, from the record (a new day starts at zero)."""
        now = self.clock()
        await self.store.aflush()
        since = day_start(now)
        row = await asyncio.to_thread(self._spent, since)
        self.tokens, self.cost = row.tokens, row.priced_cost
        self.day_ends = next_day_start(now)
        self._counted = True

    def _spent(self, since: float) -> Any:
        with Store(self.store.path, readonly=True) as reader:
            return spent(reader, self.pricing, self.agent, since=since)

    async def allows_run(self) -> str | None:
        """None when a run may start (counted afresh); else why not (the budget is spent
        until midnight)."""
        if self.reason is not None and self.clock() < self.day_ends:
            return self.reason
        await self.count()
        self.reason = self.exhausted()
        return self.reason

    @property
    def renewed(self) -> bool:
        return self.reason is not None and self.clock() >= self.day_ends

    def add(self, completion: Completion) -> None:
        """An answer of one of the agent's runs (a cached one costs nothing)."""
        if completion.cache_hit:
            return
        self.tokens += completion.prompt_tokens + completion.completion_tokens
        rule = self.pricing.rule(completion.engine, completion.model)
        if rule == "tokens":
            self.cost += self.pricing.token_cost(
                completion.model, completion.prompt_tokens, completion.completion_tokens
            )
        elif rule == "hourly":
            self.cost += self.pricing.busy_cost(completion.engine, completion.latency_ms / 1000)

    def exhausted(self) -> str | None:
        """The reason the budget is spent, or None."""
        budget = self.budget
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.day_ends))
        day = day_of(self.day_ends - 1)
        if budget.tokens_per_day is not None and self.tokens >= budget.tokens_per_day:
            return (
                f"budget spent: {self.tokens:,} of {budget.tokens_per_day:,} tokens on {day} "
                f"(budget.tokens_per_day); paused until {until} local time"
            )
        if budget.cost_per_day is not None and self.cost >= budget.cost_per_day:
            return (
                f"budget spent: {money(self.cost)} of {budget.cost_per_day} "
                f"{self.pricing.currency} on {day} (budget.cost_per_day); paused until "
                f"{until} local time"
            )
        return None

    def spent_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "cost": money(self.cost),
            "tokens_per_day": self.budget.tokens_per_day,
            "cost_per_day": None
            if self.budget.cost_per_day is None
            else str(self.budget.cost_per_day),
            "until": self.day_ends,
        }


class BudgetRouter:
    """The runtime's router for one run of an agent with a budget: every answer is added
    to the budget, and the one that spends it stops the agent (``on_spent``)."""

    def __init__(
        self, router: ModelRouter, guard: BudgetGuard, on_spent: Callable[[str], None]
    ) -> None:
        self.router = router
        self.guard = guard
        self.on_spent = on_spent

    async def submit(self, request: InferenceRequest, **options: Any) -> Completion:
        completion = await self.router.submit(request, **options)
        self.observe(completion, options.get("job_id"))
        return completion

    def observe(self, completion: Completion, job_id: str | None = None) -> None:
        """Add an answer to the budget: one this router got, or one the run got another
        way (on a cluster's node, reported to the driver)."""
        self.guard.add(completion)
        if self.guard.reason is None:
            reason = self.guard.exhausted()
            if reason is not None:
                self.guard.reason = reason
                self.on_spent(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


async def stop_when_idle(run: AgentRun, reason: str) -> None:
    """End ``run`` because its budget is spent: it is paused (no new attempt starts), the
    attempts in flight of a prompt run finish, then the run ends: ``succeeded`` when they
    brought its target, else ``cancelled`` with ``reason``. Other kinds of run end at once."""
    run.pause()
    with contextlib.suppress(AttributeError, AssertionError):
        run.event("budget_spent", reason=reason)  # type: ignore[attr-defined]
    while getattr(run, "in_flight", 0) > 0:
        await asyncio.sleep(CANCEL_POLL_S)
    if run.successes >= getattr(run, "wanted", 1):
        run.resume()  # nothing more to start: it ends as it would have
    else:
        run.cancel(reason)


async def refuses(lane: AgentLane, guard: BudgetGuard, item: SinkItem | None) -> RunOutcome | None:
    """None when ``lane``'s budget lets a run start; else the outcome of the run not
    started, said once per day (an item goes back to its sink)."""
    was = guard.reason
    reason = await guard.allows_run()
    if reason is None:
        if was is not None:
            lane.say("budget renewed for a new day; running again")
        return None
    if reason != was:
        lane.say(reason)
    sinks = lane.runtime.sinks
    if item is not None and sinks is not None:
        with contextlib.suppress(AgentosError):
            await sinks.anack(item.id, lane.spec.name, delay_s=SINK_RETRY_DELAY_S)
    return RunOutcome(
        run_id="",
        agent=lane.spec.name,
        status="cancelled",
        wanted=lane.spec.life_cycle.length,
        successes=0,
        attempts=0,
        error=reason,
    )
