"""The router as one async Ray actor, and the ``ModelRouter`` that runs on workers hold.

One actor (one event loop) holds the one :class:`~agentos.router.router.Router`, so
batching, priorities, the cache and the accounting see every model call of the cluster,
as they see every call of one process. Its call records go to the driver through a
:class:`~agentos.cluster.records.RemoteStore`, shipped every ``ship_every_s`` (the router
never waits for a flush: recording is queued, as on one machine).

Requests, completions and errors cross the wire as pickles of the router's own
dataclasses (``InferenceRequest``, ``Completion``) and ``AgentosError`` subclasses, so
the agent code on a worker cannot tell the proxy from a local router.

Secrets: the actor is created with the config's secrets taken out (Ray keeps creation
arguments to restart an actor); :meth:`RouterActor.start` gets them from the driver and
puts them back (:mod:`agentos.cluster.secrets`). An actor restarted by Ray must be
started again by the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import ray

from agentos.cluster.batching import Answers, CallBatcher, Reply
from agentos.cluster.records import RemoteStore
from agentos.cluster.secrets import Path as SecretPath
from agentos.cluster.secrets import with_secrets
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.spec.config import Config


class RouterActor:
    """Opens the configured engines and one recording router over them."""

    def __init__(
        self,
        config: Config,
        queue: Any,
        db_path: str | Path,
        owner: Any,
        ship_every_s: float = 0.05,
    ) -> None:
        self.config = config
        self.store = RemoteStore(queue, db_path, owner)
        self.ship_every_s = ship_every_s
        self._stack = contextlib.AsyncExitStack()
        self._router: Any = None
        self._shipper: asyncio.Task[None] | None = None
        self._answers = Answers()

    async def start(self, secrets: dict[SecretPath, str] | None = None) -> list[str]:
        """Detect the engines and start the router; the engines' names. ``secrets``: what
        ``split_secrets`` took out of the config this actor was created with."""
        from agentos.router.engines import open_engines, recording_router

        config = with_secrets(self.config, secrets or {})
        engines = await self._stack.enter_async_context(open_engines(config))
        router = recording_router(engines, self.store, config)  # type: ignore[arg-type]
        self._router = await self._stack.enter_async_context(router)
        self._shipper = asyncio.create_task(self._ship_loop())
        return [e.name for e in engines]

    async def _ship_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ship_every_s)
            self.store.ship()

    async def submit(self, request: InferenceRequest, kwargs: dict[str, Any]) -> Completion:
        assert self._router is not None, "RouterActor.start() first"
        completion: Completion = await self._router.submit(request, **kwargs)
        return completion

    def submit_many(
        self, caller: str, items: list[tuple[int, tuple[InferenceRequest, dict[str, Any]]]]
    ) -> None:
        """Submit every job of ``items`` (a :class:`RouterProxy`'s jobs of one tick); their
        completions are ``caller``'s to take with :meth:`answers`."""
        assert self._router is not None, "RouterActor.start() first"
        for number, (request, kwargs) in items:
            self._answers.start(caller, number, self._router.submit(request, **kwargs))

    async def answers(self, caller: str, timeout_s: float) -> list[Reply]:
        """``caller``'s completions (or errors) ready now, waiting up to ``timeout_s``."""
        return await self._answers.take(caller, timeout_s)

    def reject(self, completion: Completion) -> None:
        self._router.reject(completion)

    def stats(self) -> dict[str, Any]:
        """What the accounting counted, for the driver (and ``top``) to show."""
        router = self._router
        return {
            "jobs_done": router.jobs_done,
            "jobs_failed": router.jobs_failed,
            "cache_hits": router.cache_hits,
            "processes": sorted(router.processes),
        }

    def snapshot(self) -> dict[str, Any]:
        """The router's snapshot (engines, queues, processes), as ``top`` shows it."""
        snapshot: dict[str, Any] = self._router.snapshot()
        return snapshot

    async def stop(self) -> None:
        """Close the router and the engines, and ship the last records (committed)."""
        if self._shipper is not None:
            self._shipper.cancel()
        await self._answers.aclose()
        await self._stack.aclose()
        await self.store.aflush()


RouterActorClass: Any = ray.remote(num_cpus=0)(RouterActor)
"""``RouterActor`` as a Ray actor class (``RouterActorClass.options(...).remote(...)``)."""


class RouterProxy:
    """A :class:`~agentos.agents.base.ModelRouter` whose router is a ``RouterActor``.

    The jobs a worker's runs submit in one event-loop tick reach the actor as one call, and
    their completions come back in batches as they finish (:mod:`agentos.cluster.batching`):
    one actor call per job cost more CPU than the rest of a run's cluster path.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.calls = CallBatcher(actor.submit_many.remote, actor.answers.remote)

    async def submit(
        self,
        request: InferenceRequest,
        *,
        priority: str = "user",
        engine: str | None = None,
        retry: RetryPolicy | None = None,
        run_id: str | None = None,
        process: str = "",
        job_id: str | None = None,
        use_cache: bool = True,
        deadline_s: float | None = None,
    ) -> Completion:
        kwargs = {
            "priority": priority,
            "engine": engine,
            "retry": retry,
            "run_id": run_id,
            "process": process,
            "job_id": job_id,
            "use_cache": use_cache,
            "deadline_s": deadline_s,
        }
        completion: Completion = await self.calls.call((request, kwargs))
        return completion

    def reject(self, completion: Completion) -> None:
        self.actor.reject.remote(completion)
