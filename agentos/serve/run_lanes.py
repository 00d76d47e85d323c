"""Starting runs over HTTP on the serve process's one runtime (``POST /runs``).

A run started over HTTP is driven as ``agentos run`` drives a single-shot run: by an
:class:`~agentos.scheduler.lifecycle.AgentLane` of the runtime, which makes the run with
the runtime's shared context (router, store, sinks, memory, result hooks), counts it, and
settles its samples. It is one run whatever the agent's life-cycle says (no fires; a sink
reader's variables come with the request instead of from an item).

Each agent name gets one lane for the life of the process, in ``runtime.lanes`` (its
counters are the agent's row in ``agentos top``) and in ``runtime.controllables`` (``top``
pauses and resumes the agent by name; the lane adds each run it starts there too, so
``top`` cancels a run by its id). An inline agent may reuse a name: the lane takes the new
spec when nothing of the old one is in flight; while a run of another spec under the name
still goes, the start is refused (409), because ``top`` and the runs list know an agent
by its name. At most :data:`MAX_LANES` names are kept: past that, the lanes of agents
with nothing in flight are dropped, least recently started first (their runs stay
recorded).

Shutdown: the runs are in ``service.work``, which the shutdown waits for up to
``serve.shutdown_s``; then :meth:`HttpRuns.cancel_all` (an ``on_abort`` hook) cancels what
still goes, and each run ends ``cancelled`` with the reason recorded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agentos.agents.base import AgentRun
from agentos.scheduler.display import RunOutcome
from agentos.scheduler.lifecycle import AgentLane
from agentos.serve.errors import ApiError
from agentos.spec.agents import AgentSpec

if TYPE_CHECKING:
    from agentos.serve.service import Service

_POLL_S = (0.001, 0.02)
"""First and longest wait between looks for the new run's row."""

MAX_LANES = 256
"""Agent names kept with their counters; past this, the lanes of idle agents are dropped
(inline agents' names come from clients, so they must not pile up in ``top``)."""


class HttpRuns:
    """The runs started over HTTP: their lanes, and the tasks that drive them."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.runtime = service.session.runtime
        self.lanes: dict[str, AgentLane] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        """Per agent name: held while one start waits for its run's row, so the one new
        run that appears in the lane meanwhile is that start's (see :meth:`start`)."""
        self._unopened: set[asyncio.Task[RunOutcome]] = set()
        """Runs' tasks whose run has no row yet."""
        service.on_abort.append(self.cancel_all)

    async def start(self, spec: AgentSpec, variables: dict[str, Any]) -> str:
        """Start one run of ``spec`` with ``variables``; its id, once its ``runs`` row is
        committed (the run goes on in the background)."""
        lock = self._starting.setdefault(spec.name, asyncio.Lock())
        async with lock:
            lane = self._lane(spec)
            before = list(lane.active)
            task = asyncio.create_task(self._drive(lane, variables), name=f"run-{spec.name}")
            self.service.work.add(task)
            task.add_done_callback(self.service.work.discard)
            self._unopened.add(task)
            try:
                return await self._opened(lane, before, task)
            finally:
                self._unopened.discard(task)

    def _lane(self, spec: AgentSpec) -> AgentLane:
        lane = self.lanes.get(spec.name)
        if lane is None:
            if len(self.lanes) >= MAX_LANES:
                self._drop_idle()
            lane = AgentLane(spec, self.runtime)
            self.lanes[spec.name] = lane
            self.runtime.lanes.append(lane)
            self.runtime.controllables.append(lane)
        else:
            self.lanes[spec.name] = self.lanes.pop(spec.name)  # most recently started last
        if lane.spec != spec:
            if lane.active:
                raise ApiError(
                    409,
                    f"agent '{spec.name}' has {len(lane.active)} run(s) going with another "
                    "spec under that name; wait for them to end, or give the inline agent "
                    "another name",
                    code="agent_busy",
                    param="spec.name",
                )
            lane.spec = spec
        return lane

    async def _opened(
        self, lane: AgentLane, before: list[AgentRun], task: asyncio.Task[RunOutcome]
    ) -> str:
        """The id of the run ``task`` started in ``lane``: the run in the lane that was not
        there ``before`` and has its row, or, if ``task`` ended first, its outcome's."""
        wait, longest = _POLL_S
        while True:
            for run in lane.active:
                if run.run_id and all(run is not old for old in before):
                    return run.run_id
            if task.done():
                if task.cancelled():
                    raise ApiError(503, "the run was cancelled before it started")
                error = task.exception()
                if error is not None:
                    raise ApiError(500, f"the run could not start: {type(error).__name__}: {error}")
                outcome = task.result()
                if outcome.run_id:
                    return outcome.run_id
                raise ApiError(
                    400,
                    f"agent '{lane.spec.name}': the run could not start: {outcome.error}",
                    code="run_not_started",
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    async def _drive(self, lane: AgentLane, variables: dict[str, Any]) -> RunOutcome:
        outcome = await lane.run(variables)
        if not outcome.run_id:
            # a single-shot run that failed before its row is kept for runtime.run() to
            # raise; serve never calls that, and the POST answers the error instead
            errors = self.runtime.errors
            for index, error in enumerate(errors):
                if error.message == outcome.error:
                    del errors[index]
                    break
        return outcome

    def _drop_idle(self) -> None:
        """Forget lanes with no run going and no start under way, least recently started
        first, until there is room for one more."""
        for name, lane in list(self.lanes.items()):
            if len(self.lanes) < MAX_LANES:
                return
            lock = self._starting.get(name)
            if lane.active or (lock is not None and lock.locked()):
                continue
            del self.lanes[name]
            self._starting.pop(name, None)
            self.runtime.lanes.remove(lane)
            self.runtime.controllables.remove(lane)

    def running(self) -> list[AgentRun]:
        return [run for lane in self.lanes.values() for run in lane.active]

    def cancel_all(self, reason: str) -> None:
        """Cancel every run still going (recorded ``cancelled`` with ``reason``), and the
        starts whose run has no row yet (nothing recorded)."""
        for run in self.running():
            run.cancel(reason)
        for task in list(self._unopened):
            task.cancel(reason)
