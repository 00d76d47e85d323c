"""A replay answers tool calls from the record (agentos/replay/tools.py): the user tool
that a run called is not called again by ``replay exact`` or ``replay live``, and a call
the record does not have is a divergence, never a second side effect."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.replay.tools import RecordedToolRegistry
from agentos.spec.config import ToolsConfig
from agentos.testing.engine import LoopbackEngine
from agentos.tools.types import Tool, ToolContext
from tests.cli_process import run_agentos

LOGGING_TOOL = """
from pathlib import Path

LOG = Path(__file__).with_name("calls.log")


def announce(text: str) -> str:
    with LOG.open("a") as log:
        log.write(text + "\\n")
    return "ANSWER: " + text
"""

FINAL = '{"command": null, "answer": "done"}'
CALL = {"command": {"tool": "announce", "args": {"text": FINAL}}, "answer": ""}


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def agentos(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_agentos(*args, cwd=cwd)


def test_replays_do_not_call_a_user_tool_again(tmp_path: Path, engine: LoopbackEngine) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "logtools.py").write_text(LOGGING_TOOL)
    agent = {
        "name": "teller",
        "prompt": f"Say it. ANSWER: {json.dumps(CALL)}",
        "tools": ["logtools:announce"],
        "cache": False,
    }
    (project / "agents.yaml").write_text(json.dumps({"agents": [agent]}))
    config = project / "config.yaml"
    config.write_text(
        f"engines:\n  - {{type: openai, name: loop, base_url: '{engine.url}'}}\n"
        "tools:\n  calling: command\n"
    )
    db = project / "runs.db"
    done = agentos(project, "run", "agents.yaml", "--config", str(config), "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    log = project / "calls.log"
    assert log.read_text().splitlines() == [FINAL]
    listed = agentos(project, "runs", "--db", str(db), "--json")
    [run] = json.loads(listed.stdout)

    # from another folder: the user tool is found next to the recorded agents file
    for mode in (["exact"], ["live", "--config", str(config)]):
        done = agentos(tmp_path, "replay", run["id"], *mode, "--db", str(db))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "reproduced" in done.stdout
        assert log.read_text().splitlines() == [FINAL], mode


def test_a_call_the_record_does_not_have_is_a_divergence_not_a_call() -> None:
    called: list[object] = []

    def announce(arguments: dict[str, object], context: ToolContext) -> str:
        called.append(arguments)
        return "ran"

    def lookup(arguments: dict[str, object], context: ToolContext) -> str:
        called.append(arguments)
        return "looked up"

    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    changing = Tool(name="announce", description="", parameters=schema, function=announce)
    reading = Tool(
        name="lookup", description="", parameters=schema, function=lookup, side_effects=False
    )
    recorded = {(1, 0): [{"tool": "announce", "arguments": {"text": "a"}, "output": "old"}]}
    reasons: list[str] = []

    async def call(registry: RecordedToolRegistry, tool: Tool, text: str, turn: int) -> str:
        context = ToolContext(config=ToolsConfig(), store=None, agent="a", run_id="r")
        result = await registry.call(
            tool, {"text": text}, context=context, step=1, attempt=1, turn=turn
        )
        return str(result.output if result.ok else result.error)

    exact = RecordedToolRegistry(ToolsConfig(), recorded=recorded, diverged=reasons.append)
    assert asyncio.run(call(exact, changing, "a", 0)) == "old"
    answer = asyncio.run(call(exact, changing, "b", 1))
    assert answer.startswith("not run: the replay asks for the tool call announce({'text': 'b'})")
    assert len(reasons) == 1 and "never made" in reasons[0]
    assert asyncio.run(call(exact, reading, "b", 2)).startswith("not run:")

    live = RecordedToolRegistry(ToolsConfig(), recorded=recorded, live=True)
    assert asyncio.run(call(live, changing, "other", 0)).endswith(
        "announce changes things, so a replay does not run it"
    )
    assert asyncio.run(call(live, reading, "b", 1)) == "looked up"
    assert called == [{"text": "b"}]
