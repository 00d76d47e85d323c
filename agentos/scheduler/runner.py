"""The scheduler: turns the agents of a file into runs, all sharing one router.

This first version knows the ``single-shot`` life-cycle: each selected agent gets one run
that ends when it has its results or hits its attempt cap. All runs start together and
share the engines through the router, which orders their requests by priority class.

Before any run is recorded, every agent is checked against the engines that actually came
up (model served, engine healthy), so a configuration that cannot work fails with one
clear error and writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentos.agents.prompt import PromptAgentRun
from agentos.errors import SpecError
from agentos.router.cache import ResponseCache, parse_duration
from agentos.router.engines import open_engines, router_settings
from agentos.router.jobs import InferenceRequest
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.control import ControlPoller
from agentos.scheduler.display import Display, RunOutcome
from agentos.scheduler.snapshots import SnapshotWriter
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import Config
from agentos.spec.templates import render
from agentos.store import Store


def select_agents(agents: AgentsFile, names: Sequence[str]) -> list[AgentSpec]:
    """The agents named (all when none are), in file order; an unknown name is an error."""
    if not names:
        return list(agents.agents)
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
    (e.g. one an input sink would supply) fails before anything runs."""
    for agent in agents:
        values = {**agent.vars, **variables}
        try:
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


async def run_agents(
    agents: Sequence[AgentSpec],
    *,
    config: Config,
    db_path: Path,
    display: Display,
    agents_file: str | None = None,
    variables: dict[str, Any] | None = None,
    log_dir: Path | None = None,
) -> list[RunOutcome]:
    """Start the engines, run every agent once, stop the engines; outcomes in agent order.

    The database is opened only once the engines are up and every agent is known to be
    servable, so a run that cannot start leaves no trace."""
    variables = variables or {}
    check_renderable(agents, variables, agents_file or "agents")
    async with open_engines(config, log_dir=log_dir) as engines:
        for engine in engines:
            state = "healthy" if engine.healthy else f"unhealthy: {engine.info.detail}"
            models = ", ".join(engine.info.models) or "no models"
            display.message(f"engine {engine.name} at {engine.client.base_url}: {models} ({state})")
        probe = Router(engines)
        for agent in agents:
            probe.check_servable(
                InferenceRequest(kind="chat", model=agent.model), engine=agent.engine
            )
        with Store(db_path) as store:
            outcomes = await _run_with_store(
                agents, engines, store, display, agents_file, variables, config
            )
    return outcomes


def agent_counters(runs: Sequence[PromptAgentRun]) -> dict[str, dict[str, Any]]:
    """Per agent: its state and run counters, as the snapshot's processes show them."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        c = out.setdefault(
            run.spec.name,
            {
                "kind": "agent",
                "state": "idle",
                "runs": 0,
                "runs_succeeded": 0,
                "runs_failed": 0,
                "successes": 0,
                "failures": 0,
                "run_id": None,
            },
        )
        if run.state in ("starting", "running", "paused"):
            c["state"] = "running" if run.state == "starting" else run.state
        elif c["state"] not in ("running", "paused"):
            c["state"] = run.state
        c["runs"] += 1
        c["runs_succeeded"] += run.status == "succeeded"
        c["runs_failed"] += run.status in ("failed", "cancelled")
        c["successes"] += run.successes
        c["failures"] += run.failed_attempts
        c["run_id"] = run.run_id or c["run_id"]
    return out


async def _run_with_store(
    agents: Sequence[AgentSpec],
    engines: list[EngineHandle],
    store: Store,
    display: Display,
    agents_file: str | None,
    variables: dict[str, Any],
    config: Config,
) -> list[RunOutcome]:
    cache = None
    if config.cache.enabled:
        ttl = parse_duration(config.cache.ttl) if config.cache.ttl else None
        cache = ResponseCache(store, ttl_s=ttl)
    router = Router(
        engines,
        recorder=StoreCallRecorder(store),
        settings=router_settings(config),
        cache=cache,
    )
    async with router:
        runs = [
            PromptAgentRun(
                agent,
                router=router,
                store=store,
                display=display,
                agents_file=agents_file,
                variables=variables,
            )
            for agent in agents
        ]
        snapshots = SnapshotWriter(store, router, lambda: agent_counters(runs))
        control = ControlPoller(
            store, runs, runtime_id=snapshots.runtime_id, started_at=snapshots.started_at
        )
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(snapshots.run(), name="snapshots")
            poller = group.create_task(control.run(), name="control")
            tasks = [group.create_task(run.run(), name=f"run-{run.spec.name}") for run in runs]
            await asyncio.gather(*tasks, return_exceptions=True)
            poller.cancel()
            writer.cancel()
    await store.writer.aflush()
    return [t.result() for t in tasks]
