"""The loopback test engine, driven over real HTTP on 127.0.0.1 with httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import json_repair
import jsonschema
import pydantic
import pytest

from agentos.testing.engine import CostModel, Faults, LoopbackEngine, main, split_slots

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
async def engine() -> AsyncIterator[LoopbackEngine]:
    async with LoopbackEngine(models=("test-model", "other-model")) as running:
        yield running


@pytest.fixture
async def client(engine: LoopbackEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
        yield http


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}


def content_of(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    content: str = answer.json()["choices"][0]["message"]["content"]
    return content


async def test_health_and_models(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["test-model", "other-model"]
    assert all(m["object"] == "model" for m in models["data"])


async def test_an_api_key_is_required_once_set() -> None:
    async with (
        LoopbackEngine(api_key="sk-loop") as running,
        httpx.AsyncClient(base_url=running.url, timeout=5) as http,
    ):
        assert (await http.get("/health")).status_code == 200
        refused = await http.post(CHAT, json=chat_body("hi"))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer sk-other"})
        assert wrong.status_code == 401
        auth = {"Authorization": "Bearer sk-loop"}
        assert content_of(await http.post(CHAT, json=chat_body("hi"), headers=auth))


async def test_chat_completion_shape_and_usage(client: httpx.AsyncClient) -> None:
    answer = await client.post(CHAT, json=chat_body("one two three"))
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "test-model"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    words = len(choice["message"]["content"].split())
    assert words >= 5
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": words,
        "total_tokens": 3 + words,
    }


async def test_answer_marker_scripts_the_answer(client: httpx.AsyncClient) -> None:
    body = chat_body("Reply with the city. ANSWER: Paris, France ")
    assert content_of(await client.post(CHAT, json=body)) == "Paris, France"
    conversation = {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "ANSWER: not from the system prompt"},
            {"role": "user", "content": [{"type": "text", "text": "ANSWER: first"}]},
            {"role": "assistant", "content": "first"},
            {"role": "user", "content": "again ANSWER: second"},
        ],
    }
    assert content_of(await client.post(CHAT, json=conversation)) == "second"


async def test_completions_map_prompt_lists_by_index(client: httpx.AsyncClient) -> None:
    prompts = [f"question {i} ANSWER: answer {i}" for i in range(10)]
    answer = await client.post(COMPLETIONS, json={"model": "test-model", "prompt": prompts})
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == list(range(10))
    assert [c["text"] for c in body["choices"]] == [f"answer {i}" for i in range(10)]
    assert body["usage"]["prompt_tokens"] == sum(len(p.split()) for p in prompts)
    assert body["usage"]["completion_tokens"] == 20

    single = await client.post(COMPLETIONS, json={"model": "test-model", "prompt": "hi"})
    assert [c["index"] for c in single.json()["choices"]] == [0]


async def test_a_prompt_gets_the_same_answer_batched_or_alone(client: httpx.AsyncClient) -> None:
    prompts = ["alpha", "beta", "gamma"]
    base = {"model": "test-model", "temperature": 0.2}
    batch = (await client.post(COMPLETIONS, json={**base, "prompt": prompts})).json()
    for i, prompt in enumerate(prompts):
        alone = (await client.post(COMPLETIONS, json={**base, "prompt": [prompt]})).json()
        assert alone["choices"][0]["text"] == batch["choices"][i]["text"]
    assert len({c["text"] for c in batch["choices"]}) == 3


async def test_answers_are_deterministic_and_seed_sensitive(client: httpx.AsyncClient) -> None:
    body = chat_body("tell me something", temperature=0.7, seed=1)
    first = await client.post(CHAT, json=body)
    again = await client.post(CHAT, json=body)
    assert first.content == again.content
    others = [
        chat_body("tell me something", temperature=0.7, seed=2),
        chat_body("tell me something", temperature=0.1, seed=1),
        chat_body("tell me something else", temperature=0.7, seed=1),
        {**chat_body("tell me something", temperature=0.7, seed=1), "model": "other-model"},
    ]
    for other in others:
        assert content_of(await client.post(CHAT, json=other)) != content_of(first)


async def test_n_choices_keep_the_first_answer(client: httpx.AsyncClient) -> None:
    one = content_of(await client.post(CHAT, json=chat_body("pick", seed=3)))
    three = (await client.post(CHAT, json=chat_body("pick", seed=3, n=3))).json()
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert three["choices"][0]["message"]["content"] == one


async def test_max_tokens_cuts_the_sentence(client: httpx.AsyncClient) -> None:
    answer = (await client.post(CHAT, json=chat_body("long", max_tokens=2))).json()
    assert len(answer["choices"][0]["message"]["content"].split()) == 2
    assert answer["choices"][0]["finish_reason"] == "length"


class Address(pydantic.BaseModel):
    street: str
    zip_code: str = pydantic.Field(min_length=5, max_length=5)


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18, le=30)
    score: float = pydantic.Field(gt=0, lt=1)
    role: Literal["admin", "user"]
    nickname: str | None = None
    tags: list[str] = pydantic.Field(min_length=2, max_length=2)
    home: Address
    previous: list[Address]
    active: bool


TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label", "children"],
        }
    },
    "$ref": "#/$defs/node",
}

SCHEMAS: list[dict[str, Any]] = [
    Person.model_json_schema(),
    TREE,
    {"type": "array", "items": {"type": "integer", "multipleOf": 5}, "minItems": 4},
    {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True, "minItems": 2},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
            {"required": ["b"], "properties": {"b": {"type": ["null", "integer"]}}},
        ]
    },
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}},
    {"type": "string", "maxLength": 3},
    {"type": "object", "additionalProperties": {"type": "number"}, "minProperties": 2},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: str(s.get("title", s.get("type"))))
async def test_schema_answers_validate(client: httpx.AsyncClient, schema: dict[str, Any]) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for seed in range(5):
        body = chat_body("fill it", seed=seed, response_format=response_format)
        jsonschema.validate(json.loads(content_of(await client.post(CHAT, json=body))), schema)


async def test_json_object_with_and_without_schema(client: httpx.AsyncClient) -> None:
    schema = Person.model_json_schema()
    body = chat_body("who", response_format={"type": "json_object", "schema": schema})
    person = Person.model_validate_json(content_of(await client.post(CHAT, json=body)))
    assert person.role == "admin"
    assert len(person.tags) == 2
    bare = chat_body("who", response_format={"type": "json_object"})
    assert isinstance(json.loads(content_of(await client.post(CHAT, json=bare))), dict)
    completion = {"model": "test-model", "prompt": ["x", "y"], "json_schema": schema}
    for choice in (await client.post(COMPLETIONS, json=completion)).json()["choices"]:
        Person.model_validate_json(choice["text"])


async def test_embeddings_are_deterministic_unit_vectors(client: httpx.AsyncClient) -> None:
    texts = ["the cat", "the dog", "the cat"]
    body = (await client.post(EMBEDDINGS, json={"model": "test-model", "input": texts})).json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 16 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-9 for v in vectors)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert body["usage"]["prompt_tokens"] == 6

    one = {"model": "test-model", "input": "the cat", "dimensions": 4}
    assert len((await client.post(EMBEDDINGS, json=one)).json()["data"][0]["embedding"]) == 4
    packed = {"model": "test-model", "input": "the cat", "encoding_format": "base64"}
    encoded = (await client.post(EMBEDDINGS, json=packed)).json()["data"][0]["embedding"]
    decoded = struct.unpack("<16f", base64.b64decode(encoded))
    assert decoded == pytest.approx(vectors[0], abs=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (CHAT, chat_body("x") | {"model": "nope"}, 404, "model_not_found"),
        (CHAT, chat_body("x", stream=True), 400, "invalid_request"),
        (CHAT, {"model": "test-model", "messages": []}, 400, "invalid_request"),
        (COMPLETIONS, {"model": "test-model", "prompt": [1, 2]}, 400, "invalid_request"),
        (COMPLETIONS, {"model": "test-model", "prompt": ["p"] * 65}, 400, "batch_too_large"),
        (EMBEDDINGS, {"input": "x"}, 400, "invalid_request"),
    ],
)
async def test_invalid_requests_get_openai_errors(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    answer = await client.post(path, json=body)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_routing_errors(client: httpx.AsyncClient, engine: LoopbackEngine) -> None:
    assert (await client.post(CHAT, content=b"{not json")).status_code == 400
    assert (await client.get(CHAT)).status_code == 405
    assert (await client.get("/v2/nothing")).status_code == 404
    assert engine.stats.by_path["/v2/nothing"] == 1
    assert engine.stats.by_status[400] == 1


async def test_max_batch_is_configurable(engine: LoopbackEngine, client: httpx.AsyncClient) -> None:
    engine.cost.max_batch = 3
    body: dict[str, Any] = {"model": "test-model", "prompt": ["a", "b", "c"]}
    assert (await client.post(COMPLETIONS, json=body)).status_code == 200
    body["prompt"].append("d")
    assert (await client.post(COMPLETIONS, json=body)).status_code == 400
    assert engine.stats.max_prompts_per_request == 3


async def test_stats_count_and_record_requests(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    await client.post(COMPLETIONS, json={"model": "test-model", "prompt": ["a", "b"]})
    await client.post(CHAT, json=chat_body("c"))
    await client.get("/health")
    stats = engine.stats
    assert (stats.requests, stats.prompts) == (2, 3)
    assert stats.by_path == {COMPLETIONS: 1, CHAT: 1, "/health": 1}
    assert [path for path, _ in stats.recorded] == [COMPLETIONS, CHAT]
    assert stats.recorded[1][1] == chat_body("c")
    engine.reset_stats()
    assert engine.stats.requests == 0


async def test_injected_500(engine: LoopbackEngine, client: httpx.AsyncClient) -> None:
    engine.faults.error_rate = 1.0
    answer = await client.post(CHAT, json=chat_body("x"))
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "injected_fault"
    assert "retry-after" not in answer.headers
    engine.faults.error_rate = 0.0
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 200
    assert engine.stats.errors_injected == {"error": 1}


async def test_injected_429_with_retry_after(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    engine.faults = Faults(error_rate=1.0, error_status=429, retry_after=0.25)
    answer = await client.post(COMPLETIONS, json={"model": "test-model", "prompt": "x"})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "0.25"
    assert answer.json()["error"]["type"] == "rate_limit_error"
    engine.faults.retry_after = 2
    answer = await client.post(COMPLETIONS, json={"model": "test-model", "prompt": "x"})
    assert answer.headers["retry-after"] == "2"


async def test_fail_first_fails_exactly_n(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    engine.faults.fail_first = 3
    engine.faults.error_status = 503
    statuses = [(await client.post(CHAT, json=chat_body("x"))).status_code for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    engine.faults.fail_first = 4
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 503
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 200
    assert engine.stats.errors_injected == {"fail_first": 4}


async def test_hang_makes_the_client_time_out(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    engine.faults.hang_rate = 1.0
    with pytest.raises(httpx.ReadTimeout):
        await client.post(CHAT, json=chat_body("x"), timeout=0.2)
    engine.faults.hang_rate = 0.0
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 200
    assert engine.stats.errors_injected == {"hang": 1}
    assert engine.stats.in_flight == 0


async def test_drop_closes_without_an_answer(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    engine.faults.drop_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(CHAT, json=chat_body("x"))
    engine.faults.drop_rate = 0.0
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 200


async def test_malformed_body_is_not_json(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    engine.faults.malformed_rate = 1.0
    answer = await client.post(CHAT, json=chat_body("x"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)


async def test_broken_json_content_is_repairable(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    schema = Person.model_json_schema()
    body = chat_body("who", seed=4, response_format={"type": "json_object", "schema": schema})
    clean = json.loads(content_of(await client.post(CHAT, json=body)))
    engine.faults.broken_json_rate = 1.0
    broken = content_of(await client.post(CHAT, json=body))
    assert "```json" in broken
    assert not broken.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    fenced = broken.split("```json", 1)[1].split("```", 1)[0]
    assert fenced.rstrip().endswith(",\n}")
    assert json_repair.loads(fenced) == clean
    assert engine.stats.errors_injected == {"broken_json": 1}


async def test_fault_choices_are_reproducible(engine: LoopbackEngine) -> None:
    async def statuses(client: httpx.AsyncClient) -> list[int]:
        return [(await client.post(CHAT, json=chat_body("x"))).status_code for _ in range(30)]

    engine.faults = Faults(error_rate=0.3, error_status=502, seed=7)
    async with httpx.AsyncClient(base_url=engine.url) as client:
        first = await statuses(client)
        engine.faults.seed = 8
        other = await statuses(client)
        engine.faults = Faults(error_rate=0.3, error_status=502, seed=7)
        third = await statuses(client)
    assert set(first) == {200, 502}
    assert first != other
    assert third == first  # a changed seed restarts the sequence


async def test_slots_limit_concurrency_and_timing() -> None:
    cost = CostModel(per_request_ms=20, per_prompt_ms=0, slots=3)
    async with (
        LoopbackEngine(cost=cost, record_requests=False) as engine,
        httpx.AsyncClient(base_url=engine.url, limits=httpx.Limits(max_connections=60)) as client,
    ):
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(client.post(CHAT, json=chat_body(f"q{i}")) for i in range(50))
        )
        elapsed = time.perf_counter() - started
    assert all(a.status_code == 200 for a in answers)
    assert engine.stats.max_in_flight == 3
    assert engine.stats.in_flight == 0
    assert engine.stats.queued == 0
    # 50 requests on 3 slots: 17 rounds of 20 ms at least; generous upper bound for CI
    assert 0.34 * 0.95 <= elapsed < 3.0


async def test_per_prompt_cost() -> None:
    cost = CostModel(per_request_ms=10, per_prompt_ms=5, slots=1)
    async with (
        LoopbackEngine(cost=cost) as engine,
        httpx.AsyncClient(base_url=engine.url) as client,
    ):
        started = time.perf_counter()
        body = {"model": "test-model", "prompt": ["p"] * 20}
        assert (await client.post(COMPLETIONS, json=body)).status_code == 200
        elapsed = time.perf_counter() - started
    assert 0.11 * 0.95 <= elapsed < 1.0


async def test_slots_are_served_in_arrival_order() -> None:
    async with (
        LoopbackEngine(cost=CostModel(per_request_ms=10, slots=1)) as engine,
        httpx.AsyncClient(base_url=engine.url) as client,
    ):
        done: list[str] = []

        async def ask(i: int) -> None:
            done.append(content_of(await client.post(CHAT, json=chat_body(f"ANSWER: {i}"))))

        await asyncio.gather(*(ask(i) for i in range(8)))
    arrived = [
        body["messages"][0]["content"].removeprefix("ANSWER: ") for _, body in engine.stats.recorded
    ]
    assert sorted(arrived) == [str(i) for i in range(8)]
    assert done == arrived
    assert engine.stats.max_in_flight == 1


async def test_hundreds_of_keep_alive_connections() -> None:
    """One client per connection (httpcore's pool is slow with hundreds in one client),
    sharing one TLS context that is never used, because building one per client is slow."""
    unused_tls = ssl.create_default_context()

    async def converse(url: str, i: int) -> list[str]:
        async with httpx.AsyncClient(base_url=url, timeout=20, verify=unused_tls) as client:
            asked = [chat_body(f"ANSWER: {i}-{turn}") for turn in range(2)]
            return [content_of(await client.post(CHAT, json=body)) for body in asked]

    async with LoopbackEngine(cost=CostModel(per_request_ms=5, slots=64)) as engine:
        answers = await asyncio.gather(*(converse(engine.url, i) for i in range(200)))
    assert answers == [[f"{i}-{turn}" for turn in range(2)] for i in range(200)]
    assert engine.stats.requests == 400
    assert engine.stats.connections == 200
    assert 1 < engine.stats.max_in_flight <= 64


async def test_kill_mid_request_then_start_again() -> None:
    engine = LoopbackEngine(cost=CostModel(per_request_ms=2000, slots=1))
    await engine.start()
    port = engine.port
    try:
        async with httpx.AsyncClient(base_url=engine.url, timeout=5) as client:
            pending = asyncio.create_task(client.post(CHAT, json=chat_body("x")))
            while engine.stats.in_flight == 0:
                await asyncio.sleep(0.005)
            engine.kill()
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await pending
            with pytest.raises(httpx.ConnectError):
                await client.get("/health")
            await engine.start()
            assert engine.port == port
            assert (await client.get("/health")).status_code == 200
            engine.cost.per_request_ms = 0
            assert (await client.post(CHAT, json=chat_body("y"))).status_code == 200
            assert engine.stats.in_flight == 0
    finally:
        await engine.stop()


async def test_survives_clients_that_disconnect_mid_request(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    host, port = engine.host, engine.port
    payloads = [
        b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"mo',
        b"POST /v1/chat/comp",
        b"\x16\x03\x01garbage that is not HTTP\r\n\r\n",
    ]
    for payload in payloads:
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    engine.cost.per_request_ms = 100
    _reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps(chat_body("x")).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()  # gone before the answer
    await writer.wait_closed()
    await asyncio.sleep(0.15)
    assert (await client.post(CHAT, json=chat_body("x"))).status_code == 200
    assert engine.stats.in_flight == 0


async def raw_exchange(engine: LoopbackEngine, payload: bytes, *, answers: int = 1) -> bytes:
    """Send raw bytes, read until ``answers`` complete answers (or the server closes)."""
    reader, writer = await asyncio.open_connection(engine.host, engine.port)
    received = b""
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(5):
            while received.count(b"HTTP/1.1 2") < answers or not received.endswith(b"}"):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
    finally:
        writer.close()
        await writer.wait_closed()
    return received


def post_bytes(body: dict[str, Any], *headers: str) -> bytes:
    data = json.dumps(body).encode()
    head = [f"POST {CHAT} HTTP/1.1", "Host: x", f"Content-Length: {len(data)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def test_pipelined_requests_are_answered_in_order(engine: LoopbackEngine) -> None:
    payload = b"".join(post_bytes(chat_body(f"ANSWER: p{i}")) for i in range(3))
    received = await raw_exchange(engine, payload, answers=3)
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert [received.index(f"p{i}".encode()) for i in range(3)] == sorted(
        received.index(f"p{i}".encode()) for i in range(3)
    )
    assert engine.stats.connections == 1


async def test_chunked_bodies_and_expect_continue(engine: LoopbackEngine) -> None:
    data = json.dumps(chat_body("ANSWER: chunked")).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + 7]), data[i : i + 7]) for i in range(0, len(data), 7)
    )
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    received = await raw_exchange(engine, head.encode() + chunks + b"0\r\n\r\n")
    assert b"200 OK" in received and b'"chunked"' in received

    reader, writer = await asyncio.open_connection(engine.host, engine.port)
    try:
        full = post_bytes(chat_body("ANSWER: continued"), "Expect: 100-continue")
        head_end = full.index(b"\r\n\r\n") + 4
        writer.write(full[:head_end])
        async with asyncio.timeout(5):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(full[head_end:])
            answer = await reader.readuntil(b"}]")
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"continued"' in answer


async def test_connection_close_and_http_1_0_close_after_the_answer(
    engine: LoopbackEngine,
) -> None:
    for payload in (
        post_bytes(chat_body("ANSWER: a"), "Connection: close"),
        post_bytes(chat_body("ANSWER: b")).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ):
        reader, writer = await asyncio.open_connection(engine.host, engine.port)
        writer.write(payload)
        async with asyncio.timeout(5):
            received = await reader.read()  # until the server closes
        writer.close()
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in received.lower()


async def test_a_client_that_half_closes_still_gets_its_answer(engine: LoopbackEngine) -> None:
    engine.cost.per_request_ms = 30
    reader, writer = await asyncio.open_connection(engine.host, engine.port)
    writer.write(post_bytes(chat_body("ANSWER: half")))
    writer.write_eof()
    async with asyncio.timeout(5):
        received = await reader.read()
    writer.close()
    assert received.startswith(b"HTTP/1.1 200 OK") and b'"half"' in received
    assert engine.stats.in_flight == 0


def test_run_in_thread_with_a_sync_client() -> None:
    engine = LoopbackEngine(faults=Faults(fail_first=1))
    with engine.run_in_thread(), httpx.Client(base_url=engine.url, timeout=5) as client:
        assert client.post(CHAT, json=chat_body("x")).status_code == 500
        assert content_of(client.post(CHAT, json=chat_body("ANSWER: ok"))) == "ok"
        engine.kill()
        with pytest.raises(httpx.ConnectError):
            client.get("/health")
        engine.revive()
        assert client.get("/health").status_code == 200
    assert not engine.running


def test_cli_help_lists_cost_and_fault_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--per-request-ms", "--per-prompt-ms", "--slots", "--max-batch"):
        assert option in text
    for option in ("--error-rate", "--retry-after", "--fail-first", "--hang-rate"):
        assert option in text
    for option in ("--drop-rate", "--malformed-rate", "--broken-json-rate", "--seed"):
        assert option in text


def test_split_slots_adds_up() -> None:
    assert split_slots(64, 2) == [32, 32]
    assert split_slots(7, 3) == [3, 2, 2]
    assert sum(split_slots(5, 5)) == 5


def test_cli_refuses_more_workers_than_slots() -> None:
    with pytest.raises(SystemExit):
        main(["--slots", "2", "--workers", "3"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "agentos.testing.engine",
        "--port",
        str(port),
        "--model",
        "cli-model",
        "--fail-first",
        "1",
        "--error-status",
        "429",
        "--retry-after",
        "1",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            models = client.get("/v1/models").json()
            assert [m["id"] for m in models["data"]] == ["cli-model"]
            first = client.post(CHAT, json=chat_body("x") | {"model": "cli-model"})
            assert (first.status_code, first.headers["retry-after"]) == (429, "1")
            second = client.post(CHAT, json=chat_body("ANSWER: hi") | {"model": "cli-model"})
            assert content_of(second) == "hi"
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert err == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_workers_share_one_port_and_the_slots() -> None:
    """Two processes on one port: /props reports the configured slots, both serve, and
    SIGTERM to the first stops both (the port then refuses connections)."""
    port = _free_port()
    command = [sys.executable, "-m", "agentos.testing.engine", "--port", str(port)]
    command += ["--slots", "3", "--workers", "2", "--per-request-ms", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/props").json()["total_slots"] == 3
        answers = []
        for i in range(12):  # a fresh connection each, so the kernel spreads them
            with httpx.Client(base_url=url, timeout=5) as client:
                answers.append(content_of(client.post(CHAT, json=chat_body(f"ANSWER: {i}"))))
        assert answers == [str(i) for i in range(12)]
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        with pytest.raises(httpx.ConnectError), httpx.Client(base_url=url, timeout=2) as client:
            client.get("/health")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
