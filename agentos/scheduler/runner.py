"""The scheduler's entry point: start the engines, open the store, drive the agents.

Local engines start on the first request the router sends them (a re-run served from the
cache never loads the local model); remote engines are detected at start-up.

:func:`run_agents` is what ``agentos run`` calls. It starts the engines and one router
they share, opens the store, and hands the selected agents to a
:class:`~agentos.scheduler.runtime.Runtime`, which runs each according to its
life-cycle (single-shot, perpetual, scheduled; see :mod:`agentos.scheduler.lifecycle`)
until all are done, or, for a daemon, until it is stopped. Next to it run the snapshot
writer (what ``agentos top`` shows) and the control poller (``top``'s pause, resume and
cancel); both see every run the runtime starts, also those it starts hours later.

The runtime is an owner of runs and claims (:mod:`agentos.store.owners`): it sweeps what
processes that are gone left behind (their runs become ``crashed``, their sink claims are
free at once) when it starts, and writes a heartbeat, sweeping again, every few seconds.
When the store stops taking writes (a full disk), the runtime is cancelled at once, so
no model call is spent on work that cannot be recorded; its runs are marked failed if
the storage still takes that, and :class:`~agentos.errors.StoreFailure` is raised (the
CLI exits 1).

Before anything is recorded, every agent is checked against the engines that actually
came up (model served, engine healthy), so a configuration that cannot work fails with
one clear error and writes nothing. Before even the engines start, a runtime whose agents
have nothing to do (a ``--once`` call for a fire another process already ran, a sink
reader with an empty sink) says so and returns: cron may call ``--once`` every minute,
and starting a local model to find nothing due would waste it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from agentos.agents.base import RunContext
from agentos.errors import AgentosError, SpecError, StoreError, StoreFailure
from agentos.health.alerts import Alerts
from agentos.health.board import HealthBoard
from agentos.router.engines import open_engines, recording_router
from agentos.router.jobs import InferenceRequest
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.clock import Clock, SystemClock
from agentos.scheduler.control import ControlPoller
from agentos.scheduler.display import Display, RunOutcome
from agentos.scheduler.fires import FireLedger, cron_series, due_once
from agentos.scheduler.lifecycle import FIRE_TIME_VARIABLE
from agentos.scheduler.runtime import Runtime
from agentos.scheduler.snapshots import SnapshotWriter
from agentos.sinks import SinkStore, publisher
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import Config
from agentos.spec.templates import render
from agentos.store import Store, owners
from agentos.usage.pricing import Pricing


def select_agents(agents: AgentsFile, names: Sequence[str]) -> list[AgentSpec]:
    """The agents named, in file order; an unknown name is an error.

    With no names: every agent of the file except those that are members of a team in it
    (a member speaks inside its team's runs; name it with ``--agent`` to run it alone).
    """
    if not names:
        members = {m for a in agents.agents if a.kind == "team" for m in a.members}
        return [a for a in agents.agents if a.name not in members]
    known = {a.name: a for a in agents.agents}
    missing = [n for n in names if n not in known]
    if missing:
        raise SpecError(
            f"no agent named {', '.join(repr(m) for m in missing)} "
            f"(agents in the file: {', '.join(repr(k) for k in known)})",
            file=str(agents.path),
        )
    return [a for a in agents.agents if a.name in set(names)]


def check_renderable(agents: Sequence[AgentSpec], variables: dict[str, Any], file: str) -> None:
    """Render every prompt once with the run's variables, so a variable that has no value
    fails before anything runs.

    A sink reader run without ``--var`` values gets its variables from the sink's items,
    which are only known at run time, so it is not checked; a scheduled agent's runs get
    ``fire_time``.
    """
    for agent in agents:
        if agent.input_sink and not variables:
            continue
        values = {**agent.vars, **variables}
        if agent.life_cycle.type == "scheduled":
            values.setdefault(FIRE_TIME_VARIABLE, "2000-01-01T00:00:00+00:00")
        try:
            if agent.prompt is not None:
                render(agent.prompt, values)
            if agent.system:
                render(agent.system, values)
        except SpecError as exc:
            hint = (
                f"; agent '{agent.name}' reads its variables from sink '{agent.input_sink}' — "
                "give them with --var NAME=VALUE"
                if agent.input_sink
                else ""
            )
            raise SpecError(f"agent '{agent.name}': {exc.reason}{hint}", file=file) from None


def nothing_to_do(
    agents: Sequence[AgentSpec],
    *,
    db_path: Path,
    clock: Clock,
    once: bool,
    variables: dict[str, Any],
) -> dict[str, str] | None:
    """Per agent, the line that says why it has nothing to do now; ``None`` when one of
    them may have work.

    Only looks (an existing database is read, a missing one means nothing has happened
    yet); the runtime decides again under its claims, so a race with another process is
    settled there, never here.
    """
    reasons: dict[str, str] = {}
    store = Store(db_path) if db_path.exists() else None
    sinks = SinkStore(store, owner="look") if store is not None else None
    try:
        for agent in agents:
            cycle = agent.life_cycle
            by_hand = cycle.type == "single-shot" or (once and cycle.type == "perpetual")
            if agent.input_sink and by_hand:
                if variables or (
                    sinks is not None and sinks.claimable(agent.input_sink, agent.name)
                ):
                    return None
                reasons[agent.name] = (
                    f"nothing to do: sink '{agent.input_sink}' has no items pending for it "
                    "(give its variables with --var NAME=VALUE to run it once without an item)"
                )
            elif once and cycle.type == "scheduled":
                series = cron_series(agent)
                last = None
                if store is not None:
                    last = FireLedger(store, claimed_by="look").last_fire_time(agent.name)
                decision = due_once(agent, series, now=clock.now(), last_seen=last)
                if decision.action in ("run", "missed"):
                    return None
                nxt = series.label(series.next_after(clock.now()))
                reasons[agent.name] = f"nothing due: {decision.reason()}; next fire {nxt}"
            else:
                return None
    finally:
        if sinks is not None:
            sinks.close()
        if store is not None:
            store.close()
    return reasons


async def run_agents(
    agents: Sequence[AgentSpec],
    *,
    config: Config,
    db_path: Path,
    display: Display,
    agents_file: str | None = None,
    variables: dict[str, Any] | None = None,
    log_dir: Path | None = None,
    all_agents: AgentsFile | None = None,
    once: bool = False,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
) -> list[RunOutcome]:
    """Start the engines, drive every agent by its life-cycle, stop the engines; outcomes
    by agent (in ``agents`` order), each agent's in the order its runs ended.

    With ``config.cluster.address`` set, the runs execute on that Ray cluster
    (:mod:`agentos.cluster.executor`; the driver connects before anything starts, so an
    address nothing answers on fails first, and disconnects at the end).

    ``all_agents``: the whole file the agents come from (teams look their members up in
    it). ``once``: what cron and launchd call (see :mod:`agentos.scheduler.lifecycle`);
    an empty list means nothing was due. ``clock``: the scheduler's time (tests pass a
    :class:`~agentos.scheduler.clock.ManualClock`). ``stop``: set it to end a daemon
    gracefully (work in flight finishes); cancelling the call ends it at once.

    The database is opened only once the engines are up and every agent is known to be
    servable, so a run that cannot start leaves no trace.
    """
    variables = variables or {}
    clock = clock or SystemClock()
    check_renderable(agents, variables, agents_file or "agents")
    if db_path.exists():
        # what crashed processes held is free again before anything looks at it
        with Store(db_path) as store:
            _sweep(store, display)
    idle = nothing_to_do(agents, db_path=db_path, clock=clock, once=once, variables=variables)
    if idle is not None:
        for name, reason in idle.items():
            display.message(f"{name}: {reason}")
        return []
    if config.cluster.address is None:
        return await _run_agents(
            agents, config, db_path, display, agents_file, variables, log_dir, all_agents, once,
            clock, stop,
        )  # fmt: skip
    from agentos.cluster.connect import connect

    address = config.cluster.address
    ray = connect(address, runtime_env=config.cluster.runtime_env)  # Ray wants the main thread
    display.message(f"cluster: connected to {address}")
    try:
        return await _run_agents(
            agents, config, db_path, display, agents_file, variables, log_dir, all_agents, once,
            clock, stop,
        )  # fmt: skip
    finally:
        ray.shutdown()


async def _run_agents(
    agents: Sequence[AgentSpec],
    config: Config,
    db_path: Path,
    display: Display,
    agents_file: str | None,
    variables: dict[str, Any],
    log_dir: Path | None,
    all_agents: AgentsFile | None,
    once: bool,
    clock: Clock,
    stop: asyncio.Event | None,
) -> list[RunOutcome]:
    async with open_engines(config, log_dir=log_dir, lazy_local=True) as engines:
        describe_engines(engines, display.message)
        probe = Router(engines)
        for agent in agents:
            probe.check_servable(
                InferenceRequest(kind="chat", model=agent.model), engine=agent.engine
            )
        store = Store(db_path)
        try:
            async with open_session(
                engines,
                store,
                display,
                config,
                agents_file=agents_file,
                all_agents=all_agents,
                variables=variables,
                once=once,
                clock=clock,
                stop=stop,
                on_cluster=config.cluster.address is not None,
            ) as session:
                session.runtime.add(agents)
                outcomes = await _run_until_store_fails(session.runtime, session.failed)
        finally:
            # also on Ctrl-C: closing ends this process's owner cleanly, where an open
            # store would leave it to be found crashed by the next sweep
            with contextlib.suppress(StoreError):
                store.close()
    return outcomes


def describe_engines(engines: Sequence[EngineHandle], say: Callable[[str], None]) -> None:
    """One line per engine: where it is, what it serves and how it is."""
    for engine in engines:
        models = ", ".join(engine.info.models) or "no models"
        if not engine.started:
            say(f"engine {engine.name} (local): {models} ({engine.info.detail})")
            continue
        state = "healthy" if engine.healthy else "unhealthy"
        if engine.info.detail != "ok":
            state += f", {engine.info.detail}" if engine.healthy else f": {engine.info.detail}"
        say(f"engine {engine.name} at {engine.client.base_url}: {models} ({state})")


def _background_embeddings(
    store: Store, router: Router, engines: list[EngineHandle], config: Config
) -> tuple[Any, Any]:
    """The ``background[embeddings]`` system process and the agents' memory, when an
    engine serves embeddings (and config.yaml does not turn them off)."""
    from agentos.memory import Embedder, Memory, embedding_model, open_vector_store

    if not config.embeddings.enabled:
        return None, None
    model = embedding_model(engines, config.embeddings.model)
    if model is None:
        return None, None
    vectors = open_vector_store(config.vector_store, store)
    embedder = Embedder(
        store,
        router,
        model,
        vectors=vectors,
        batch_size=config.embeddings.batch_size,
        max_chars=config.embeddings.max_chars,
        poll_s=config.embeddings.poll_s,
    )
    return embedder, Memory(store, router, model, vectors)


def make_context(
    router: Router,
    store: Store,
    display: Display,
    *,
    agents_file: str | None,
    all_agents: AgentsFile | None,
    config: Config,
    sinks: SinkStore,
) -> RunContext:
    """The one context every run of the runtime shares: its router, store and display,
    the agents file, the sink store (each result of an agent with an ``output_sink``
    becomes an item of it), the tool registry and the config."""
    return RunContext(
        router=router,
        store=store,
        display=display,
        agents_file=agents_file,
        agents=all_agents,
        tools=None,
        sinks=sinks,
        config=config,
        on_result=[publisher(sinks)],
    )


@dataclasses.dataclass
class Session:
    """What :func:`open_session` opened: the recording router, the runtime that starts
    runs (agents added to it are driven by their life-cycles), the context every run
    shares, and the event set when the store stops taking writes."""

    router: Router
    runtime: Runtime
    context: RunContext
    failed: asyncio.Event
    snapshots: SnapshotWriter
    extra_processes: dict[str, Callable[[], dict[str, dict[str, Any]]]] = dataclasses.field(
        default_factory=dict
    )
    """More process counters for ``top`` by who supplies them (``agentos serve``'s
    clients), merged into every snapshot."""


@contextlib.asynccontextmanager
async def open_session(
    engines: list[EngineHandle],
    store: Store,
    display: Display,
    config: Config,
    *,
    agents_file: str | None,
    all_agents: AgentsFile | None,
    variables: dict[str, Any],
    once: bool,
    clock: Clock,
    stop: asyncio.Event | None,
    on_cluster: bool = False,
) -> AsyncIterator[Session]:
    """One runtime over ``engines`` and ``store``, with everything that runs next to it:
    the recording router, the background embeddings process, the snapshot writer
    (``top``), the control poller, the owner's heartbeat and the sink store. What
    ``agentos run`` drives its agents in, and ``agentos serve`` serves in.

    On the way out: the helpers stop, the embedder gets ``embeddings.drain_s`` to embed
    what the work produced (not when the store failed), everything is closed and the
    store flushed. An :class:`AgentosError` from the body is raised after that; a failed
    store marks this process's runs failed and raises its failure.

    ``on_cluster`` (``ray.init`` done): the runs execute on the Ray cluster through a
    :class:`~agentos.cluster.executor.ClusterExecutor`, stopped (its records committed)
    before the store's last flush.
    """
    router = recording_router(engines, store, config, notices=display.message)
    error: AgentosError | None = None
    async with router:
        session: Session | None = None
        embedder, memory = _background_embeddings(store, router, engines, config)

        def processes() -> dict[str, dict[str, Any]]:
            counters = session.runtime.processes() if session is not None else {}
            if embedder is not None:
                counters = {**counters, **embedder.process_counters()}
            if session is not None:
                for extra in session.extra_processes.values():
                    counters = {**counters, **extra()}
            return counters

        snapshots = SnapshotWriter(store, router, processes, pricing=Pricing.from_config(config))
        await asyncio.to_thread(_sweep, store, display)
        owner = owners.register(store, snapshots.runtime_id)
        failed = _store_failed_event(store)
        with SinkStore(store, owner=snapshots.runtime_id) as sinks:
            context = make_context(
                router,
                store,
                display,
                agents_file=agents_file,
                all_agents=all_agents,
                config=config,
                sinks=sinks,
            )
            context.memory = memory
            if embedder is not None:
                context.on_result.append(lambda *_: embedder.wake())
            runtime = Runtime(
                context,
                clock=clock,
                runtime_id=snapshots.runtime_id,
                variables=variables,
                once=once,
                sinks=sinks,
                stop=stop,
            )
            runtime.health = HealthBoard(store, owner.id, Alerts(store, config.alerts))
            executor: Any = None
            if on_cluster:
                from agentos.cluster.executor import ClusterExecutor

                executor = ClusterExecutor(
                    store, config, owner, agents_file=agents_file, agents=all_agents,
                    display=display,
                )  # fmt: skip
                await asyncio.to_thread(executor.start)
                runtime.executor = executor
                snapshots.nodes = executor.nodes
                snapshots.router_snapshot = executor.router_snapshot
            session = Session(router, runtime, context, failed, snapshots)
            control = ControlPoller(
                store,
                runtime.controllables,
                runtime_id=snapshots.runtime_id,
                started_at=snapshots.started_at,
            )
            try:
                async with asyncio.TaskGroup() as group:
                    writer = group.create_task(snapshots.run(), name="snapshots")
                    poller = group.create_task(control.run(), name="control")
                    heart = group.create_task(_heartbeat(store, owner, runtime), name="heartbeat")
                    watch = (
                        group.create_task(executor.watch(), name="cluster-watch")
                        if executor is not None
                        else None
                    )
                    background = (
                        group.create_task(embedder.run(), name="background[embeddings]")
                        if embedder is not None
                        else None
                    )
                    try:
                        yield session
                    except AgentosError as exc:
                        error = exc
                    finally:
                        poller.cancel()
                        writer.cancel()
                        heart.cancel()
                        if watch is not None:
                            watch.cancel()
                            await asyncio.to_thread(executor.close)
                        if not failed.is_set():
                            await runtime.health.close(runtime.lanes)
                        if background is not None and failed.is_set():
                            background.cancel()
                        elif background is not None:
                            await embedder.finish(
                                background,
                                within_s=config.embeddings.drain_s,
                                say=display.message,
                            )
            except BaseExceptionGroup:
                # a helper task that met the failed store first; the failure is reported
                if store.writer.failure is None:
                    raise
        if embedder is not None:
            embedder.close()
        if memory is not None:
            memory.vectors.close()
    failure = store.writer.failure
    if failure is not None:
        display.message(_mark_after_failure(store, owner, failure))
        raise failure
    await store.aflush()
    if error is not None:
        raise error


def _sweep(store: Store, display: Display) -> None:
    """Mark what processes that are gone left behind (:func:`owners.sweep`), and say so."""
    swept = owners.sweep(store)
    if swept.runs or swept.claims:
        display.message(
            f"{len(swept.runs)} run(s) of processes that are gone marked crashed; "
            f"{swept.claims} sink claim(s) of theirs released"
        )


def _store_failed_event(store: Store) -> asyncio.Event:
    """An event set (on the calling loop) once the store's storage fails."""
    failed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_failure(_: StoreFailure) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
            loop.call_soon_threadsafe(failed.set)

    store.writer.add_failure_listener(on_failure)
    return failed


async def _run_until_store_fails(runtime: Runtime, failed: asyncio.Event) -> list[RunOutcome]:
    """``runtime.run()``, cancelled at once when the store fails: every model call after
    that would be spent on work that cannot be recorded. Raises the store's failure."""
    run = asyncio.create_task(runtime.run(), name="runtime")
    watch = asyncio.create_task(failed.wait(), name="store-watch")
    try:
        await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not run.done():
            runtime.stop()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    failure = runtime.context.store.writer.failure
    if failed.is_set() and failure is not None:
        raise failure
    return run.result()


async def _heartbeat(store: Store, owner: owners.Owner, runtime: Runtime) -> None:
    """The owner's heartbeat (and a sweep for dead owners) every interval, with its
    daemons' (:mod:`agentos.health`), until cancelled or the store refuses writes
    (:mod:`agentos.store.owners`)."""
    while True:
        try:
            owners.beat(store, owner)
            if runtime.health is not None:
                runtime.health.beat(runtime.lanes)
        except StoreError:
            return
        await asyncio.sleep(owners.HEARTBEAT_INTERVAL_S)


def _mark_after_failure(store: Store, owner: owners.Owner, failure: StoreFailure) -> str:
    """After the writer stopped on ``failure``: mark this process's running runs failed,
    hand back its sink claims and end its owner, on the store's other connection, if the
    storage still takes that much. What this did, as a line to show."""
    now = time.time()
    conn = store.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        marked = conn.execute(
            "UPDATE runs SET status = 'failed', finished_at = ?, error = ? "
            "WHERE owner = ? AND status = 'running'",
            [now, f"stopped: {failure.message}", owner.id],
        ).rowcount
        conn.execute(
            "UPDATE sink_deliveries SET status = 'pending', lease_until = ? "
            "WHERE claimed_by = ? AND status = 'claimed'",
            [now, owner.id],
        )
        conn.execute(
            "UPDATE owners SET status = 'ended', ended_at = ? WHERE id = ?", [now, owner.id]
        )
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return (
            f"the store failed, and its runs could not be marked either ({exc}); they show "
            "as crashed once this process has exited"
        )
    return f"the store failed: work stopped, {marked} run(s) marked failed"
