"""``agentos serve``: one runtime session with an HTTP server in front of it.

:func:`serve` starts the engines (local ones lazily, on their first request), opens the
store and one session (:func:`agentos.scheduler.runner.open_session`: the recording
router with its cache, the background embeddings process, the snapshot writer that
``agentos top`` reads, the control poller), and runs uvicorn on the same event loop, so
every HTTP request's jobs go into the one router and batch with every other client's.

Shutdown (Ctrl-C or SIGTERM): the listening socket closes and new requests on open
connections get 503; requests and runs in flight get ``serve.shutdown_s`` seconds to
finish, after which each request still waiting is answered 503 with the reason and each
run is cancelled with it (recorded). A second Ctrl-C ends them at once. Then the session
closes (the embedder gets its drain time), and local engines are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from agentos.errors import SpecError
from agentos.router.engines import open_engines
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.clock import SystemClock
from agentos.scheduler.display import Display
from agentos.scheduler.runner import Session, describe_engines, open_session
from agentos.serve.clients import (
    CLIENT_HEADER,
    PRIORITY_HEADER,
    Client,
    Clients,
)
from agentos.serve.errors import ApiError
from agentos.spec.agents import AgentsFile
from agentos.spec.config import Config
from agentos.store import Store

STOPPED = "agentos serve stopped before the answer came"


def check_exposure(host: str, config: Config) -> None:
    """Refuse to listen beyond loopback without client keys: anyone who can reach the
    address could spend the user's compute and read its cache."""
    if config.serve.keys:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SpecError(
            f"serve: {host} is not a loopback address and config.yaml has no serve.keys, so "
            "anyone who can reach this machine could use its engines; add client keys under "
            "serve.keys (see config.example.yaml), or serve on 127.0.0.1"
        )


class Service:
    """What the HTTP handlers share: the session's router, the clients, the agents file,
    and the requests and runs in flight (for shutdown)."""

    def __init__(
        self,
        session: Session,
        config: Config,
        engines: list[EngineHandle],
        *,
        agents: AgentsFile | None,
        agents_file: str | None,
    ) -> None:
        self.session = session
        self.router: Router = session.router
        self.config = config
        self.engines = engines
        self.clients = Clients(config.serve)
        self.agents = agents
        self.agents_file = agents_file
        self.max_queue = config.serve.max_queue
        self.started_at = time.time()
        self.stopping = False
        self.aborting = False
        self.abort_reason = STOPPED
        """Why requests still in flight were ended (set by :meth:`abort`)."""
        self.requests: set[asyncio.Task[Any]] = set()
        """Handlers of requests in flight."""
        self.work: set[asyncio.Task[Any]] = set()
        """Other work started over HTTP (runs), waited for on shutdown."""
        self.on_abort: list[Callable[[str], None]] = []
        """Called with the reason when the shutdown's grace is over (cancel runs)."""
        self.base_url = ""

    # -- the models -------------------------------------------------------------------------

    def models(self) -> list[str]:
        seen: dict[str, None] = {}
        for engine in self.router.engines.values():
            for model in engine.info.models:
                seen.setdefault(model, None)
        return list(seen)

    def model_cards(self) -> list[dict[str, Any]]:
        cards: dict[str, dict[str, Any]] = {}
        for engine in self.router.engines.values():
            for model in engine.info.models:
                card = cards.setdefault(
                    model,
                    {
                        "id": model,
                        "object": "model",
                        "created": int(self.started_at),
                        "owned_by": engine.name,
                        "engines": [],
                        "capabilities": [],
                    },
                )
                card["engines"].append(engine.name)
                for cap in engine.info.capabilities:
                    if cap not in card["capabilities"]:
                        card["capabilities"].append(cap)
        return list(cards.values())

    def client_processes(self) -> dict[str, dict[str, Any]]:
        """The clients as processes of ``agentos top`` (merged by name with the router's
        counters of their jobs): kind ``client``, running while it has jobs in the
        router, its answered and failed jobs as results."""
        return {
            name: {
                "kind": "client",
                "state": "running" if stats.queued else "idle",
                "successes": stats.jobs,
                "failures": stats.failed_jobs,
            }
            for name, stats in list(self.router.processes.items())
            if name.startswith("client[")
        }

    # -- admission ----------------------------------------------------------------------------

    def admit(self, request: Request, route: str | None, jobs: int) -> tuple[Client, str]:
        """The request's client and priority class, once it may go in: 401/403 for its
        key and priority, 503 while shutting down, 429 when the router's queue is full."""
        headers = request.headers
        client = self.clients.identify(
            headers.get("authorization"), headers.get(CLIENT_HEADER), headers.get("user-agent")
        )
        priority = self.clients.priority(client, headers.get(PRIORITY_HEADER), route)
        if self.stopping:
            raise ApiError(503, "agentos serve is shutting down", code="shutting_down", headers={})
        if jobs:
            waiting = len(self.router.queue)
            if waiting + jobs > self.max_queue:
                raise ApiError(
                    429,
                    f"the router's queue is full ({waiting} jobs waiting, serve.max_queue "
                    f"{self.max_queue}); try again later",
                    code="queue_full",
                    headers={"Retry-After": str(self.retry_after(waiting))},
                )
        return client, priority

    def retry_after(self, waiting: int) -> int:
        """Seconds until the queue has room at the rate jobs were done so far (1 to 60)."""
        elapsed = max(time.monotonic() - self.router.started_at, 1e-3)
        rate = self.router.jobs_done / elapsed
        if rate <= 0:
            return 5
        return max(1, min(60, math.ceil(waiting / rate)))

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[asyncio.Task[Any] | None]:
        task = asyncio.current_task()
        if task is not None:
            self.requests.add(task)
        try:
            yield task
        finally:
            if task is not None:
                self.requests.discard(task)

    # -- shutdown -----------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """End what is still in flight: requests get 503 with ``reason``, runs are
        cancelled with it."""
        self.aborting = True
        self.abort_reason = reason
        for task in list(self.requests):
            task.cancel(reason)
        for hook in self.on_abort:
            hook(reason)


def guarded(
    service: Service,
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """A decorator for the handlers of ``service``: an :class:`ApiError` is answered in
    OpenAI's shape, and a request the shutdown ends gets 503 with the reason. The
    handler's signature is kept, so FastAPI still reads its parameters from it."""

    def wrap(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(handler)
        async def call(*args: Any, **kwargs: Any) -> Response:
            with service.in_flight() as task:
                try:
                    return await handler(*args, **kwargs)
                except ApiError as exc:
                    return exc.response()
                except asyncio.CancelledError:
                    if not service.aborting or task is None:
                        raise
                    task.uncancel()
                    reason = service.abort_reason
                    return ApiError(503, reason, code="shutting_down").response()

        return call

    return wrap


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: :func:`serve_http` handles
    Ctrl-C and SIGTERM on the loop, with the grace period of ``serve.shutdown_s``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    service: Service,
    app: Any,
    host: str,
    port: int,
    say: Callable[[str], None],
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run ``app`` on uvicorn until Ctrl-C or SIGTERM, then shut down (module docstring)."""
    grace = service.config.serve.shutdown_s
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=math.ceil(grace) + 5,
            timeout_keep_alive=30,
        )
    )
    loop = asyncio.get_running_loop()
    signals = 0
    abort_timer: asyncio.TimerHandle | None = None

    def on_signal() -> None:
        nonlocal signals, abort_timer
        signals += 1
        if signals == 1:
            busy = len(service.requests) + len(service.work)
            say(
                f"stopping: {busy} request(s) and run(s) in flight get up to {grace:g} s to "
                "finish; new requests are refused (Ctrl-C again ends them at once)"
            )
            service.stopping = True
            server.should_exit = True
            abort_timer = loop.call_later(
                grace, service.abort, f"{STOPPED} (it was stopped, and {grace:g} s had passed)"
            )
        else:
            if abort_timer is not None:
                abort_timer.cancel()
            service.abort(f"{STOPPED} (it was stopped at once)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    serving = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            sockname = server.servers[0].sockets[0].getsockname()
            shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
            service.base_url = f"http://{shown}:{sockname[1]}"
            if ready is not None:
                ready(service.base_url)
        await serving
        if not server.started:
            raise SpecError(f"serve: could not listen on {host}:{port} (is the port in use?)")
        # the server is closed: runs started over HTTP get what is left of the grace
        if service.work:
            _, pending = await asyncio.wait(service.work, timeout=grace)
            if pending:
                service.abort(f"{STOPPED} (it was stopped, and {grace:g} s had passed)")
                await asyncio.wait(pending, timeout=10)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if abort_timer is not None:
            abort_timer.cancel()
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def serve(
    config: Config,
    *,
    db_path: Path,
    display: Display,
    host: str,
    port: int,
    agents: AgentsFile | None = None,
    agents_file: str | None = None,
    log_dir: Path | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """``agentos serve``: serve until Ctrl-C or SIGTERM (module docstring)."""
    from agentos.serve.app import build_app

    check_exposure(host, config)
    async with open_engines(config, log_dir=log_dir, lazy_local=True) as engines:
        describe_engines(engines, display.message)
        store = Store(db_path)
        try:
            async with open_session(
                engines,
                store,
                display,
                config,
                agents_file=agents_file,
                all_agents=agents,
                variables={},
                once=False,
                clock=SystemClock(),
                stop=None,
            ) as session:
                service = Service(session, config, engines, agents=agents, agents_file=agents_file)
                session.extra_processes["serve"] = service.client_processes
                app = build_app(service)
                await serve_http(service, app, host, port, display.message, ready=ready)
        finally:
            store.close()
