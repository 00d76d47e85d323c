"""An aiohttp engine on a loop of its own thread, for tests whose ``agentos`` runs as a
subprocess (the async ``scripted_engine`` fixture lives on the test's own loop)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.contextmanager
def engine_in_thread(handler: Handler) -> Iterator[str]:
    """Serve every path with ``handler`` on 127.0.0.1; yields the base URL."""
    loop = asyncio.new_event_loop()
    runner: list[web.AppRunner] = []

    async def start() -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        run = web.AppRunner(app, access_log=None)
        await run.setup()
        await web.TCPSite(run, "127.0.0.1", 0).start()
        runner.append(run)
        return f"http://127.0.0.1:{run.addresses[0][1]}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    finally:
        if runner:
            asyncio.run_coroutine_threadsafe(runner[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
