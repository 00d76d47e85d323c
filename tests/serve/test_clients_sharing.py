"""Several clients of one ``agentos serve``: their jobs share batches, are queued by
priority (header, route, key), show in ``agentos top`` as processes of their own, and
their keys are never written anywhere."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from agentos.testing.engine import CostModel, LoopbackEngine
from agentos.tui.app import TopApp
from agentos.tui.data import StoreReader
from tests.serve.conftest import Served, engine_config
from tests.serve.records import client_processes, llm_calls

ALICE = "alice-secret-key-0123456789"
BOB = "bob-secret-key-9876543210zz"
KEYS = {"ALICE_KEY": ALICE, "BOB_KEY": BOB}


def keyed_config(engine: LoopbackEngine, *, bob: str | None = None, **more: Any) -> dict[str, Any]:
    """Two clients, alice and bob (bob's class ``bob`` when given), keys from the env."""
    bob_key: dict[str, Any] = {"name": "bob", "key": "${BOB_KEY}"}
    if bob:
        bob_key["priority"] = bob
    return {
        "engines": [engine_config(engine, max_batch_size=8)],
        "embeddings": {"enabled": False},
        "serve": {"keys": [{"name": "alice", "key": "${ALICE_KEY}"}, bob_key]},
        **more,
    }


def answers_in(body: Any) -> list[str]:
    """The ``ANSWER: …`` words of a request body the engine received, in order."""
    return re.findall(r"ANSWER: ([\w-]+)", json.dumps(body))


def test_two_clients_completions_share_one_batch(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(keyed_config(engine, router={"batch_window_ms": 300}), env=KEYS)
    engine.reset_stats()
    barrier = threading.Barrier(2)
    answers: dict[str, list[str]] = {}

    def ask(name: str, key: str) -> None:
        sdk = OpenAI(base_url=served.v1, api_key=key, max_retries=0)
        prompts = [f"ANSWER: {name}-1", f"ANSWER: {name}-2"]
        barrier.wait()
        answer = sdk.completions.create(model="test-model", prompt=prompts, temperature=0)
        answers[name] = [c.text for c in answer.choices]

    threads = [threading.Thread(target=ask, args=a) for a in (("alice", ALICE), ("bob", BOB))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {"alice": ["alice-1", "alice-2"], "bob": ["bob-1", "bob-2"]}

    # one /v1/completions request to the engine carried both clients' prompts
    assert [path for path, _ in engine.stats.recorded] == ["/v1/completions"]
    ((_, body),) = engine.stats.recorded
    assert sorted(answers_in(body)) == ["alice-1", "alice-2", "bob-1", "bob-2"]
    assert isinstance(body["prompt"], list) and len(body["prompt"]) == 4

    rows = llm_calls(served.db, 4)
    assert {r["batch_id"] for r in rows} != {None} and len({r["batch_id"] for r in rows}) == 1
    assert [r["batch_size"] for r in rows] == [4, 4, 4, 4]

    processes = client_processes(
        served.db,
        lambda p: all(p.get(f"client[{n}]", {}).get("jobs") == 2 for n in ("alice", "bob")),
    )
    assert set(processes) == {"client[alice]", "client[bob]"}


def test_priority_by_header_route_and_key(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    """Under a saturated engine (one request at a time), user-priority requests queued
    after background ones are served first; a background key may not ask for user."""
    served = serve(
        {
            **keyed_config(engine, bob="background", router={"batch_window_ms": 0}),
            "engines": [engine_config(engine, max_batch_size=1, max_requests=1)],
        },
        env=KEYS,
    )
    engine.cost = CostModel(per_request_ms=3000, slots=1)  # the first request holds it
    engine.reset_stats()

    alice = OpenAI(base_url=served.v1, api_key=ALICE, max_retries=0)
    bob = OpenAI(base_url=served.v1, api_key=BOB, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as header:
        bob.chat.completions.create(
            model="test-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Agentos-Priority": "user"},
        )
    assert header.value.status_code == 403 and header.value.code == "priority_not_allowed"
    assert header.value.body == {
        "message": "client[bob] may ask for priority background or lower, not user",
        "type": "permission_error",
        "param": None,
        "code": "priority_not_allowed",
    }
    with pytest.raises(openai.PermissionDeniedError):
        OpenAI(base_url=served.url + "/kernel/v1", api_key=BOB, max_retries=0).completions.create(
            model="test-model", prompt="hi"
        )
    with pytest.raises(openai.BadRequestError) as unknown:
        alice.completions.create(
            model="test-model", prompt="hi", extra_headers={"X-Agentos-Priority": "urgent"}
        )
    assert "unknown priority class 'urgent' in X-Agentos-Priority" in unknown.value.message
    assert engine.stats.requests == 0

    async def scenario() -> list[str]:
        finished: list[str] = []
        alice = AsyncOpenAI(base_url=served.v1, api_key=ALICE, max_retries=0)
        later = AsyncOpenAI(base_url=served.url + "/background/v1", api_key=ALICE, max_retries=0)
        bob = AsyncOpenAI(base_url=served.v1, api_key=BOB, max_retries=0)

        async def ask(sdk: AsyncOpenAI, name: str, **extra: Any) -> None:
            answer = await sdk.chat.completions.create(
                model="test-model",
                messages=[{"role": "user", "content": f"ANSWER: {name}"}],
                **extra,
            )
            assert answer.choices[0].message.content == name
            finished.append(name)

        async with alice, later, bob, asyncio.TaskGroup() as group:
            group.create_task(ask(alice, "blocker"))
            await until(lambda: engine.stats.requests == 1)
            engine.cost = CostModel(per_request_ms=50, slots=1)  # for those queued next
            background = [
                ask(alice, "bg-header", extra_headers={"X-Agentos-Priority": "background"}),
                ask(later, "bg-route"),
                ask(bob, "bg-key"),
            ]
            for waiting, request in enumerate(background, start=1):
                group.create_task(request)
                await until(lambda n=waiting: queued(served) == n)  # type: ignore[misc]
            for waiting, name in enumerate(("user-1", "user-2", "user-3"), start=4):
                group.create_task(ask(alice, name))
                await until(lambda n=waiting: queued(served) == n)  # type: ignore[misc]
            assert engine.stats.requests == 1  # all six queued while the first one ran
        return finished

    finished = asyncio.run(scenario())
    sent = [answers_in(body) for _, body in engine.stats.recorded]
    assert sent == [
        ["blocker"],
        ["user-1"],
        ["user-2"],
        ["user-3"],
        ["bg-header"],
        ["bg-route"],
        ["bg-key"],
    ]
    assert finished == [s[0] for s in sent]


def test_top_shows_each_client_as_a_process_with_its_figures(
    tmp_path: Path, serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    engine.cost = CostModel(per_request_ms=50, slots=1)
    served = serve(keyed_config(engine, router={"batch_window_ms": 0}), env=KEYS)
    alice = OpenAI(base_url=served.v1, api_key=ALICE, max_retries=0)
    bob = OpenAI(base_url=served.v1, api_key=BOB, max_retries=0)
    tokens = {"alice": 0, "bob": 0}
    for i in range(3):
        answer = alice.completions.create(model="test-model", prompt=f"ANSWER: a{i} b c")
        assert answer.usage is not None
        tokens["alice"] += answer.usage.total_tokens
    chat = bob.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "ANSWER: one two"}]
    )
    assert chat.usage is not None
    tokens["bob"] += chat.usage.total_tokens
    anonymous = httpx.post(
        served.v1 + "/completions",
        json={"model": "test-model", "prompt": "ANSWER: x"},
        headers={"Authorization": f"Bearer {ALICE}", "X-Agentos-Client": "ignored-with-keys"},
    )
    assert anonymous.status_code == 200
    tokens["alice"] += anonymous.json()["usage"]["total_tokens"]

    processes = client_processes(
        served.db,
        lambda p: (
            p.get("client[alice]", {}).get("jobs") == 4
            and p.get("client[bob]", {}).get("jobs") == 1
        ),
    )
    assert set(processes) == {"client[alice]", "client[bob]"}  # the header names no one
    for name in ("alice", "bob"):
        figures = processes[f"client[{name}]"]
        assert figures["tokens"] == tokens[name]
        assert figures["failed_jobs"] == 0 and figures["queued"] == 0
        assert figures["avg_wait_s"] >= 0
    assert processes["client[alice]"]["requests"] == 4

    reader = StoreReader(served.db)
    try:
        view = reader.read(time.time())
    finally:
        reader.close()
    rows = {p.name: p for p in view.processes}
    assert rows["client[alice]"].jobs == 4 and rows["client[alice]"].tokens == tokens["alice"]
    assert rows["client[bob]"].jobs == 1 and rows["client[bob]"].tokens == tokens["bob"]

    async def on_screen() -> dict[str, list[str]]:
        app = TopApp(served.db, refresh_s=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            deadline = time.monotonic() + 15
            while app.processes.row_count < 2:
                assert time.monotonic() < deadline, "no process rows in agentos top"
                await pilot.pause(0.05)
            shown = {}
            for index in range(app.processes.row_count):
                cells = [str(c) for c in app.processes.get_row_at(index)]
                shown[cells[0]] = cells
        return shown

    shown = asyncio.run(on_screen())
    assert {"client[alice]", "client[bob]"} <= set(shown)
    alice_row = shown["client[alice]"]
    assert alice_row[5:8] == ["4", "4", str(tokens["alice"])]  # reqs, jobs, tokens


def test_keys_never_reach_a_file_or_the_output(
    serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    wrong = "mallory-guess-0123456789abc"
    served = serve(keyed_config(engine), env=KEYS)
    alice = OpenAI(base_url=served.v1, api_key=ALICE, max_retries=0)
    alice.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "ANSWER: fine"}]
    )
    OpenAI(base_url=served.v1, api_key=BOB, max_retries=0).embeddings.create(
        model="test-model", input="some text"
    )
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=served.v1, api_key=wrong, max_retries=0).models.list()
    for status in (httpx.get(served.url + "/health"), httpx.get(served.url + "/openapi.json")):
        assert status.status_code == 200
        for secret in (ALICE, BOB):
            assert secret not in status.text
    rows = llm_calls(served.db, 2)
    assert len(rows) == 2
    client_processes(served.db, lambda p: len(p) == 2)
    assert served.stop() == 0

    # everything the server's folder holds: the database and its WAL, AGENTOS_HOME, config
    files = [path for path in served.db.parent.rglob("*") if path.is_file()]
    assert served.db in files and len(files) > 1
    stored = b"".join(path.read_bytes() for path in files)
    printed = served.output()
    assert "agentos serve: stopped" in printed and "2 client key(s)" in printed
    for secret in (ALICE, BOB, wrong):
        assert secret.encode() not in stored
        assert secret not in printed
    assert b"client[alice]" in stored  # the snapshot named the clients, not their keys


def queued(served: Served) -> int:
    """Jobs waiting in the server's router, as ``/health`` says."""
    waiting: int = httpx.get(served.url + "/health").json()["queue"]
    return waiting


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.02)
