"""Start-up detection against engines that answer differently: rate limits, answers of
an unusable shape, engines that are not there, and llama-cpp-python's own server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import agentos
from agentos.router.client import EngineClient
from agentos.router.detection import detect_engine
from agentos.router.local_server import LocalServer, bundled_model_path
from agentos.testing.engine import Faults, LoopbackEngine
from tests.router.conftest import scripted_engine

REPO_ROOT = Path(agentos.__file__).resolve().parent.parent

CHAT_ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
TEXT_ANSWER = {"choices": [{"index": 0, "text": "hi"}]}
VECTOR_ANSWER = {"data": [{"index": 0, "embedding": [0.1, 0.2, 0.3]}]}
PER_TOKEN_ANSWER = {"data": [{"index": 0, "embedding": [[0.1, 0.2], [0.3, 0.4]]}]}


def answers(embedding: Any = VECTOR_ANSWER) -> dict[str, Any]:
    return {
        "/v1/chat/completions": CHAT_ANSWER,
        "/v1/completions": TEXT_ANSWER,
        "/v1/embeddings": embedding,
        "/v1/models": {"data": [{"id": "m"}]},
    }


async def test_a_429_during_detection_is_retried_and_keeps_the_capability() -> None:
    seen: dict[str, int] = {}

    def script(request: web.Request, body: Any) -> tuple[int, Any]:
        seen[request.path] = seen.get(request.path, 0) + 1
        if request.path == "/v1/chat/completions" and seen[request.path] <= 2:
            return 429, {"error": {"message": "slow down"}}
        return 200, answers()[request.path]

    async with scripted_engine(script) as url:
        client = EngineClient("busy", url, timeout=5.0)
        try:
            info = await detect_engine(client, ["m"], prompt_batching=False, backoff_s=0.01)
        finally:
            await client.aclose()
    assert info.capabilities == ["chat", "completions", "embeddings"]
    assert info.healthy and info.detail == "ok"
    assert seen["/v1/chat/completions"] == 3


async def test_an_engine_that_stays_rate_limited_keeps_its_capabilities_with_a_note() -> None:
    def script(request: web.Request, body: Any) -> tuple[int, Any]:
        return 429, {"error": {"message": "slow down"}}

    async with scripted_engine(script) as url:
        client = EngineClient("busy", url, timeout=5.0)
        try:
            info = await detect_engine(client, ["m"], prompt_batching=False, backoff_s=0.01)
        finally:
            await client.aclose()
    assert info.healthy
    assert info.capabilities == ["chat", "completions", "embeddings"]
    assert "chat: still rate-limited (429) after 3 tries" in info.detail


async def test_a_500_during_detection_is_retried() -> None:
    seen: dict[str, int] = {}

    def script(request: web.Request, body: Any) -> tuple[int, Any]:
        seen[request.path] = seen.get(request.path, 0) + 1
        if seen[request.path] == 1:
            return 503, {"error": "loading model"}
        return 200, answers()[request.path]

    async with scripted_engine(script) as url:
        client = EngineClient("warming", url, timeout=5.0)
        try:
            info = await detect_engine(client, None, prompt_batching=False, backoff_s=0.01)
        finally:
            await client.aclose()
    assert info.models == ["m"]
    assert info.capabilities == ["chat", "completions", "embeddings"]


@pytest.mark.parametrize(
    ("path", "answer", "reason"),
    [
        ("/v1/embeddings", PER_TOKEN_ANSWER, "a list of vectors, one per token"),
        ("/v1/embeddings", {"data": [{"embedding": "x"}]}, "not one list of numbers"),
        ("/v1/embeddings", {"data": []}, "no 'data' list"),
        ("/v1/chat/completions", {"choices": [{"message": "hi"}]}, "no message"),
        ("/v1/chat/completions", {"choices": [7]}, "no 'choices' list"),
        ("/v1/completions", {"choices": [{"text": None}]}, "has no text"),
        ("/v1/completions", {"choices": {"0": "x"}}, "no 'choices' list"),
    ],
)
async def test_an_answer_of_an_unusable_shape_is_a_recorded_error_not_a_capability(
    path: str, answer: Any, reason: str
) -> None:
    def script(request: web.Request, body: Any) -> tuple[int, Any]:
        return 200, answer if request.path == path else answers()[request.path]

    async with scripted_engine(script) as url:
        client = EngineClient("odd", url, timeout=5.0)
        try:
            info = await detect_engine(client, ["m"], prompt_batching=False, backoff_s=0.01)
        finally:
            await client.aclose()
    capability = {
        "/v1/chat/completions": "chat",
        "/v1/completions": "completions",
        "/v1/embeddings": "embeddings",
    }[path]
    assert capability not in info.capabilities
    assert len(info.capabilities) == 2 and info.healthy
    assert f"{capability}: unusable answer from POST {path}" in info.detail
    assert reason in info.detail


async def test_an_engine_that_is_not_there_is_asked_once_per_try_not_per_endpoint() -> None:
    async with scripted_engine(lambda request, body: (200, {})) as url:
        pass  # the port is free again
    client = EngineClient("gone", url, timeout=2.0)
    try:
        info = await detect_engine(client, ["m"], backoff_s=0.01)
    finally:
        await client.aclose()
    assert not info.healthy and info.capabilities == []
    assert info.detail.startswith("unreachable: engine 'gone': POST /v1/chat/completions")
    assert "embeddings" not in info.detail


def llama_cpp_python_server(tmp_path: Path) -> LocalServer:
    """llama-cpp-python's own server as a user starts it with embeddings on: no pooling,
    so ``/v1/embeddings`` answers one vector per token; no ``/props``."""
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path())]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--embedding", "true", "--n_ctx", "512"]
    return LocalServer(
        name="llamapy",
        model_path=bundled_model_path(),
        command=argv,
        startup_timeout=120,
        log_path=tmp_path / "server.log",
    )


@pytest.mark.model
async def test_llama_cpp_python_server_as_an_openai_engine(tmp_path: Path) -> None:
    """Detection takes its chat and completions, records why its embeddings are unusable,
    and ``agentos run`` against it succeeds without a traceback or embedding retries."""
    async with llama_cpp_python_server(tmp_path) as server:
        client = EngineClient("llamapy", server.base_url, timeout=60.0)
        try:
            info = await detect_engine(client, ["smol"])
        finally:
            await client.aclose()
        assert info.capabilities == ["chat", "completions"]
        assert "embeddings: unusable answer" in info.detail
        assert "one per token" in info.detail

        (tmp_path / "config.yaml").write_text(
            textwrap.dedent(
                f"""\
                engines:
                  - type: openai
                    name: llamapy
                    base_url: {server.base_url}/v1
                    models: [smol]
                """
            )
        )
        (tmp_path / "agents.yaml").write_text(
            textwrap.dedent(
                """\
                agents:
                  - name: hello
                    model: smol
                    prompt: "Say hello."
                    max_tokens: 8
                    temperature: 0
                """
            )
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("AGENTOS_RAISE_ERRORS", None)
        db_plain = ["--db", str(tmp_path / "a.db"), "--plain"]
        done = subprocess.run(
            [sys.executable, "-m", "agentos", "run", str(tmp_path / "agents.yaml"), *db_plain],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    assert "one per token" in output  # the engine line says why
    assert "background[embeddings]" not in output  # no embedding of what it cannot embed


async def test_agentos_engines_says_why_a_healthy_engine_lacks_embeddings(tmp_path: Path) -> None:
    def script(request: web.Request, body: Any) -> tuple[int, Any]:
        return 200, answers(PER_TOKEN_ANSWER)[request.path]

    async with scripted_engine(script) as url:
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: pertoken\n    type: openai\n    base_url: {url}\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "400"}
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "agentos", "engines", "--db", str(tmp_path / "a.db")],
            *["-c", str(tmp_path / "config.yaml")],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    output = out.decode()
    assert process.returncode == 0, output
    assert "chat, completions" in output and "healthy" in output
    assert "embeddings: unusable answer from POST /v1/embeddings" in output
    assert "one per token" in output


async def test_an_engine_that_hangs_costs_one_timeout_not_one_per_try_and_endpoint() -> None:
    async with LoopbackEngine(faults=Faults(hang_rate=1.0)) as engine:
        client = EngineClient("hung", engine.url, timeout=0.5)
        started = time.monotonic()
        try:
            info = await detect_engine(client, ["test-model"], backoff_s=0.01)
        finally:
            await client.aclose()
        took = time.monotonic() - started
    assert not info.healthy
    assert info.detail.startswith("unreachable: engine 'hung': no answer to POST")
    assert took < 1.2, f"{took:.1f} s: one timeout of 0.5 s, not 3 tries x 3 endpoints"
