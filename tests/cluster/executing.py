"""Runs through the cluster executor from a test, without the CLI: the driver's
:class:`~agentos.cluster.executor.ClusterExecutor` over a real store, each run a
:class:`~agentos.cluster.executor.ClusterRun` awaited as the lane awaits it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Any

from agentos.agents.base import RunContext
from agentos.cluster.executor import ClusterExecutor
from agentos.scheduler.display import PlainDisplay, RunOutcome
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import Config
from agentos.store import Store, owners


class Executing:
    """``with Executing(store, config, agents) as ex: ex.run([(spec, variables), ...])``;
    on exit the executor is closed (its records committed)."""

    def __init__(self, store: Store, config: Config, agents: AgentsFile | None) -> None:
        self.log = io.StringIO()
        display = PlainDisplay(self.log)
        self.executor = ClusterExecutor(
            store,
            config,
            owners.register(store),
            agents_file=None,
            agents=agents,
            display=display,
        )
        self.context = RunContext(router=None, store=store, display=display)  # type: ignore[arg-type]

    def __enter__(self) -> Executing:
        self.executor.start()
        return self

    def run(
        self, work: Sequence[tuple[AgentSpec, dict[str, Any] | None]], timeout_s: float = 120
    ) -> list[RunOutcome]:
        """Run every (spec, variables) at once on the cluster; their outcomes."""

        async def all_of() -> list[RunOutcome]:
            runs = [self.executor.make_run(s, self.context, variables=v) for s, v in work]
            return list(await asyncio.gather(*(r.run() for r in runs)))

        return asyncio.run(asyncio.wait_for(all_of(), timeout_s))

    def router_stats(self) -> dict[str, Any]:
        import ray

        stats: dict[str, Any] = ray.get(self.executor.router.stats.remote())
        return stats

    def __exit__(self, *exc: object) -> None:
        self.executor.close()
