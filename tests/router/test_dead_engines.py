"""Dead engines: a job whose every engine never answered fails at once, and jobs that
wait for engines that stopped answering are announced at once, again while they wait,
and when an engine answers again."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import pytest

from agentos.errors import EngineConnectionError, NoEngineError
from agentos.router.client import EngineClient
from agentos.router.detection import detect_engine
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.testing.engine import LoopbackEngine
from tests.router.conftest import Connect
from tests.test_cli import agentos

ONE_TRY = RetryPolicy(max_attempts=1, backoff_initial=0.001, backoff_max=0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chat(text: str, model: str | None = None) -> InferenceRequest:
    return InferenceRequest(
        kind="chat", model=model, messages=[{"role": "user", "content": f"ANSWER: {text}"}]
    )


async def dead_handle(port: int, name: str = "remote", model: str = "tiny") -> EngineHandle:
    """An engine configured with its models whose server is not running."""
    client = EngineClient(name, f"http://127.0.0.1:{port}", timeout=2.0)
    info = await detect_engine(client, [model], backoff_s=0.01)
    assert not info.healthy and info.models == [model]
    return EngineHandle(name=name, client=client, info=info, max_requests=2)


async def test_a_job_whose_engine_never_answered_fails_at_once() -> None:
    port = free_port()
    handle = await dead_handle(port)
    try:
        async with Router([handle]) as router:
            started = time.monotonic()
            async with asyncio.timeout(5):  # the deadline is 600 s
                with pytest.raises(NoEngineError) as failure:
                    await router.submit(chat("hi", model="tiny"))
            assert time.monotonic() - started < 1.0
    finally:
        await handle.client.aclose()
    message = failure.value.message
    assert "no engine for model 'tiny' has answered since agentos started" in message
    assert f"remote at http://127.0.0.1:{port}: unreachable" in message
    assert router.jobs_failed == 0, "refused before it was queued"


async def test_a_dead_engine_that_comes_up_later_gets_jobs() -> None:
    port = free_port()
    handle = await dead_handle(port, name="late", model="test-model")
    settings = RouterSettings(cooldown_s=0.1)
    try:
        async with Router([handle], settings=settings) as router:
            with pytest.raises(NoEngineError):
                await router.submit(chat("early", model="test-model"))
            async with LoopbackEngine(port=port), asyncio.timeout(10):
                while not handle.answered:  # the health probe finds it up
                    await asyncio.sleep(0.02)
                answer = await router.submit(chat("later", model="test-model"))
    finally:
        await handle.client.aclose()
    assert answer.text == "later" and answer.engine == "late"
    assert handle.info.models == ["test-model"]


async def test_waiting_jobs_are_announced_at_once_again_and_when_the_engine_is_back(
    connect: Connect,
) -> None:
    notices: list[tuple[float, str]] = []
    async with LoopbackEngine() as engine:
        handle = await connect(engine, max_requests=2)
        settings = RouterSettings(failure_threshold=2, cooldown_s=0.2, notice_every_s=0.6)
        router = Router(
            [handle],
            settings=settings,
            notices=lambda line: notices.append((time.monotonic(), line)),
        )
        async with asyncio.timeout(15), router:
            engine.kill()
            for i in range(2):
                with pytest.raises(EngineConnectionError):
                    await router.submit(chat(f"doomed{i}"), retry=ONE_TRY)
            assert handle.health.state == "open" and handle.answered
            started = time.monotonic()
            waiting = [
                asyncio.create_task(router.submit(chat(f"w{i}"), deadline_s=60)) for i in range(2)
            ]
            while len(notices) < 2:
                await asyncio.sleep(0.02)
            assert not any(task.done() for task in waiting), "still waiting, not failed"
            await engine.start()  # back on the same port
            answers = await asyncio.gather(*waiting)
            while not any("answers again" in line for _, line in notices):
                await asyncio.sleep(0.02)
    first_at, first = notices[0]
    assert first_at - started < 1.0, "said at once (within a sweep)"
    assert first.startswith("2 jobs waiting for engine loop, which does not answer (loop at ")
    assert "Cannot connect" in first or "health probe" in first
    assert re.search(r"the first fails at \d\d:\d\d:\d\d \(in (59|60) s, the router's", first)
    second_at, second = notices[1]
    assert second.startswith("2 jobs waiting for engine loop")
    assert second_at - first_at >= 0.6, "repeated every notice_every_s, not every sweep"
    assert notices[-1][1] == "engine loop answers again; the jobs that waited for it go on"
    assert [a.text for a in answers] == ["w0", "w1"]


def test_agentos_run_against_a_dead_engine_fails_at_once_with_the_reason(
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        "engines:\n  - name: remote\n    type: openai\n"
        f"    base_url: http://127.0.0.1:{port}/v1\n    models: [tiny]\n"
    )
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: hello\n    model: tiny\n    prompt: Say hello.\n"
    )
    started = time.monotonic()
    done = agentos("run", "agents.yaml", "--db", "a.db", "--plain", cwd=tmp_path)
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert took < 30, "not the 600 s router deadline"
    assert "Traceback" not in output
    assert f"engine remote at http://127.0.0.1:{port}: tiny (unhealthy: unreachable: " in output
    assert "failed: hello 0/1" in output
    assert "no engine for model 'tiny' has answered since agentos started" in output
    runs = agentos("runs", "--db", "a.db", "--json", cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    [run] = json.loads(runs.stdout)
    assert run["status"] == "failed"
    assert "has answered since agentos started" in run["error"]
