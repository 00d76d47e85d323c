"""The engine client against the loopback test engine: detection, how every failure is
classified, request bodies, and where the API key goes (the header, and nowhere else)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
    NoEngineError,
)
from agentos.router.client import EngineClient, answer_text, usage_tokens
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.router import Router, RouterSettings
from agentos.testing.engine import Faults, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder, scripted_engine

SECRET = "sk-agentos-test-0123456789abcdef"
CHAT = "/v1/chat/completions"
HELLO = {"model": "test-model", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
async def engine() -> AsyncIterator[LoopbackEngine]:
    async with LoopbackEngine(models=("test-model", "other-model")) as running:
        yield running


@pytest.fixture
async def client(engine: LoopbackEngine) -> AsyncIterator[EngineClient]:
    engine_client = EngineClient("loop", engine.url, timeout=5.0)
    yield engine_client
    await engine_client.aclose()


async def free_url() -> str:
    """The URL of a loopback port on which nothing listens (a stopped engine's)."""
    async with LoopbackEngine() as gone:
        url = gone.url
    return url


async def test_detect_finds_models_and_every_capability(client: EngineClient) -> None:
    info = await client.detect()
    assert info.healthy
    assert info.models == ["test-model", "other-model"]
    assert info.capabilities == ["chat", "completions", "embeddings"]
    assert info.detail == "ok"


async def test_detect_with_given_models_skips_the_listing(
    client: EngineClient, engine: LoopbackEngine
) -> None:
    info = await client.detect(["other-model"])
    assert info.models == ["other-model"] and info.healthy
    assert "/v1/models" not in engine.stats.by_path
    assert {body["model"] for _path, body in engine.stats.recorded} == {"other-model"}


async def test_detect_reports_an_engine_that_is_not_listening() -> None:
    dead = EngineClient("dead", await free_url(), timeout=2.0, api_key=SECRET)
    try:
        info = await dead.detect()
    finally:
        await dead.aclose()
    assert not info.healthy
    assert info.models == [] and info.capabilities == []
    assert "Cannot connect" in info.detail and "dead" in info.detail
    assert SECRET not in info.detail


async def test_detect_lists_failed_probes_when_every_endpoint_fails(
    client: EngineClient, engine: LoopbackEngine
) -> None:
    engine.faults = Faults(error_rate=1.0, error_status=500)
    info = await client.detect()
    assert not info.healthy and info.capabilities == []
    assert info.detail.count("answered 500") == 3
    assert "chat:" in info.detail and "embeddings:" in info.detail


def test_base_url_may_be_given_with_or_without_v1() -> None:
    assert EngineClient("a", "http://127.0.0.1:9/v1/").base_url == "http://127.0.0.1:9"
    assert EngineClient("b", "http://127.0.0.1:9").base_url == "http://127.0.0.1:9"


async def test_send_returns_the_answer(client: EngineClient) -> None:
    answer = await client.send(CHAT, HELLO)
    assert answer_text(CHAT, answer)
    prompt_tokens, completion_tokens = usage_tokens(answer)
    assert prompt_tokens == 2 and completion_tokens > 0


async def test_error_status_carries_status_and_retry_after(
    client: EngineClient, engine: LoopbackEngine
) -> None:
    engine.faults = Faults(error_rate=1.0, error_status=429, retry_after=2)
    with pytest.raises(EngineStatusError) as limited:
        await client.send(CHAT, HELLO)
    assert limited.value.status == 429 and limited.value.retry_after == 2.0
    assert limited.value.engine == "loop"
    assert "429" in str(limited.value) and "injected fault" in str(limited.value)

    engine.faults = Faults(error_rate=1.0, error_status=500)
    with pytest.raises(EngineStatusError) as failed:
        await client.send(CHAT, HELLO)
    assert failed.value.status == 500 and failed.value.retry_after is None


async def test_unknown_model_is_a_404(client: EngineClient) -> None:
    with pytest.raises(EngineStatusError) as missing:
        await client.send(CHAT, {**HELLO, "model": "ghost"})
    assert missing.value.status == 404 and "ghost" in str(missing.value)


async def test_hang_is_a_timeout(engine: LoopbackEngine) -> None:
    engine.faults = Faults(hang_rate=1.0)
    impatient = EngineClient("loop", engine.url, timeout=0.2)
    try:
        with pytest.raises(EngineTimeout):
            await impatient.send(CHAT, HELLO)
    finally:
        await impatient.aclose()


async def test_drop_is_a_connection_error(client: EngineClient, engine: LoopbackEngine) -> None:
    engine.faults = Faults(drop_rate=1.0)
    with pytest.raises(EngineConnectionError):
        await client.send(CHAT, HELLO)


async def test_refused_connection_is_a_connection_error() -> None:
    dead = EngineClient("dead", await free_url(), timeout=2.0)
    try:
        with pytest.raises(EngineConnectionError):
            await dead.send(CHAT, HELLO)
    finally:
        await dead.aclose()


async def test_body_that_is_not_json_is_malformed(
    client: EngineClient, engine: LoopbackEngine
) -> None:
    engine.faults = Faults(malformed_rate=1.0)
    with pytest.raises(EngineMalformedAnswer):
        await client.send(CHAT, HELLO)


@pytest.mark.parametrize(
    "answer",
    [b"[1, 2]", b'{"object": "chat.completion"}', b'{"choices": []}', b'{"choices": "no"}'],
)
async def test_json_of_the_wrong_shape_is_malformed(answer: bytes) -> None:
    """Wire-level corner cases the loopback engine never produces: a scripted server."""
    async with scripted_engine(lambda _request, _body: (200, answer)) as url:
        odd = EngineClient("odd", url)
        try:
            with pytest.raises(EngineMalformedAnswer) as malformed:
                await odd.send(CHAT, HELLO)
        finally:
            await odd.aclose()
    assert malformed.value.engine == "odd"


def test_build_body_for_each_kind() -> None:
    plain = EngineClient("plain", "http://127.0.0.1:9")
    schema = {"type": "object"}
    chat = InferenceRequest(
        kind="chat",
        messages=[{"role": "user", "content": "hi"}],
        params={"temperature": 0},
        json_schema=schema,
    )
    assert plain.build_body(chat, "m") == (
        "/v1/chat/completions",
        {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]},
    )
    structured = EngineClient("structured", "http://127.0.0.1:9", structured_output=True)
    _path, body = structured.build_body(chat, "m")
    assert body["response_format"] == {"type": "json_object", "schema": schema}
    completion = InferenceRequest(kind="completions", prompt="once", params={"max_tokens": 4})
    assert plain.build_body(completion, "m") == (
        "/v1/completions",
        {"model": "m", "max_tokens": 4, "prompt": "once"},
    )
    embedding = InferenceRequest(kind="embeddings", input=["a", "b"])
    assert plain.build_body(embedding, "m") == (
        "/v1/embeddings",
        {"model": "m", "input": ["a", "b"]},
    )


async def test_api_key_is_sent_as_a_bearer_header(engine: LoopbackEngine) -> None:
    sent: list[tuple[str, str | None, bytes]] = []

    def forward(request: web.Request, body: Any) -> tuple[int, Any]:
        sent.append((request.path, request.headers.get("authorization"), json.dumps(body).encode()))
        if request.path == "/v1/models":
            return 200, {"data": [{"id": "test-model"}]}
        return 200, {"choices": [{"index": 0, "text": "ok", "message": {"content": "ok"}}]}

    async with scripted_engine(forward) as url:
        keyed = EngineClient("keyed", url, api_key=SECRET)
        try:
            info = await keyed.detect()
            await keyed.send(CHAT, HELLO)
        finally:
            await keyed.aclose()
    assert info.healthy
    assert len(sent) == 6  # /v1/models, three probes, the prompt-list probe, one chat
    assert all(auth == f"Bearer {SECRET}" for _path, auth, _body in sent)
    assert all(SECRET.encode() not in body for _path, _auth, body in sent)


async def test_no_authorization_header_without_a_key(client: EngineClient) -> None:
    assert "Authorization" not in client.headers


async def test_api_key_never_reaches_records_or_errors(
    connect: Connect, recorder: ListRecorder
) -> None:
    errors: list[EngineError | NoEngineError] = []
    async with LoopbackEngine() as engine:
        handle = await connect(engine, api_key=SECRET, timeout=0.3)
        policy = RetryPolicy(max_attempts=2, backoff_initial=0.001)
        # No circuit breaker here: every fault must reach the caller as its own error.
        settings = RouterSettings(failure_threshold=1000)
        async with asyncio.timeout(10), Router([handle], recorder, settings=settings) as router:
            for faults in (
                Faults(fail_first=1, error_status=500),
                Faults(error_rate=1.0, error_status=401),
                Faults(hang_rate=1.0),
                Faults(drop_rate=1.0),
                Faults(malformed_rate=1.0),
            ):
                engine.faults = faults
                try:
                    await router.submit(
                        InferenceRequest(kind="chat", messages=[{"role": "user", "content": "x"}]),
                        retry=policy,
                    )
                except EngineError as exc:
                    errors.append(exc)
            with pytest.raises(NoEngineError) as refused:
                await router.submit(InferenceRequest(kind="chat", model="nope"))
            errors.append(refused.value)
            engine.kill()
            with pytest.raises(EngineConnectionError) as unreachable:
                await router.submit(InferenceRequest(kind="chat", messages=[]), retry=policy)
            errors.append(unreachable.value)
    assert len(errors) == 6
    assert len(recorder.calls) == 2 + 1 + 4 * 2
    for call in recorder.calls:
        assert SECRET not in json.dumps(dataclasses.asdict(call), default=str)
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
