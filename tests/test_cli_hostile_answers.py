"""``agentos run`` against an engine whose answers once crashed it (a traceback, the run
left 'interrupted'), then ``replay``, ``audit`` and ``export`` on the database it wrote:
each is a real subprocess, as a user runs them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from tests.cli_process import run_agentos
from tests.threaded_engine import Handler, engine_in_thread

AGENTS = """\
agents:
  - name: a
    prompt: give me a city
    response_format:
      city: the city
    life_cycle: {type: single-shot, length: 1, max_attempts: 2}
"""


def answering(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def engine_answering(answer: bytes) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "m"}]})
        if request.path != "/v1/chat/completions":
            return web.json_response({"error": "no"}, status=404)
        if data.get("max_tokens") == 1:  # capability probe
            return answering(b'{"choices":[{"index":0,"message":{"content":"x"}}]}')
        return answering(answer)

    return handler


def agentos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_agentos(*args, cwd=cwd, env={"AGENTOS_DB": str(cwd / "a.db")})


CITY = json.dumps({"city": "Paris"})
HOSTILE = {
    "usage tokens are a string": json.dumps(
        {
            "choices": [{"index": 0, "message": {"content": CITY}}],
            "usage": {"prompt_tokens": "abc", "completion_tokens": [3]},
        }
    ).encode(),
    "content nested 5000 deep": json.dumps(
        {"choices": [{"index": 0, "message": {"content": "[" * 5000 + "]" * 5000}}]}
    ).encode(),
}


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_answer_is_a_recorded_outcome_and_the_record_stays_usable(
    tmp_path: Path, answer: bytes
) -> None:
    (tmp_path / "agents.yaml").write_text(AGENTS)
    with engine_in_thread(engine_answering(answer)) as url:
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: e\n    type: openai\n    base_url: {url}\n"
        )
        run = agentos("run", "agents.yaml", "--config", "config.yaml", cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode in (0, 1), output
    assert "Traceback" not in output
    conn = sqlite3.connect(tmp_path / "a.db")
    ((run_id, status, error),) = conn.execute("SELECT id, status, error FROM runs").fetchall()
    assert status in ("succeeded", "failed") and (status == "succeeded" or error)
    conn.close()
    for command in (
        ["replay", run_id],
        ["audit", run_id],
        ["export", "-t", "llm_calls"],
        ["export", "-t", "events", "-f", "csv"],
    ):
        result = agentos(*command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
