"""A configured secret that an engine echoes back (a 401 body quoting the bearer token,
an answer quoting the request's headers) never reaches the store, an error or the
terminal: through the router, and through ``agentos run`` as a user runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentos import redaction
from agentos.errors import AgentosError, EngineStatusError
from agentos.router.client import EngineClient, EngineInfo
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.store import Store
from tests.threaded_engine import engine_in_thread

KEY = "sk-echoed-9f8e7d6c5b4a3210"
CHAT = InferenceRequest(kind="chat", messages=[{"role": "user", "content": "hi"}])


def echo_key(request: web.Request) -> web.Response:
    """What some gateways do: quote the credentials they refused, or the request."""
    auth = request.headers.get("Authorization", "")
    if request.path == "/v1/models":
        return web.json_response({"data": [{"id": "m"}]})
    if request.path.startswith("/content/"):
        text = f"your headers were Authorization: {auth}"
        return web.json_response({"choices": [{"index": 0, "message": {"content": text}}]})
    return web.json_response(
        {"error": {"message": f"Incorrect API key provided: {auth}", "type": "auth"}}, status=401
    )


@pytest.fixture
async def echoing() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return echo_key(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_an_echoed_key_is_redacted_from_errors_and_records(
    echoing: str, tmp_path: Path
) -> None:
    info = EngineInfo(models=["m"], capabilities=["chat"], healthy=True)
    refusing = EngineClient("refusing", echoing, api_key=KEY, timeout=5.0)
    quoting = EngineClient("quoting", echoing + "/content", api_key=KEY, timeout=5.0)
    outcomes: list[Any] = []
    try:
        with Store(tmp_path / "a.db") as store:
            for client in (refusing, quoting):
                handle = EngineHandle(name=client.name, client=client, info=info, max_requests=1)
                async with Router([handle], StoreCallRecorder(store)) as router:
                    try:
                        outcomes.append(
                            await router.submit(CHAT, retry=RetryPolicy(max_attempts=1))
                        )
                    except AgentosError as exc:
                        outcomes.append(exc)
            store.flush()
    finally:
        await refusing.aclose()
        await quoting.aclose()
    refused, quoted = outcomes
    assert isinstance(refused, EngineStatusError) and refused.status == 401
    assert "Incorrect API key provided: Bearer <redacted>" in str(refused)
    assert quoted.text == "your headers were Authorization: Bearer <redacted>"
    assert KEY not in str(refused) and KEY not in quoted.text
    conn = sqlite3.connect(tmp_path / "a.db")
    errors = [e for (e,) in conn.execute("SELECT error FROM llm_calls WHERE error IS NOT NULL")]
    assert errors and all("<redacted>" in e for e in errors)
    (quoted_row,) = conn.execute("SELECT response FROM llm_calls WHERE engine = 'quoting'")
    assert "Bearer <redacted>" in quoted_row[0]
    for table in ("llm_calls", "cache"):
        dump = "\n".join(str(row) for row in conn.execute(f"SELECT * FROM {table}"))
        assert KEY not in dump, table
    conn.close()
    assert KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("a.db*"))


def test_redact_handles_json_escapes_and_short_values() -> None:
    secret = 'pa"ss/wörd-0123'
    redaction.register(secret)
    redaction.register("abc")  # too short to redact without garbling answers
    assert redaction.redact(f"x {secret} y abc") == "x <redacted> y abc"
    escaped = b'{"m": "pa\\"ss/w\\u00f6rd-0123"}'
    assert redaction.redact_bytes(escaped) == b'{"m": "<redacted>"}'
    assert redaction.redact_bytes('{"m": "pa\\"ss/wörd-0123"}'.encode()) == b'{"m": "<redacted>"}'


async def refuse_agents(request: web.Request) -> web.Response:
    """Capability probes (``max_tokens: 1``) are answered, agents' requests refused with
    the key echoed."""
    body = await request.json() if request.can_read_body else {}
    if request.path.endswith("/embeddings"):
        return web.json_response({"data": [{"index": 0, "embedding": [0.5, 0.5]}]})
    if isinstance(body, dict) and body.get("max_tokens") == 1:
        choice = {"index": 0, "message": {"content": "x"}, "text": "x"}
        return web.json_response({"choices": [choice]})
    return echo_key(request)


def test_agentos_run_never_prints_or_stores_an_echoed_key(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: a\n    prompt: say hi\n"
        "    life_cycle: {type: single-shot, length: 1, max_attempts: 1}\n"
    )
    with engine_in_thread(refuse_agents) as url:
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: echo\n    type: openai\n    base_url: {url}\n"
            "    api_key: ${ECHO_KEY}\nrouter:\n  failover_attempts: 1\n"
        )
        env = {
            **os.environ,
            "AGENTOS_HOME": str(tmp_path / "home"),
            "AGENTOS_DB": str(tmp_path / "a.db"),
            "ECHO_KEY": KEY,
            "COLUMNS": "200",
        }
        result = subprocess.run(
            [sys.executable, "-m", "agentos", "run", "agents.yaml", "--config", "config.yaml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "Bearer <redacted>" in output  # the reason is shown, without the key
    assert KEY not in output
    conn = sqlite3.connect(tmp_path / "a.db")
    (error,) = conn.execute("SELECT error FROM llm_calls").fetchone()
    assert "Incorrect API key provided: Bearer <redacted>" in error
    conn.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert KEY.encode() not in stored


def test_the_mask_survives_the_clis_rich_rendering() -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(f"answered 401: Bearer {redaction.MASK}")  # markup on, as the CLI prints
    assert f"Bearer {redaction.MASK}" in console.export_text()
