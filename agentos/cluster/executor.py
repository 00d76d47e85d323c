"""The driver's side of ``agentos run --cluster``: runs executed on a Ray cluster.

The scheduler stays in the driver (claims, renewals, budgets, samples, fires, health,
snapshots: :class:`~agentos.scheduler.lifecycle.AgentLane` as on one machine); the one
thing that moves is the run itself. When the runtime has a :class:`ClusterExecutor`, the
lane asks it (``make_run``) instead of ``registry.make_run`` and gets a
:class:`ClusterRun`, a stand-in that satisfies :class:`~agentos.agents.base.AgentRun`:

1. it creates the run's row in the driver (``queries.create_run``, queued on the
   driver's writer; every record a worker ships is submitted to that writer by the
   :class:`~agentos.cluster.records.RecordDrain` later, so the row is always written
   before anything that refers to it);
2. it sends the run to a node (:mod:`agentos.cluster.worker`): to the node's
   :class:`~agentos.cluster.worker.RunHost` (the least busy one) or, for an agent with
   ``resources``, as a Ray task holding them;
3. while the run goes, its counters come from the hosts (polled twice a second), and
   ``pause``, ``resume`` and ``cancel`` are forwarded (a task run can only be cancelled);
4. when the run's node dies (the call fails with ``NodeDiedError``, ``ActorDiedError``,
   ``ActorUnavailableError``, ``WorkerCrashedError``…), the lost run is finished as
   ``crashed`` with an error naming the node, and a new run of the same work is started
   with ``parent_id`` and ``forked_from`` = the lost run, its first event
   ``retried_after_node_loss`` saying why; at most ``cluster.max_node_retries`` times.
   A sink item stays claimed by the driver throughout (its lane renews it).

The executor also keeps one run host per live node (a new node gets one; a dead node's
host is dropped and its runs retried elsewhere) and the node table for ``top``
(:meth:`ClusterExecutor.nodes`).

A run's display lines (attempts, messages) and its answers reach the driver with the
counters (a task run's when it ends): the lines go to the lane's display, the answers to
the lane's router (:meth:`ClusterRun.take`), whose budget and cache tally count them as
they count a local run's.

Nothing of the database file and no engine key goes to the nodes: a worker gets the
config with its secrets taken out and no engines (:func:`~agentos.cluster.secrets.split_secrets`),
and reads (``memory_search`` included, with the driver's embedding model) through the
drain's reader (:class:`~agentos.cluster.reads.StoreReader`, or the driver itself for a
Ray client driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentos.agents.base import RunContext
from agentos.cluster.batching import CallBatcher
from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore
from agentos.cluster.router_actor import RouterActorClass
from agentos.cluster.secrets import split_secrets
from agentos.cluster.worker import (
    Progress,
    RemoteOutcome,
    Report,
    RunHostActor,
    RunRequest,
    WorkerSetup,
    execute_task,
    short_node,
)
from agentos.errors import AgentosError, ClusterError
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import ClusterConfig, Config
from agentos.store import Store, owners, queries

NODE_LOST_ERRORS: tuple[type[BaseException], ...] = (
    rex.NodeDiedError,
    rex.RayActorError,  # ActorDiedError, ActorUnavailableError
    rex.WorkerCrashedError,
    rex.LocalRayletDiedError,
    rex.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailedError...
)
"""What a run's call raises when the node (or worker process) executing it is gone."""

INTERRUPT_GRACE_S = 5.0
"""How long an interrupted driver waits for a run on a node to record that it ended."""

PROGRESS_EVERY_S = 0.5
"""How often the driver asks the run hosts for their runs' counters (``top``)."""


def dispatch(host: HostEntry, request: RunRequest) -> Awaitable[RemoteOutcome]:
    """One run to one run host; awaitable (→ RemoteOutcome). The one place runs reach a
    host: the dispatches of one event-loop tick go to a host as one actor call, and the
    outcomes come back in batches (:mod:`agentos.cluster.batching`). A run's own error
    is raised as the ``RayTaskError`` a plain actor call would raise."""
    if host.calls is None:
        host.calls = CallBatcher(host.actor.execute_many.remote, host.actor.outcomes.remote)
    return _outcome(host.calls, request)


async def _outcome(calls: CallBatcher, request: RunRequest) -> RemoteOutcome:
    try:
        outcome: RemoteOutcome = await calls.call(request)
    except rex.RayError:
        raise
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc))
        raise rex.RayTaskError("RunHost.execute", trace, exc) from None
    return outcome


def planned(spec: AgentSpec) -> tuple[int, int]:
    """The results a run of ``spec`` wants and its attempt cap, as its run class sets them
    (the driver creates the row and tells the display before the run exists)."""
    if spec.kind == "prompt":
        return spec.life_cycle.length, spec.life_cycle.attempt_cap
    if spec.kind == "planner":
        return 1, spec.max_replans + 1
    if spec.kind == "task":
        return 1, spec.retry.max_attempts
    return 1, spec.termination.max_turns


@dataclass
class HostEntry:
    """A run host and the runs it has in flight."""

    actor: Any
    node_id: str
    runs: dict[str, ClusterRun] = field(default_factory=dict)
    calls: CallBatcher | None = None
    """The driver's coalesced calls to this host (made on first dispatch)."""


class ClusterExecutor:
    """The driver's pieces on the cluster ``ray.init`` connected to (module docstring).

    ``start()`` (blocking: call it in a thread) starts the record queue and its drain, the
    router actor (on the driver's node, so a worker node's death takes neither the way to
    the database nor the one router with it) and a run host per live node; ``watch()``
    keeps hosts and the node table current; ``close()`` stops it all.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        owner: owners.Owner,
        *,
        agents_file: str | None,
        agents: AgentsFile | None,
        display: Display,
        memory_model: str | None = None,
    ) -> None:
        self.store = store
        self.memory_model = memory_model
        """The embedding model the driver's memory uses; None: no memory_search on nodes."""
        self.config = config
        self.cluster: ClusterConfig = config.cluster
        self.owner = owner
        self.display = display
        self.agents_file = agents_file
        self.agents = dataclasses.replace(agents, locators=()) if agents is not None else None
        self.queue: Any = None
        self.router: Any = None
        self.drain: RecordDrain | None = None
        self.setup: Any = None
        """The ObjectRef of the runs' :class:`WorkerSetup` (put once, read by every task)."""
        self.hosts: dict[str, HostEntry] = {}
        """Run hosts by node id (one per live node)."""
        self.tasks: dict[str, ClusterRun] = {}
        """Runs in flight as Ray tasks, by run id."""
        self._nodes: list[dict[str, Any]] = []
        self._router_snapshot: dict[str, Any] | None = None
        self._hosts_lock = asyncio.Lock()
        """Held while hosts are replaced, so that two lost calls start one host per node."""

    # -- life ----------------------------------------------------------------------------

    def start(self) -> ClusterExecutor:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = RecordQueueActor.options(scheduling_strategy=here).remote()
        self.drain = RecordDrain(self.store, self.queue).start()
        # engine keys never go into the creation arguments (Ray keeps those) nor to workers
        public, secrets = split_secrets(self.config)
        self.router = RouterActorClass.options(scheduling_strategy=here).remote(
            public, self.queue, str(self.store.path.resolve()), self.owner
        )
        ray.get(self.router.start.remote(secrets))
        assert self.drain.reader is not None
        self.setup = ray.put(
            WorkerSetup(
                router=self.router,
                queue=self.queue,
                reader=self.drain.reader,
                db_path=str(self.store.path.resolve()),
                owner=self.owner,
                agents_file=self.agents_file,
                agents=self.agents,
                config=public.model_copy(update={"engines": []}),
                memory_model=self.memory_model,
            )
        )
        self._refresh_hosts()
        if not self.hosts:
            raise ClusterError("the Ray cluster has no live node to run agents on")
        return self

    def _refresh_hosts(self) -> None:
        """Read the node table; drop hosts of dead nodes, start one on each live node
        without one (blocking)."""
        nodes = ray.nodes()
        self._nodes = nodes
        alive = {n["NodeID"] for n in nodes if n.get("Alive")}
        for node_id in list(self.hosts):
            if node_id not in alive:
                del self.hosts[node_id]
        started = {}
        for node_id in alive - set(self.hosts):
            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
            actor = RunHostActor.options(scheduling_strategy=strategy).remote(self.setup)
            started[node_id] = actor
        if started:
            ready = {node_id: actor.ready.remote() for node_id, actor in started.items()}
            for node_id, ref in ready.items():
                try:
                    ray.get(ref, timeout=60)
                except rex.RayError as exc:
                    self.display.message(
                        f"cluster: no run host on node {short_node(node_id)}: {exc}"
                    )
                    continue
                self.hosts[node_id] = HostEntry(started[node_id], node_id)

    async def replace_hosts(self) -> None:
        async with self._hosts_lock:
            await asyncio.to_thread(self._refresh_hosts)

    async def watch(self) -> None:
        """Until cancelled: the hosts' counters twice a second, the node table (and hosts
        for new nodes, none for dead ones) every ``cluster.health_check_s``."""
        next_look = time.monotonic() + self.cluster.health_check_s
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            await self._progress()
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + self.cluster.health_check_s
                await self.replace_hosts()

    async def _progress(self) -> None:
        try:
            self._router_snapshot = await self.router.snapshot.remote()
        except rex.RayError:
            self._router_snapshot = None
        entries = [e for e in self.hosts.values() if e.runs]
        if not entries:
            return
        answers = await asyncio.gather(
            *(_awaited(e.actor.progress.remote()) for e in entries), return_exceptions=True
        )
        for entry, answer in zip(entries, answers, strict=True):
            if isinstance(answer, BaseException):
                continue
            progress, report = answer
            for run_id, now in progress.items():
                run = entry.runs.get(run_id)
                if run is not None:
                    run.progress(now)
            for run_id in {*report.lines, *report.answers}:
                run = entry.runs.get(run_id)
                if run is not None:
                    run.take(report, run_id)
                else:  # it ended while this answer came: its lines are shown all the same
                    for method, args in report.lines.get(run_id, []):
                        getattr(self.display, method)(*args)

    def close(self) -> None:
        """Stop the hosts and the router (their last records committed), then the drain."""
        try:
            stops = [e.actor.stop.remote() for e in self.hosts.values()]
            if self.router is not None:
                stops.append(self.router.stop.remote())
            for ref in stops:
                # a host on a node that died meanwhile: its runs are settled
                with contextlib.suppress(rex.RayError):
                    ray.get(ref, timeout=30)
        finally:
            if self.drain is not None:
                self.drain.stop()
            self.store.flush()

    # -- runs ----------------------------------------------------------------------------

    def make_run(
        self,
        spec: AgentSpec,
        context: RunContext,
        *,
        variables: dict[str, Any] | None = None,
        sample_base: int = 0,
    ) -> ClusterRun:
        """What the lane gets instead of ``registry.make_run``'s run."""
        return ClusterRun(self, spec, context, variables or {}, sample_base)

    def pick_host(self) -> HostEntry:
        if not self.hosts:
            raise ClusterError("the Ray cluster has no live node with a run host")
        return min(self.hosts.values(), key=lambda e: len(e.runs))

    async def settle(self) -> None:
        """Return once every record shipped to the queue so far is committed: an empty
        batch put behind them, waited for (``RemoteStore.aflush``)."""
        barrier = RemoteStore(self.queue, self.store.path, self.owner)
        try:
            await barrier.aflush(timeout=30)
        except (TimeoutError, rex.RayError) as exc:
            self.display.message(f"cluster: records not settled after a node's loss: {exc}")

    def router_snapshot(self) -> dict[str, Any] | None:
        """The router actor's snapshot as of the last look (None before the first)."""
        return self._router_snapshot

    def nodes(self) -> list[dict[str, Any]]:
        """The node table for ``top``: per node its short id, address, whether it is
        alive, its CPUs and the runs in flight there (as of the last look)."""
        counts: dict[str, int] = {}
        for entry in self.hosts.values():
            counts[entry.node_id] = counts.get(entry.node_id, 0) + len(entry.runs)
        for run in self.tasks.values():
            if run.node_id is not None:
                counts[run.node_id] = counts.get(run.node_id, 0) + 1
        return [
            {
                "node": short_node(n["NodeID"]),
                "address": n.get("NodeManagerAddress", ""),
                "alive": bool(n.get("Alive")),
                "cpus": float(n.get("Resources", {}).get("CPU", 0.0)),
                "runs": counts.get(n["NodeID"], 0),
            }
            for n in self._nodes
        ]

    def node_of(self, short: str | None) -> str | None:
        """The full id of the node whose short id is ``short``."""
        if short is None:
            return None
        return next((n["NodeID"] for n in self._nodes if n["NodeID"].startswith(short)), None)


async def _awaited(ref: Any) -> Any:
    return await ref


class ClusterRun:
    """One piece of an agent's work on the cluster, as the lane sees a run (module
    docstring): the runs it makes (one, more after node losses) are recorded as any run
    is; ``run_id`` is the latest one's."""

    def __init__(
        self,
        executor: ClusterExecutor,
        spec: AgentSpec,
        context: RunContext,
        variables: dict[str, Any],
        sample_base: int,
    ) -> None:
        self.executor = executor
        self.spec = spec
        self.context = context
        self.variables = variables
        self.sample_base = sample_base
        self.run_id = ""
        self.status = "pending"
        self.successes = 0
        self.failed_attempts = 0
        self.attempts = 0
        self.paused = False
        self.wanted = planned(spec)[0]
        self.in_flight = 0
        """Attempts under way on the node, as of the last progress answer (what a spent
        budget waits for, :func:`~agentos.scheduler.budget.stop_when_idle`)."""
        self.node_id: str | None = None
        """The node executing the current run, once known."""
        self._host: HostEntry | None = None
        self._ref: Any = None
        self._remote_state = "running"
        self._cancel_reason: str | None = None

    @property
    def agent(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        if self.status == "running" and (self.paused or self._remote_state == "paused"):
            return "paused"
        return self.status

    def progress(self, now: Progress) -> None:
        self._remote_state = now.state
        self.successes, self.failed_attempts, self.attempts = (
            now.successes,
            now.failed_attempts,
            now.attempts,
        )
        self.in_flight = now.in_flight

    def event(self, type_: str, **payload: Any) -> None:
        """Record an event of the run (a spent budget's), on its node; a task run's
        cannot be reached and is not recorded."""
        if self._host is not None and self.run_id:
            self._host.actor.control.remote(self.run_id, "event", type_, payload)

    def take(self, report: Report, run_id: str) -> None:
        """What the run did on its node, as the lane's router and display would have seen
        it here: its answers (the agent's budget and cache tally count them), then its
        display lines."""
        observe = getattr(self.context.router, "observe", None)
        for job_id, completion in report.answers.get(run_id, []):
            if observe is not None:
                observe(completion, job_id)
        for method, args in report.lines.get(run_id, []):
            getattr(self.context.display, method)(*args)

    # -- controls, forwarded ------------------------------------------------------------

    def _control(self, action: str, reason: str = "") -> None:
        if self._host is not None and self.run_id:
            self._host.actor.control.remote(self.run_id, action, reason)

    def pause(self) -> None:
        self.paused = True
        self._control("pause")

    def resume(self) -> None:
        self.paused = False
        self._control("resume")

    def cancel(self, reason: str) -> None:
        self._cancel_reason = reason
        if self._host is not None:
            self._control("cancel", reason)
        elif self._ref is not None:
            ray.cancel(self._ref)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        executor = self.executor
        retries = executor.cluster.max_node_retries
        lost: tuple[str, str, str] | None = None  # (run id, node, error) of the lost run
        wanted, cap = planned(self.spec)
        while True:
            request = self._create(wanted, lost)
            self.status = "running"
            self.context.display.run_started(self.run_id, self.spec.name, wanted, cap)
            try:
                result = await self._execute(request)
            except NODE_LOST_ERRORS as exc:
                node = await self._lost_node()
                error = f"crashed: node {node} died while the run went ({type(exc).__name__})"
                queries.finish_run(
                    executor.store,
                    self.run_id,
                    status="crashed",
                    error=error,
                    successes=self.successes,
                    attempts=self.attempts,
                )
                executor.display.message(f"{self.spec.name}: run {self.run_id} lost: {error}")
                if self._host is not None:
                    await executor.replace_hosts()
                if retries <= 0 or self._cancel_reason is not None:
                    outcome = self._failed(f"{error}; no retries left (cluster.max_node_retries)")
                    self.context.display.run_finished(outcome)
                    return outcome
                retries -= 1
                lost = (self.run_id, node, error)
                continue
            except rex.TaskCancelledError:
                return self._finish_here("cancelled", self._cancel_reason or "cancelled")
            except rex.RayTaskError as exc:
                cause = exc.cause
                message = cause.message if isinstance(cause, AgentosError) else str(cause)
                self._finish_here("failed", message)
                if isinstance(cause, AgentosError):
                    raise cause from None
                raise ClusterError(f"run {self.run_id} failed on the cluster: {message}") from None
            finally:
                self._detach()
            outcome = result.outcome
            self.take(result.report, self.run_id)
            self.status = outcome.status
            self.successes = outcome.successes
            self.attempts = outcome.attempts
            self.failed_attempts = result.failed_attempts
            self.context.display.run_finished(outcome)
            return outcome

    def _create(self, wanted: int, lost: tuple[str, str, str] | None) -> RunRequest:
        """The run's row in the driver's store (queued before any record of the worker's);
        the request that sends it to a node."""
        store = self.executor.store
        self.run_id = queries.create_run(
            store,
            agent=self.spec.name,
            kind=self.spec.kind,
            spec=self.spec.model_dump(mode="json"),
            wanted=wanted,
            agents_file=self.executor.agents_file,
            parent_id=lost[0] if lost else None,
            forked_from=lost[0] if lost else None,
            flush=False,
        )
        seeded: tuple[int, str | None] = (0, None)
        if lost is not None:
            events = queries.RunEvents(store, self.run_id, seeded=seeded)
            events.add(
                "retried_after_node_loss", {"lost_run": lost[0], "node": lost[1], "error": lost[2]}
            )
            seeded = (events.last_seq, events.last_hash)
        self.successes = self.failed_attempts = self.attempts = self.in_flight = 0
        self._remote_state = "running"
        return RunRequest(
            spec=self.spec,
            run_id=self.run_id,
            variables=self.variables,
            sample_base=self.sample_base,
            seeded=seeded,
            paused=self.paused,
        )

    async def _execute(self, request: RunRequest) -> RemoteOutcome:
        executor = self.executor
        resources = self.spec.resources
        if resources is None:
            host = executor.pick_host()
            self._host = host
            self.node_id = host.node_id
            host.runs[self.run_id] = self
            self._ref = dispatch(host, request)
        else:
            executor.tasks[self.run_id] = self
            options = resources.ray_options()
            self._ref = execute_task.options(**options).remote(executor.setup, request)
            asyncio.get_running_loop().call_later(1.0, self._find_task_node, self.run_id)
        future = asyncio.ensure_future(_awaited(self._ref))
        try:
            result: RemoteOutcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            await self._interrupted(future)
            raise
        self.node_id = executor.node_of(result.node)
        return result

    async def _interrupted(self, future: asyncio.Future[Any]) -> None:
        """The lane's task was cancelled (Ctrl-C, SIGTERM): end the run on its node as a
        local run ends, ``cancelled`` with error ``interrupted``, waiting up to
        :data:`INTERRUPT_GRACE_S` for it to be recorded; a run that is not (a task run,
        which ``ray.cancel`` stops without letting it record anything) is finished
        here."""
        if self._host is not None:
            self._control("cancel", "interrupted")
        elif self._ref is not None:
            ray.cancel(self._ref)
        try:
            result: RemoteOutcome = await asyncio.wait_for(future, INTERRUPT_GRACE_S)
            self.take(result.report, self.run_id)
            self.context.display.run_finished(result.outcome)
        except (TimeoutError, rex.RayError):
            # not recorded by the node in time (a task run never is): the driver's actors
            # and tasks end with it, so nothing will finish the row but this
            self._finish_here("cancelled", "interrupted")
        except asyncio.CancelledError:
            pass  # interrupted again: left running, found crashed once the owner ended

    def _find_task_node(self, run_id: str) -> None:
        """A task run's node, from its row (the worker writes it first), for ``top``."""
        if self.run_id != run_id or run_id not in self.executor.tasks:
            return
        row = self.executor.store.db.execute("SELECT node FROM runs WHERE id = ?", [run_id])
        found = row.fetchone()
        if found and found[0]:
            self.node_id = self.executor.node_of(found[0])
        else:
            asyncio.get_running_loop().call_later(1.0, self._find_task_node, run_id)

    def _detach(self) -> None:
        if self._host is not None:
            self._host.runs.pop(self.run_id, None)
        self.executor.tasks.pop(self.run_id, None)
        self._ref = None

    async def _lost_node(self) -> str:
        """The short id of the node the current run was lost with, once every record the
        node shipped before it died is committed (so the lost run is finished after its
        last events, and its anchor covers them)."""
        await self.executor.settle()
        if self._host is not None:
            return short_node(self._host.node_id)
        row = self.executor.store.db.execute(
            "SELECT node FROM runs WHERE id = ?", [self.run_id]
        ).fetchone()
        if row and row[0]:
            return str(row[0])
        return short_node(self.node_id) if self.node_id else "(unknown)"

    def _failed(self, error: str) -> RunOutcome:
        self.status = "failed"
        return RunOutcome(
            run_id=self.run_id,
            agent=self.spec.name,
            status="failed",
            wanted=planned(self.spec)[0],
            successes=self.successes,
            attempts=self.attempts,
            error=error,
        )

    def _finish_here(self, status: queries.RunStatus, error: str) -> RunOutcome:
        """Finish a run the worker could not (it never opened, or was cancelled as a task)."""
        queries.finish_run(
            self.executor.store,
            self.run_id,
            status=status,
            error=error,
            successes=self.successes,
            attempts=self.attempts,
        )
        self.status = status
        outcome = dataclasses.replace(self._failed(error), status=status)
        self.context.display.run_finished(outcome)
        return outcome
