"""User jobs are not delayed by a large embedding backlog: background[embeddings] queues
at ``background`` priority, so on a busy single-slot engine every user job goes before
the backlog's next request."""

from __future__ import annotations

import asyncio
import time

from agentos.memory.embedder import Embedder
from agentos.router.jobs import InferenceRequest
from agentos.router.router import Router
from agentos.store import Store
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.memory.conftest import MODEL, Connect, add_result, new_run

BACKLOG = 300
REQUEST_MS = 40.0
USER_JOBS = 5


async def test_user_jobs_go_before_a_large_embedding_backlog(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    for i in range(BACKLOG):
        add_result(store, run_id, f"backlog item {i}")
    store.flush()

    cost = CostModel(slots=1, per_request_ms=REQUEST_MS)
    async with LoopbackEngine(cost=cost) as engine:
        handle = await connect(engine, max_requests=1)
        async with asyncio.timeout(30), Router([handle]) as router:
            embedder = Embedder(store, router, MODEL, batch_size=16)
            backlog = asyncio.create_task(embedder.embed_pending())
            while engine.stats.requests < 3:  # the backlog has the engine, and a queue
                await asyncio.sleep(0.005)
            requests_before = engine.stats.requests

            async def user_job(i: int) -> float:
                request = InferenceRequest(
                    kind="chat", model=MODEL, messages=[{"role": "user", "content": f"u{i}"}]
                )
                await router.submit(request, priority="user", process="agent")
                return time.monotonic() - submitted

            submitted = time.monotonic()
            waits = await asyncio.gather(*(user_job(i) for i in range(USER_JOBS)))
            embedded_meanwhile = embedder.progress().embedded
            backlog.cancel()
            await asyncio.gather(backlog, return_exceptions=True)
            embedder.close()

    paths = [path for path, _ in engine.stats.recorded]
    first_user = paths.index("/v1/chat/completions")
    # At most the request in flight when the user jobs arrived, then all of them in a row.
    assert first_user <= requests_before
    assert paths[first_user : first_user + USER_JOBS] == ["/v1/chat/completions"] * USER_JOBS
    # Each waited for at most that one background request plus the user jobs before it:
    # ~0.24 s here, while the backlog alone needs BACKLOG * 40 ms = 12 s.
    ideal = (1 + USER_JOBS) * REQUEST_MS / 1000
    assert max(waits) < ideal + 0.5
    assert embedded_meanwhile < BACKLOG // 4
    assert router.processes["agent"].jobs == USER_JOBS
