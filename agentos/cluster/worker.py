"""The worker side of a cluster run: what executes a run on a Ray node.

A run arrives as a :class:`RunRequest` whose row the driver has already created; the
worker builds the run exactly as one machine does (``registry.make_run`` with a
``RunContext``), only with a :class:`~agentos.cluster.router_actor.RouterProxy` as its
router and a :class:`~agentos.cluster.records.RemoteStore` as its store, writes which node
it runs on (``runs.node``), and awaits ``run()``. Two ways to host it:

- :class:`RunHost`, one async actor per node (``num_cpus=0``), runs many runs at once in
  its event loop, like the local runtime (runs without a resource request);
- :data:`execute_task`, one Ray task per run, holding the agent's ``resources`` (CPU-bound
  task agents), with ``max_retries=0``: a run whose node dies is the driver's to settle.

Both end a run by flushing its records (committed by the driver) before returning its
outcome, so what the driver does next (acking a sink item, a reader claiming the items
the run published) sees everything the run wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Any

import ray

from agentos.agents.base import AgentRun, RunContext
from agentos.agents.registry import make_run
from agentos.cluster.batching import Answers, Reply, SharedFlush
from agentos.cluster.records import RemoteStore
from agentos.cluster.router_actor import RouterProxy
from agentos.memory.search import Memory
from agentos.memory.vectors import open_vector_store
from agentos.router.jobs import Completion, InferenceRequest
from agentos.scheduler.display import RunOutcome
from agentos.sinks.store import publish_item_op
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import Config
from agentos.store.owners import Owner
from agentos.store.writer import Update

SHIP_EVERY_S = 0.05
"""How often a run host sends its buffered records on (``top`` sees events this late)."""


def short_node(node_id: str) -> str:
    """A Ray node id as ``runs.node`` and ``top`` show it: its first 12 hex digits."""
    return node_id[:12]


@dataclass(frozen=True)
class WorkerSetup:
    """What every run on a worker shares, sent once per run host (per task for tasks).

    ``config`` holds no engines and no secrets: runs reach models through ``router``.
    ``reader``: the drain's reader (StoreReader or ReadRelay) every read goes through, so
    no node opens the driver's database file; ``db_path`` only names it in messages.
    ``memory_model``: the driver's embedding model (``memory_search``), None without one.
    """

    router: Any
    queue: Any
    reader: Any
    db_path: str
    owner: Owner
    agents_file: str | None
    agents: AgentsFile | None
    config: Config
    memory_model: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """One run to execute: its agent, the row the driver created, its variables."""

    spec: AgentSpec
    run_id: str
    variables: dict[str, Any]
    sample_base: int
    seeded: tuple[int, str | None]
    """The run's last event (seq, hash) as the driver left it: (0, None), or the event the
    driver recorded on a run that replaces one lost with its node."""
    paused: bool = False


DisplayLine = tuple[str, tuple[Any, ...]]
"""A display call made by a run on a worker: the method's name and its arguments."""

_current_run: contextvars.ContextVar[str] = contextvars.ContextVar("agentos_run", default="")
"""The run whose code is executing (set in its task; threads and callbacks it starts
inherit it), so a display call can be told apart from other runs' on one host."""


class ForwardingDisplay:
    """A run's display on a worker: its attempt lines and messages kept by run, for the
    driver to show (the driver shows runs starting and finishing itself)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[DisplayLine]] = {}

    def _keep(self, method: str, *args: Any) -> None:
        self.pending.setdefault(_current_run.get(), []).append((method, args))

    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None:
        """Shown by the driver."""

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None:
        self._keep("attempt_finished", run_id, agent, ok, successes, attempts, detail)

    def run_finished(self, outcome: RunOutcome) -> None:
        """Shown by the driver."""

    def message(self, text: str) -> None:
        self._keep("message", text)

    def close(self) -> None:
        """Nothing to close."""

    def take(self, run_id: str | None = None) -> dict[str, list[DisplayLine]]:
        """The lines kept (of ``run_id`` only, if given), by run; forgotten here."""
        if run_id is None:
            taken, self.pending = self.pending, {}
            return taken
        lines = self.pending.pop(run_id, None)
        return {run_id: lines} if lines else {}


Answer = tuple[str | None, Completion]
"""A model answer a run got: its job id and the completion."""


class AnsweredRouter:
    """The runs' router on a worker (the router actor's proxy), keeping each run's
    answers for the driver, whose lane counts them against the agent's budget and its
    cache tally as its own router would (:meth:`ClusterRun.observe`)."""

    def __init__(self, router: RouterProxy) -> None:
        self.router = router
        self.pending: dict[str, list[Answer]] = {}

    async def submit(self, request: InferenceRequest, **options: Any) -> Completion:
        completion = await self.router.submit(request, **options)
        self.pending.setdefault(_current_run.get(), []).append((options.get("job_id"), completion))
        return completion

    def reject(self, completion: Completion) -> None:
        self.router.reject(completion)

    def take(self, run_id: str | None = None) -> dict[str, list[Answer]]:
        """The answers kept (of ``run_id`` only, if given), by run; forgotten here."""
        if run_id is None:
            taken, self.pending = self.pending, {}
            return taken
        answers = self.pending.pop(run_id, None)
        return {run_id: answers} if answers else {}


@dataclass(frozen=True)
class Report:
    """What one run (or all runs of a host) did since the driver last asked."""

    lines: dict[str, list[DisplayLine]]
    answers: dict[str, list[Answer]]


@dataclass(frozen=True)
class Progress:
    """A run in flight, as the driver's stand-in shows it to ``top``."""

    state: str
    successes: int
    failed_attempts: int
    attempts: int
    in_flight: int
    """Attempts under way (a prompt run's; 0 for other kinds)."""


@dataclass(frozen=True)
class RemoteOutcome:
    """How a run on a worker ended, and where it ran."""

    outcome: RunOutcome
    node: str
    failed_attempts: int
    report: Report
    """Its display lines and answers not yet sent with a progress answer."""


class Worker:
    """The runs of one worker process (a run host's, or a task's one run)."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.store = RemoteStore(setup.queue, setup.db_path, setup.owner, reader=setup.reader)
        self.display = ForwardingDisplay()
        self.router = AnsweredRouter(RouterProxy(setup.router))
        memory = None
        if setup.memory_model is not None:
            memory = Memory(
                self.store,  # type: ignore[arg-type]
                self.router,
                setup.memory_model,
                self.store.vectors()
                if setup.config.vector_store.type == "sqlite"
                else open_vector_store(setup.config.vector_store, self.store),  # type: ignore[arg-type]
            )
        self.node = short_node(ray.get_runtime_context().get_node_id())
        self.context = RunContext(
            router=self.router,
            store=self.store,  # type: ignore[arg-type]
            display=self.display,
            agents_file=setup.agents_file,
            agents=setup.agents,
            config=setup.config,
            on_result=[self._publish],
        )
        self.context.memory = memory
        self.runs: dict[str, AgentRun] = {}
        self.committed = SharedFlush(self.store.aflush)
        self.ship_at_start = True
        """Ship a run's ``runs.node`` at once (a task's worker has no shipping loop)."""

    def _publish(self, spec: AgentSpec, run_id: str, data: Any) -> None:
        if spec.output_sink:
            op = publish_item_op(spec.output_sink, data, produced_by=run_id, now=time.time())
            self.store.submit(op)

    async def execute(self, request: RunRequest) -> RemoteOutcome:
        run: Any = make_run(
            request.spec,
            self.context,
            variables=request.variables,
            sample_base=request.sample_base,
        )
        run.run_id = request.run_id
        run.seeded = request.seeded
        if request.paused:
            run.pause()
        self.runs[request.run_id] = run
        self.store.submit(Update("runs", request.run_id, {"node": self.node}))
        if self.ship_at_start:
            self.store.ship()
        _current_run.set(request.run_id)
        try:
            outcome = await run.run()
        finally:
            self.runs.pop(request.run_id, None)
            await self.committed()
        return RemoteOutcome(
            outcome=outcome,
            node=self.node,
            failed_attempts=run.failed_attempts,
            report=self.report(request.run_id),
        )

    async def ship_every(self, seconds: float) -> None:
        """Send the buffered records on every ``seconds`` (until cancelled), so ``top``
        sees a run's events as it goes and a node's death loses at most that much."""
        while True:
            await asyncio.sleep(seconds)
            self.store.ship()

    def control(self, run_id: str, action: str, reason: str = "", payload: Any = None) -> bool:
        """``pause``, ``resume`` or ``cancel`` the run, or record an ``event`` of it
        (``reason`` is its type); False when it is not here."""
        run: Any = self.runs.get(run_id)
        if run is None:
            return False
        if action == "pause":
            run.pause()
        elif action == "resume":
            run.resume()
        elif action == "event":
            run.event(reason, **(payload or {}))
        else:
            run.cancel(reason)
        return True

    def report(self, run_id: str | None = None) -> Report:
        """The display lines and answers since the last report (of ``run_id`` only)."""
        return Report(self.display.take(run_id), self.router.take(run_id))

    def progress(self) -> tuple[dict[str, Progress], Report]:
        """The runs in flight, and what every run did since the last call."""
        runs = {
            run_id: Progress(
                run.state,
                run.successes,
                run.failed_attempts,
                run.attempts,
                getattr(run, "in_flight", 0),
            )
            for run_id, run in self.runs.items()
        }
        return runs, self.report()


class RunHost:
    """Runs without a resource request, many at once, on one node (an async actor)."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.worker = Worker(setup)
        self.worker.ship_at_start = False  # the shipping loop sends it within SHIP_EVERY_S
        self._shipper: asyncio.Task[None] | None = None
        self._outcomes = Answers()

    async def ready(self) -> str:
        """Start shipping records; the node this host runs on (short id)."""
        if self._shipper is None:
            self._shipper = asyncio.create_task(self.worker.ship_every(SHIP_EVERY_S))
        return self.worker.node

    async def execute(self, request: RunRequest) -> RemoteOutcome:
        return await self.worker.execute(request)

    def execute_many(self, caller: str, items: list[tuple[int, RunRequest]]) -> None:
        """Start every run of ``items`` (the driver's dispatches of one tick); their
        outcomes are ``caller``'s to take with :meth:`outcomes`."""
        for number, request in items:
            self._outcomes.start(caller, number, self.worker.execute(request))

    async def outcomes(self, caller: str, timeout_s: float) -> list[Reply]:
        """``caller``'s run outcomes (or errors) ready now, waiting up to ``timeout_s``."""
        return await self._outcomes.take(caller, timeout_s)

    async def control(
        self, run_id: str, action: str, reason: str = "", payload: Any = None
    ) -> bool:
        return self.worker.control(run_id, action, reason, payload)

    async def progress(self) -> tuple[dict[str, Progress], Report]:
        return self.worker.progress()

    async def stop(self) -> None:
        if self._shipper is not None:
            self._shipper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shipper
        await self.worker.store.aflush()


RunHostActor: Any = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(RunHost)
"""``RunHost`` as a Ray actor class."""


def _execute_task(setup: WorkerSetup, request: RunRequest) -> RemoteOutcome:
    worker = Worker(setup)
    try:
        return asyncio.run(_shipping(worker, request))
    finally:
        worker.store.close()


async def _shipping(worker: Worker, request: RunRequest) -> RemoteOutcome:
    shipper = asyncio.create_task(worker.ship_every(SHIP_EVERY_S))
    try:
        return await worker.execute(request)
    finally:
        shipper.cancel()


execute_task: Any = ray.remote(max_retries=0)(_execute_task)
"""One run as a Ray task: ``execute_task.options(**resources).remote(setup, request)``."""
