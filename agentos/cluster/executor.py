"""Agent runs executed by Ray workers, recorded in the driver's database.

:class:`ClusterSession` is the driver's side: it starts the :class:`RecordQueue`, the
driver's :class:`RecordDrain` and the :class:`RouterActor`, and :meth:`ClusterSession.run`
executes one run of an agent as a Ray task with the agent's resource request. The task
builds the run exactly as the scheduler does (``registry.make_run`` with a
``RunContext``), only with a :class:`RouterProxy` as its router and a
:class:`RemoteStore` as its store, and awaits ``run()`` in its own event loop.

A prototype (issue 15): the scheduler does not call it yet, sinks, tools, memory and
state are not wired (``RunContext`` fields left None), and a run retried by Ray after its
node died is a second run row next to one left ``running`` (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore
from agentos.cluster.router_actor import RouterActorClass, RouterProxy
from agentos.cluster.secrets import split_secrets
from agentos.scheduler.display import PlainDisplay, RunOutcome
from agentos.spec.agents import AgentSpec
from agentos.spec.config import Config
from agentos.store import Store, owners


@dataclass(frozen=True)
class RemoteOutcome:
    """How a run on a worker ended, and where it ran."""

    outcome: RunOutcome
    node_id: str
    pid: int
    log: str
    """What the run's display printed on the worker (plain lines)."""


def _execute(
    spec: AgentSpec,
    variables: dict[str, Any] | None,
    router: Any,
    queue: Any,
    db_path: str,
    owner: owners.Owner,
) -> RemoteOutcome:
    import os

    from agentos.agents.base import RunContext
    from agentos.agents.registry import make_run

    store = RemoteStore(queue, db_path, owner)
    log = io.StringIO()
    context = RunContext(
        router=RouterProxy(router),
        store=store,  # type: ignore[arg-type]
        display=PlainDisplay(log),
    )
    run = make_run(spec, context, variables=variables)
    try:
        outcome = asyncio.run(run.run())
    finally:
        store.close()
    return RemoteOutcome(
        outcome=outcome,
        node_id=ray.get_runtime_context().get_node_id(),
        pid=os.getpid(),
        log=log.getvalue(),
    )


execute_run = ray.remote(_execute)
"""The Ray task of one run: ``execute_run.options(num_cpus=…, resources=…).remote(…)``."""


class ClusterSession:
    """The driver's pieces on a Ray cluster that ``ray.init`` has connected to.

    ``with ClusterSession(store, config) as session: session.run(spec)``; on exit the
    router is stopped (its last call records committed) and the drain has written
    everything that was queued.
    """

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.owner = owners.register(store)
        self.queue: Any = None
        self.router: Any = None
        self.drain: RecordDrain | None = None

    def __enter__(self) -> ClusterSession:
        # the queue and the router live on the driver's node: a worker node's death must
        # not take the record's way to the database, or the global router, with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = RecordQueueActor.options(scheduling_strategy=here).remote()
        self.drain = RecordDrain(self.store, self.queue).start()
        # engine keys never go into the creation arguments (Ray keeps those) nor to workers
        public, secrets = split_secrets(self.config)
        self.router = RouterActorClass.options(scheduling_strategy=here).remote(
            public, self.queue, str(self.store.path), self.owner
        )
        ray.get(self.router.start.remote(secrets))
        return self

    def run(
        self,
        spec: AgentSpec,
        *,
        variables: dict[str, Any] | None = None,
        num_cpus: float = 1,
        resources: dict[str, float] | None = None,
        max_retries: int = 0,
        prefer_node: str | None = None,
    ) -> Any:
        """Start one run of ``spec`` on a worker; its ``ObjectRef`` (→ RemoteOutcome).

        ``max_retries``: how often Ray runs it again when its node (or worker process)
        dies. ``prefer_node``: a node id to run on while that node is alive (soft
        affinity: a retry after its death goes anywhere that fits).
        """
        options: dict[str, Any] = {
            "num_cpus": num_cpus,
            "resources": resources or {},
            "max_retries": max_retries,
        }
        if prefer_node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(prefer_node, soft=True)
        return execute_run.options(**options).remote(
            spec, variables, self.router, self.queue, str(self.store.path), self.owner
        )

    def router_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = ray.get(self.router.stats.remote())
        return stats

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.router is not None:
                ray.get(self.router.stop.remote(), timeout=30)
        finally:
            if self.drain is not None:
                self.drain.stop()
            self.store.flush()
