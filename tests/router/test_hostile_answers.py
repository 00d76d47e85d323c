"""Whatever an engine answers, the router ends the job with a reason and the store keeps
a record that reads back: answers nested thousands deep, ``usage`` that is garbage, lone
surrogates, content that is not a string, and answers too large to keep.

Every answer goes over real HTTP from a scripted loopback server, through the router,
into a real SQLite store; each row is then read back the way ``replay`` and ``export``
read it (``json.loads``).
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentos.errors import AgentosError, EngineMalformedAnswer
from agentos.router.client import EngineClient, EngineInfo
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.store import Store
from agentos.store.export import export_table
from tests.router.conftest import ListRecorder, scripted_engine

CHAT = InferenceRequest(kind="chat", messages=[{"role": "user", "content": "hi"}])
GOOD = b'{"choices":[{"index":0,"message":{"content":"fine"}}]}'


def envelope(content: Any = "fine", **extra: Any) -> bytes:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}], **extra}
    ).encode()


STEADY = RouterSettings(failure_threshold=10_000)
"""Malformed answers count as engine failures; here the breaker must not open."""


Handle = Callable[..., EngineHandle]


@pytest.fixture
async def handle() -> AsyncIterator[Handle]:
    """``handle(url, name)``: an engine on ``url`` as the router uses it (no detection:
    the scripted engine's answers are for the test); its client closes at teardown."""
    clients: list[EngineClient] = []

    def make(url: str, name: str = "bad") -> EngineHandle:
        info = EngineInfo(models=["m"], capabilities=["chat", "completions"], healthy=True)
        client = EngineClient(name, url, timeout=5.0)
        clients.append(client)
        return EngineHandle(name=name, client=client, info=info, max_requests=2)

    yield make
    for client in clients:
        await client.aclose()


async def ask(router: Router, request: InferenceRequest = CHAT) -> Completion | AgentosError:
    try:
        return await router.submit(
            request, retry=RetryPolicy(max_attempts=1), use_cache=False, deadline_s=5
        )
    except AgentosError as exc:
        return exc


class Answers:
    """A scripted engine's answers: ``next`` for the following request, then ``GOOD``."""

    def __init__(self) -> None:
        self.next: list[bytes] = []

    def __call__(self, request: web.Request, body: Any) -> tuple[int, Any]:
        if request.path == "/v1/models":
            return 200, {"data": [{"id": "m"}]}
        return 200, self.next.pop(0) if self.next else GOOD


@pytest.fixture
async def answers() -> AsyncIterator[tuple[Answers, str]]:
    script = Answers()
    async with scripted_engine(script) as url:
        yield script, url


DEEP = b"[" * 600 + b"]" * 600

HOSTILE: dict[str, bytes] = {
    "envelope nested 600 deep": b'{"choices":[{"index":0,"message":{"content":"x"}}],"x":'
    + DEEP
    + b"}",
    "envelope nested 5000 deep": b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "usage tokens are strings": envelope(usage={"prompt_tokens": "abc", "completion_tokens": "7"}),
    "usage tokens are lists": envelope(usage={"prompt_tokens": [1], "completion_tokens": {}}),
    "usage is a list": envelope(usage=[1, 2]),
    "usage beyond SQLite INTEGER": envelope(
        usage={"prompt_tokens": 10**30, "completion_tokens": 1e300}
    ),
    "usage 1e400": b'{"choices":[{"index":0,"message":{"content":"x"}}],'
    b'"usage":{"prompt_tokens":1e400,"completion_tokens":-1e400}}',
    "usage booleans and negatives": envelope(
        usage={"prompt_tokens": True, "completion_tokens": -5}
    ),
    "lone surrogate escaped in content": b'{"choices":[{"index":0,"message":'
    b'{"content":"a\\ud800b"}}]}',
    "lone surrogate escaped in a key": b'{"choices":[{"index":0,"message":{"content":"x"}}],'
    b'"\\udc00":"\\ud83d"}',
    "lone surrogate as raw bytes": b'{"choices":[{"index":0,"message":'
    b'{"content":"a\xed\xa0\x80"}}]}',
    "content is an object": envelope(content={"city": "Paris"}),
    "content is a list of parts": envelope(content=[{"type": "text", "text": "Paris"}]),
    "content is a number": envelope(content=12),
    "content is a boolean": envelope(content=True),
    "message is a string": b'{"choices":[{"index":0,"message":"hi"}]}',
    "choices is an object": b'{"choices":{"0":{"message":{"content":"x"}}}}',
    "a NUL in the content": envelope(content="a\u0000b"),
    "not JSON": b"\x00\xff garbage",
    "JSON that is a list": b"[1, 2, 3]",
}


async def test_every_hostile_answer_ends_its_job_with_a_reason_and_reads_back(
    answers: tuple[Answers, str], handle: Handle, tmp_path: Path
) -> None:
    script, url = answers
    outcomes: dict[str, Completion | AgentosError] = {}
    with Store(tmp_path / "a.db") as store:
        recorder = StoreCallRecorder(store)
        async with Router([handle(url)], recorder, settings=STEADY) as router:
            for name, body in HOSTILE.items():
                script.next = [body]
                outcomes[name] = await ask(router)
            script.next = []
            after = await ask(router)  # the router is still serving
        store.flush()
    assert isinstance(after, Completion) and after.text == "fine"
    for name, outcome in outcomes.items():
        if isinstance(outcome, Completion):
            assert isinstance(outcome.text, str), name
            assert 0 <= outcome.prompt_tokens < 2**53, name
        else:
            assert isinstance(outcome, EngineMalformedAnswer), (name, outcome)
    for name in (
        "envelope nested 600 deep",
        "envelope nested 5000 deep",
        "content is an object",
        "content is a list of parts",
        "content is a number",
        "lone surrogate as raw bytes",
    ):
        assert isinstance(outcomes[name], EngineMalformedAnswer), name
    assert "nested deeper than 128 levels" in str(outcomes["envelope nested 600 deep"])
    assert "message content is an object, not a string" in str(outcomes["content is an object"])
    garbage_usage = outcomes["usage beyond SQLite INTEGER"]
    assert isinstance(garbage_usage, Completion)
    assert (garbage_usage.prompt_tokens, garbage_usage.completion_tokens) == (0, 0)
    strings = outcomes["usage tokens are strings"]
    assert isinstance(strings, Completion) and strings.completion_tokens == 7

    conn = sqlite3.connect(tmp_path / "a.db")
    rows = conn.execute(
        "SELECT status, error, request, response, prompt_tokens FROM llm_calls"
    ).fetchall()
    assert len(rows) == len(HOSTILE) + 1  # one row per request, none lost
    for status, error, request, response, prompt_tokens in rows:
        json.loads(request)
        if response is not None:
            json.loads(response)
        assert status == "ok" or error
        assert 0 <= prompt_tokens < 2**53
    conn.close()
    jsonl, csv = io.StringIO(), io.StringIO()
    assert export_table(tmp_path / "a.db", table="llm_calls", fmt="jsonl", out=jsonl) == len(rows)
    assert export_table(tmp_path / "a.db", table="llm_calls", fmt="csv", out=csv) == len(rows)
    assert len([json.loads(line) for line in jsonl.getvalue().splitlines()]) == len(rows)


async def test_an_answer_over_the_cap_fails_without_being_read_into_memory(
    handle: Handle,
) -> None:
    """A 1 GB answer streamed without a length: the client stops at the cap, the server
    manages to send little more than that, and the call records the cut."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"choices":[{"index":0,"message":{"content":"')
        chunk = b"x" * 65536
        try:
            for _ in range(16384):  # 1 GiB
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=envelope("y" * 3_000_000), content_type="application/json")

    app = web.Application()
    app.router.add_post("/stream/v1/chat/completions", endless)
    app.router.add_post("/sized/v1/chat/completions", sized)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    recorder = ListRecorder()
    settings = RouterSettings(max_answer_bytes=1024 * 1024)
    try:
        async with Router(
            [handle(base + "/stream", "stream")], recorder, settings=settings
        ) as router:
            streamed = await asyncio.wait_for(ask(router), 30)
        async with Router(
            [handle(base + "/sized", "sized")], recorder, settings=settings
        ) as router:
            declared = await ask(router)
    finally:
        await runner.cleanup()
    for outcome in (streamed, declared):
        assert isinstance(outcome, EngineMalformedAnswer)
        assert "more than 1048576 bytes (router.max_answer_bytes)" in str(outcome)
    assert sent < 64 * 1024 * 1024, f"the server sent {sent} bytes before the client let go"
    assert all(c.status == "error" and c.response is None for c in recorder.calls)
    assert all("router.max_answer_bytes" in (c.error or "") for c in recorder.calls)


async def test_an_answer_under_the_cap_is_read_whole(
    answers: tuple[Answers, str], handle: Handle
) -> None:
    script, url = answers
    big = "z" * 2_000_000
    script.next = [envelope(big)]
    async with Router([handle(url)], ListRecorder()) as router:  # default cap: 8 MiB
        outcome = await ask(router)
    assert isinstance(outcome, Completion) and outcome.text == big


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)
"""JSON-like values: huge integers, NaN and infinities, lone surrogates included."""

USAGE_KEYS = st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens", "x"])

GARBAGE = st.sampled_from(["abc", "12", [3], {"n": 1}, 10**30, 1e300, -3, True, 2.5, "\ud800"])
"""Values engines have been seen (or could be) sending where a count or text belongs."""

CHOICE = st.fixed_dictionaries(
    {"message": st.fixed_dictionaries({"content": st.text() | GARBAGE | JSONISH})},
    optional={"index": st.just(0) | JSONISH},
)

ANSWERS = st.one_of(
    # an OpenAI-shaped envelope with any value where content, usage and extras go
    st.fixed_dictionaries(
        {
            "choices": st.lists(CHOICE, min_size=1, max_size=1) | JSONISH,
            "usage": st.dictionaries(USAGE_KEYS, GARBAGE | JSONISH, max_size=3) | JSONISH,
        },
        optional={"x": JSONISH},
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(min_value=100, max_value=1200).map(
        lambda n: b'{"choices":[{"message":{"content":"x"}}],"d":' + b"[" * n + b"]" * n + b"}"
    ),
)


@settings(
    max_examples=80,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=ANSWERS)
async def test_fuzzed_answers_end_with_a_reason_and_a_record_that_reads_back(
    answers: tuple[Answers, str], handle: Handle, tmp_path: Path, answer: bytes
) -> None:
    script, url = answers
    script.next = [answer]
    with Store(tmp_path / "fuzz.db") as store:
        before = store.db.conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        async with Router([handle(url)], StoreCallRecorder(store), settings=STEADY) as router:
            outcome = await ask(router)
        store.flush()
        rows = store.db.conn.execute(
            "SELECT status, error, response, prompt_tokens, completion_tokens FROM llm_calls"
            " ORDER BY rowid DESC LIMIT 1"
        ).fetchall()
        after = store.db.conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
    if isinstance(outcome, Completion):
        assert isinstance(outcome.text, str)
    else:
        assert isinstance(outcome, EngineMalformedAnswer), outcome
    assert after == before + 1
    ((status, error, response, prompt_tokens, completion_tokens),) = rows
    assert (status == "ok") == isinstance(outcome, Completion)
    assert status == "ok" or error
    if response is not None:
        json.loads(response)
    assert 0 <= prompt_tokens < 2**53 and 0 <= completion_tokens < 2**53
