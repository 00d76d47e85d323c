"""The openai Python SDK against a real ``agentos serve`` in front of the loopback engine.

Every answer is compared with what the engine itself gives for the same request (the
SDK pointed straight at the engine), and every job the server answered must be a row of
``llm_calls``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from agentos.testing.engine import CostModel, LoopbackEngine
from tests.serve.conftest import Served, engine_config
from tests.serve.records import llm_calls, query

KEY = "alice-key-0123456789abcdef"


def config(engine: LoopbackEngine, **more: Any) -> dict[str, Any]:
    return {
        "engines": [engine_config(engine, max_batch_size=8)],
        "embeddings": {"enabled": False},
        **more,
    }


def direct(engine: LoopbackEngine) -> OpenAI:
    """The SDK talking to the engine itself, for the answers to compare with."""
    return OpenAI(base_url=engine.url + "/v1", api_key="none", max_retries=0)


def client(served: Served, key: str = "none", **options: Any) -> OpenAI:
    return OpenAI(base_url=served.v1, api_key=key, max_retries=0, **options)


def test_sync_chat_completions_and_embeddings_are_the_engines_answers(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(config(engine))
    engine.reset_stats()  # the router's start-up probes
    sdk = client(served)

    chat = sdk.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "ANSWER: bonjour"}]
    )
    assert chat.object == "chat.completion" and chat.model == "test-model"
    assert [c.message.content for c in chat.choices] == ["bonjour"]
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None and chat.usage.completion_tokens == 1

    prompts = ["The capital of France is", "Once upon a time", "Water boils at"]
    texts = sdk.completions.create(model="test-model", prompt=prompts, max_tokens=4, temperature=0)
    expected = direct(engine).completions.create(
        model="test-model", prompt=prompts, max_tokens=4, temperature=0
    )
    assert [c.text for c in texts.choices] == [c.text for c in expected.choices]
    assert [c.index for c in texts.choices] == [0, 1, 2]
    assert [c.finish_reason for c in texts.choices] == ["length"] * 3
    assert texts.usage == expected.usage

    words = ["a first text", "a second text"]
    vectors = sdk.embeddings.create(model="test-model", input=words)  # base64 on the wire
    floats = sdk.embeddings.create(model="test-model", input=words, encoding_format="float")
    truth = direct(engine).embeddings.create(
        model="test-model", input=words, encoding_format="float"
    )
    assert len(truth.data) == 2 and len(truth.data[0].embedding) == 16
    for got, raw, want in zip(vectors.data, floats.data, truth.data, strict=True):
        assert raw.embedding == want.embedding
        assert got.embedding == pytest.approx(want.embedding, abs=1e-7)  # float32
    assert vectors.data[0].embedding != vectors.data[1].embedding

    rows = llm_calls(served.db, 1 + 3 + 2 + 2)
    assert [(r["kind"], r["status"], r["cache_hit"]) for r in rows] == (
        [("chat", "ok", 0)]
        + [("completions", "ok", 0)] * 3
        + [("embeddings", "ok", 0)] * 2
        + [("embeddings", "ok", 1)] * 2  # the float request: the same texts, from the cache
    )
    assert all(r["engine"] == "loop" and r["model"] == "test-model" for r in rows)
    # what reached the engine: 1 chat, 3 + 2 served prompts and texts, 3 + 2 direct ones
    assert engine.stats.prompts == 1 + 3 + 2 + 3 + 2


def test_n_choices_are_sampled_apart_and_counted(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(config(engine))
    sdk = client(served)
    chat = sdk.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "Tell me a story"}], n=2
    )
    assert [c.index for c in chat.choices] == [0, 1]
    first, second = (c.message.content for c in chat.choices)
    assert first and second and first != second
    # as OpenAI counts it: the prompt once, every choice's completion
    assert chat.usage is not None and chat.usage.prompt_tokens == 6  # the ChatML prompt's words

    # two prompts, two choices each: the engine's own answer to the same request
    prompts = ["Tell me a story", "Sing me a song"]
    served_n = sdk.completions.create(model="test-model", prompt=prompts, n=2)
    engine_n = direct(engine).completions.create(model="test-model", prompt=prompts, n=2)
    assert [c.text for c in served_n.choices] == [c.text for c in engine_n.choices]
    assert [c.index for c in served_n.choices] == [0, 1, 2, 3]
    assert served_n.usage is not None and engine_n.usage is not None
    assert served_n.usage.prompt_tokens == engine_n.usage.prompt_tokens == 8
    # the router shares a batch's usage evenly among its jobs (in whole tokens)
    assert 0 <= engine_n.usage.completion_tokens - served_n.usage.completion_tokens < 4

    seeded = [
        sdk.completions.create(model="test-model", prompt="Tell me a story", n=2, seed=7)
        for _ in range(2)
    ]
    assert [c.text for c in seeded[0].choices] == [c.text for c in seeded[1].choices]
    rows = llm_calls(served.db, 2 + 4 + 2 + 2)
    assert [r["cache_hit"] for r in rows[-2:]] == [1, 1]  # a seed asks for a reproducible answer


def test_async_client_many_concurrent_requests_are_batched(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    engine.cost = CostModel(per_request_ms=30, slots=2)
    served = serve(config(engine, router={"batch_window_ms": 20}))
    engine.reset_stats()

    async def ask_all() -> tuple[list[str], list[str]]:
        sdk = AsyncOpenAI(base_url=served.v1, api_key="none", max_retries=0)

        async def ask(i: int) -> str:
            answer = await sdk.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": f"ANSWER: number {i}"}]
            )
            return answer.choices[0].message.content or ""

        async def stream(i: int) -> str:
            chunks = await sdk.completions.create(
                model="test-model", prompt=f"ANSWER: streamed {i}", stream=True
            )
            return "".join([c.choices[0].text async for c in chunks if c.choices])

        async with sdk:
            return await asyncio.gather(
                asyncio.gather(*(ask(i) for i in range(30))),
                asyncio.gather(*(stream(i) for i in range(10))),
            )

    plain, streamed = asyncio.run(ask_all())
    assert plain == [f"number {i}" for i in range(30)]
    assert streamed == [f"streamed {i}" for i in range(10)]
    rows = llm_calls(served.db, 40)
    assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
    # 40 requests went to the engine as a few prompt lists
    assert engine.stats.prompts == 40 and engine.stats.requests < 20
    assert max(r["batch_size"] for r in rows) == engine.stats.max_prompts_per_request > 1


def test_streaming_chat_and_completions_with_usage(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(config(engine))
    sdk = client(served)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Describe the sea"}]
    plain = sdk.chat.completions.create(model="test-model", messages=messages, temperature=0)

    chunks = list(
        sdk.chat.completions.create(
            model="test-model",
            messages=messages,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)

    streamed = list(
        sdk.completions.create(
            model="test-model",
            prompt=["Count to three", "Name a colour"],
            max_tokens=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = ["", ""]
    reasons: list[str | None] = [None, None]
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    want = direct(engine).completions.create(
        model="test-model", prompt=["Count to three", "Name a colour"], max_tokens=3, temperature=0
    )
    assert texts == [c.text for c in want.choices]
    assert reasons == ["length", "length"]
    assert streamed[-1].usage == want.usage

    # without include_usage no chunk carries usage; the headers say where the answer came from
    raw = sdk.chat.completions.with_raw_response.create(
        model="test-model", messages=messages, temperature=0, stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-agentos-engine"] == "loop" and raw.headers["x-agentos-cache"] == "hit"
    bare = list(raw.parse())
    assert all(c.usage is None for c in bare) and all(c.choices for c in bare)
    rows = llm_calls(served.db, 5)
    # temperature 0 asks for the reproducible answer: the streams were served from the cache
    assert [(r["kind"], r["cache_hit"]) for r in rows] == [
        ("chat", 0),
        ("chat", 1),
        ("completions", 0),
        ("completions", 0),
        ("chat", 1),
    ]


# -- errors, as the SDK raises them ---------------------------------------------------------


def test_bad_requests_are_400_with_openai_shape(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(config(engine))
    engine.reset_stats()
    sdk = client(served)
    with pytest.raises(openai.BadRequestError) as empty:
        sdk.chat.completions.create(model="test-model", messages=[])
    assert empty.value.status_code == 400
    assert empty.value.param == "messages" and empty.value.code == "invalid_request"
    assert "'messages' should be a non-empty list" in empty.value.message

    with pytest.raises(openai.BadRequestError) as n_zero:
        sdk.completions.create(model="test-model", prompt="hi", n=0)
    assert n_zero.value.param == "n"

    raw = httpx.post(
        served.v1 + "/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("the request body is not valid JSON")
    assert engine.stats.requests == 0


def test_unknown_model_is_404_not_found(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(config(engine))
    with pytest.raises(openai.NotFoundError) as caught:
        client(served).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "model 'gpt-4o' is not served here (models: test-model" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client(served).models.retrieve("gpt-4o")
    assert [m.id for m in client(served).models.list()] == ["test-model"]


def test_client_keys_401_for_a_wrong_or_missing_key(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(
        config(engine, serve={"keys": [{"name": "alice", "key": "${ALICE_KEY}"}]}),
        env={"ALICE_KEY": KEY},
    )
    engine.reset_stats()
    ok = client(served, KEY).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "ANSWER: in"}]
    )
    assert ok.choices[0].message.content == "in"

    with pytest.raises(openai.AuthenticationError) as wrong:
        client(served, "not-alice-key-0123456789").chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert wrong.value.body == {
        "message": "the client key is not one of serve.keys in config.yaml",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert wrong.value.message.endswith("the client key is not one of serve.keys in config.yaml")
    with pytest.raises(openai.AuthenticationError):
        client(served, "not-alice-key-0123456789").models.list()

    missing = httpx.post(served.v1 + "/completions", json={"model": "test-model", "prompt": "hi"})
    assert missing.status_code == 401
    assert "Authorization: Bearer KEY" in missing.json()["error"]["message"]
    assert missing.json()["error"]["type"] == "authentication_error"
    assert engine.stats.requests == 1


def test_a_full_queue_is_429_with_retry_after(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(
        {
            "engines": [engine_config(engine, max_batch_size=1, max_requests=1)],
            "embeddings": {"enabled": False},
            "router": {"batch_window_ms": 0},
            "serve": {"max_queue": 1},
        }
    )
    engine.cost = CostModel(per_request_ms=3000, slots=1)  # after the start-up probes
    engine.reset_stats()

    async def scenario() -> tuple[list[str], openai.RateLimitError, openai.RateLimitError]:
        sdk = AsyncOpenAI(base_url=served.v1, api_key="none", max_retries=0)
        async with sdk:

            def ask(text: str) -> Any:
                return asyncio.create_task(
                    sdk.chat.completions.create(
                        model="test-model", messages=[{"role": "user", "content": text}]
                    )
                )

            first = ask("ANSWER: first")  # goes to the engine, and holds it
            await wait_until(lambda: engine.stats.requests == 1)
            engine.cost = CostModel(per_request_ms=50, slots=1)
            second = ask("ANSWER: second")  # waits in the router's queue
            await wait_until(lambda: health(served)["queue"] == 1)
            with pytest.raises(openai.RateLimitError) as full:
                await sdk.chat.completions.create(
                    model="test-model", messages=[{"role": "user", "content": "third"}]
                )
            with pytest.raises(openai.RateLimitError) as two:  # n=2 is two jobs
                await sdk.completions.create(model="test-model", prompt="x", n=2)
            answers = [(await t).choices[0].message.content for t in (first, second)]
            return answers, full.value, two.value

    answers, full, two = asyncio.run(scenario())
    assert answers == ["first", "second"]
    assert full.status_code == 429 and full.code == "queue_full"
    assert "the router's queue is full (1 jobs waiting, serve.max_queue 1)" in full.message
    retry_after = int(full.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert two.response.headers["retry-after"]
    assert engine.stats.requests == 2
    assert len(llm_calls(served.db, 2)) == 2


def test_no_engine_is_503(serve: Callable[..., Served], engine: LoopbackEngine) -> None:
    engine.kill()  # nothing listens at its address any more
    served = serve(
        {
            "engines": [engine_config(engine, models=["test-model"])],
            "embeddings": {"enabled": False},
        }
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client(served).chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503 and caught.value.code == "no_engine"
    assert "no engine for model 'test-model' has answered since agentos started" in (
        caught.value.message
    )
    assert caught.value.response.headers["retry-after"] == "5"
    answer = httpx.get(served.url + "/health")
    assert answer.status_code == 503 and answer.json()["status"] == "no engine"


def test_an_engine_that_dies_gives_503_once_the_serve_deadline_passes(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    # the router's deadline (agents' jobs) stays at its 600 s: clients wait serve.deadline_s
    served = serve(
        config(
            engine,
            router={"failure_threshold": 1, "cooldown_s": 30},
            serve={"deadline_s": 2},
        )
    )
    sdk = client(served)
    before = sdk.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "ANSWER: alive"}]
    )
    assert before.choices[0].message.content == "alive"
    engine.kill()
    # the request in flight fails to connect, which takes the engine out of service
    # (failure_threshold 1); it and the next one wait for it until their deadline
    for text in ("hi", "hi again"):
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": text}]
            )
        assert caught.value.status_code == 503 and caught.value.code == "no_engine"
        assert caught.value.body["message"] == (  # type: ignore[index]
            "no engine could serve the job before its deadline (loop open)"
        )
        assert caught.value.response.headers["retry-after"] == "5"


# -- helpers --------------------------------------------------------------------------------


def health(served: Served) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(httpx.get(served.url + "/health").content)
    return answer


async def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.02)


def test_every_recorded_request_is_a_real_call(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    """What ``llm_calls`` holds for a served request is what went to the engine."""
    served = serve(config(engine))
    client(served).completions.create(model="test-model", prompt="ANSWER: recorded", seed=1)
    (row,) = llm_calls(served.db, 1)
    sent = json.loads(row["request"])
    path, body = engine.stats.recorded[-1]
    assert path == "/v1/completions"
    assert body["prompt"] in (sent["prompt"], [sent["prompt"]])
    assert json.loads(row["response"])["choices"][0]["text"] == "recorded"
    assert query(served.db, "SELECT count(*) AS n FROM runs")[0]["n"] == 0
