"""Shared pieces of the router tests: a call recorder that keeps what it is given, and a
factory that turns a running loopback engine into an ``EngineHandle`` the router can use.

Every router test talks to a real ``LoopbackEngine`` on 127.0.0.1; nothing of ours is mocked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from agentos.router.chat_template import from_props
from agentos.router.client import EngineClient
from agentos.router.jobs import CallRecord, InferenceRequest
from agentos.router.router import EngineHandle
from agentos.testing.engine import LoopbackEngine


@dataclass
class ListRecorder:
    """A ``CallRecorder`` that keeps every record, and when (monotonic) it arrived."""

    calls: list[CallRecord] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)

    def record_call(self, call: CallRecord) -> None:
        self.calls.append(call)
        self.received_at.append(time.monotonic())

    def for_job(self, job_id: str) -> list[CallRecord]:
        return [c for c in self.calls if c.job_id == job_id]


Connect = Callable[..., Awaitable[EngineHandle]]
"""``await connect(engine, name=..., max_requests=..., timeout=..., models=..., api_key=...)``."""


@pytest.fixture
def recorder() -> ListRecorder:
    return ListRecorder()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Detect a running loopback engine and wrap it in a handle; clients close at teardown.

    Detection sends one probe per capability, so the engine's counters are reset afterwards:
    ``engine.stats`` then counts only what the router sent.
    """
    clients: list[EngineClient] = []

    async def make(
        engine: LoopbackEngine,
        *,
        name: str = "loop",
        max_requests: int = 4,
        timeout: float = 5.0,
        models: list[str] | None = None,
        api_key: str | None = None,
        weight: float = 1.0,
    ) -> EngineHandle:
        client = EngineClient(name, engine.url, timeout=timeout, api_key=api_key)
        clients.append(client)
        info = await client.detect(models)
        assert info.healthy, info.detail
        engine.reset_stats()
        return EngineHandle(
            name=name, client=client, info=info, max_requests=max_requests, weight=weight
        )

    yield make
    for client in clients:
        await client.aclose()


Script = Callable[[web.Request, Any], tuple[int, Any]]
"""``(request, parsed JSON body or None) -> (status, answer)``; an answer of ``bytes`` is
sent as it is, anything else as JSON."""


@contextlib.asynccontextmanager
async def scripted_engine(script: Script) -> AsyncIterator[str]:
    """A real HTTP server on loopback whose every answer ``script`` decides: for the
    wire-level corner cases the loopback engine never produces. Yields its base URL."""

    async def answer(request: web.Request) -> web.Response:
        raw = await request.read()
        status, body = script(request, json.loads(raw) if raw else None)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(status=status, body=data, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def agent_chat(text: str, sample: int = 0, **params: Any) -> InferenceRequest:
    """A chat job as a prompt agent makes it: a system and a user message, the agent's
    sampling parameters, attempt ``sample``."""
    return InferenceRequest(
        kind="chat",
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": text},
        ],
        params={"temperature": 0.7, "max_tokens": 16, **params},
        sample=sample,
    )


async def templated(handle: EngineHandle, **changes: Any) -> EngineHandle:
    """The handle as the runtime makes it for an engine that takes prompt lists and tells
    its chat template (``GET /props``, like llama-server): agents' chat jobs batch."""
    props = await handle.client.props()
    assert props is not None, "the loopback engine serves /props"
    template = from_props(props, "loopback /props")
    assert template is not None
    return dataclasses.replace(handle, prompt_batching=True, chat_template=template, **changes)


def user_texts(path: str, body: dict[str, Any]) -> list[str]:
    """The last user message of each job of one request the engine received: from a chat
    body, or from each prompt of a completions body (plain, or a ChatML conversation)."""
    if path == "/v1/chat/completions":
        return [body["messages"][-1]["content"]]
    prompt = body["prompt"]
    out = []
    for text in prompt if isinstance(prompt, list) else [prompt]:
        if "<|im_start|>user\n" in text:
            text = text.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        out.append(text)
    return out
