"""The child process of the resume test: ``background[embeddings]`` on a database, against
a loopback engine, until it is killed.

Usage: ``python tests/memory/embed_worker.py DB ENGINE_URL BATCH_SIZE``
"""

from __future__ import annotations

import asyncio
import sys

from agentos.memory.embedder import Embedder
from agentos.router.client import EngineClient, EngineInfo
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.store import Store

MODEL = "test-model"


async def main(db: str, url: str, batch_size: int) -> None:
    store = Store(db)
    client = EngineClient("loop", url, timeout=30)
    # Known capabilities: detection would send probes the test would have to tell apart.
    info = EngineInfo(models=[MODEL], capabilities=["embeddings"], healthy=True, detail="ok")
    engine = EngineHandle(name="loop", client=client, info=info, max_requests=2)
    async with Router([engine], recorder=StoreCallRecorder(store)) as router:
        embedder = Embedder(store, router, MODEL, batch_size=batch_size, poll_s=0.05)
        print("started", flush=True)
        await embedder.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
