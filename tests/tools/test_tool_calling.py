"""Prompt agents calling tools: natively where the engine has tool calling, through a
``command`` field where it does not, and the fallback from one to the other.

The agents run through the real scheduler (``run_agents``) against a real HTTP engine on
loopback that answers from a script (:mod:`.scripted_engine`), and record into a real
database."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.runner import run_agents
from agentos.spec.agents import AgentSpec
from agentos.spec.config import Config, EmbeddingsConfig, OpenAIEngineConfig, ToolsConfig
from agentos.store import Store, queries
from agentos.testing.engine import LoopbackEngine

from .scripted_engine import MODEL, scripted_engine


def tool_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def agent(**fields: Any) -> AgentSpec:
    base: dict[str, Any] = {
        "name": "helper",
        "prompt": "What is (41 * 7) + 13?",
        "tools": ["calculator"],
        "response_format": {"answer": 1},
        "life_cycle": {"max_attempts": 1},
        "cache": False,
    }
    return AgentSpec.model_validate({**base, **fields})


def config(url: str, *, models: tuple[str, ...] = (MODEL,), **tools: Any) -> Config:
    engine = OpenAIEngineConfig(type="openai", name="e", base_url=url, models=list(models))
    # no background[embeddings]: it is not what these tests are about
    return Config(
        engines=[engine], tools=ToolsConfig(**tools), embeddings=EmbeddingsConfig(enabled=False)
    )


async def run(spec: AgentSpec, cfg: Config, db: Path) -> tuple[str, str | None]:
    [outcome] = await run_agents(
        [spec], config=cfg, db_path=db, display=PlainDisplay(io.StringIO())
    )
    return outcome.status, outcome.error


def recorded(db: Path) -> tuple[list[Any], list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The results, the tool_calls rows and the events of the database's one run."""
    with Store(db) as store:
        [row] = queries.list_runs(store)
        results = [r["data"] for r in queries.run_results(store, row["id"])]
        events = queries.run_events(store, row["id"])
    conn = sqlite3.connect(db)
    try:
        calls = conn.execute(
            "select step, tool, arguments, output, error from tool_calls order by step"
        ).fetchall()
    finally:
        conn.close()
    return results, calls, events


async def test_native_tool_calls_go_back_as_tool_messages(tmp_path: Path) -> None:
    script: list[dict[str, Any] | int] = [
        {"content": None, "tool_calls": [tool_call("calculator", {"expression": "(41 * 7) + 13"})]},
        {"content": '{"answer": 300}'},
    ]
    with scripted_engine(script) as engine:
        status, error = await run(agent(), config(engine.url), tmp_path / "n.db")

    assert (status, error) == ("succeeded", None)
    first, second = engine.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "300"}
    results, calls, events = recorded(tmp_path / "n.db")
    assert results == [{"answer": 300}]
    assert [(c[1], json.loads(c[2]), json.loads(c[3]), c[4]) for c in calls] == [
        ("calculator", {"expression": "(41 * 7) + 13"}, 300, None)
    ]
    [tools_event] = [e["payload"] for e in events if e["type"] == "tools"]
    assert tools_event["mode"] == "native"
    assert [e["payload"]["tool"] for e in events if e["type"] == "tool_call"] == ["calculator"]


async def test_a_tool_the_agent_may_not_use_is_refused_and_the_model_told(
    tmp_path: Path,
) -> None:
    script: list[dict[str, Any] | int] = [
        {"content": None, "tool_calls": [tool_call("file_writer", {"path": "x", "content": "y"})]},
        {"content": '{"answer": 1}'},
    ]
    with scripted_engine(script) as engine:
        status, _ = await run(agent(), config(engine.url), tmp_path / "r.db")

    assert status == "succeeded"
    told = engine.requests[1]["messages"][-1]
    assert told["role"] == "tool" and "not one of this agent's tools" in told["content"]
    _, calls, _ = recorded(tmp_path / "r.db")
    assert [(c[1], c[4]) for c in calls] == [
        ("file_writer", "'file_writer' is not one of this agent's tools (calculator)")
    ]
    assert not (tmp_path / "x").exists()


async def test_an_engine_that_refuses_tools_falls_back_to_the_command_field(
    tmp_path: Path,
) -> None:
    command = {"tool": "calculator", "args": {"expression": "2 + 2"}}
    script: list[dict[str, Any] | int] = [
        400,
        {"content": json.dumps({"command": command, "answer": 0})},
        {"content": json.dumps({"command": None, "answer": 4})},
    ]
    with scripted_engine(script) as engine:
        status, error = await run(agent(), config(engine.url), tmp_path / "f.db")

    assert (status, error) == ("succeeded", None)
    refused, asked, answered = engine.requests
    assert "tools" in refused and "tools" not in asked and "tools" not in answered
    assert "You can call these tools:" in asked["messages"][-1]["content"]
    assert answered["messages"][-1]["content"].startswith("Result of calculator: 4")
    results, calls, events = recorded(tmp_path / "f.db")
    assert results == [{"answer": 4}]
    assert [c[1] for c in calls] == ["calculator"]
    assert [e["type"] for e in events].count("tool_calling_fallback") == 1


async def test_command_mode_wraps_a_plain_text_answer(tmp_path: Path) -> None:
    command = {"tool": "calculator", "args": {"expression": "6*7"}}
    script: list[dict[str, Any] | int] = [
        {"content": json.dumps({"command": command, "answer": ""})},
        {"content": '{"command": null, "answer": "It is 42."}'},
    ]
    spec = agent(response_format=None)
    with scripted_engine(script) as engine:
        status, _ = await run(spec, config(engine.url, calling="command"), tmp_path / "c.db")

    assert status == "succeeded"
    assert "tools" not in engine.requests[0]
    assert '"answer": <your answer>' in engine.requests[0]["messages"][-1]["content"]
    results, calls, _ = recorded(tmp_path / "c.db")
    assert results == ["It is 42."]
    assert [json.loads(c[3]) for c in calls] == [42]


async def test_tool_calls_are_bounded_per_attempt(tmp_path: Path) -> None:
    again = {"content": None, "tool_calls": [tool_call("calculator", {"expression": "1+1"})]}
    script: list[dict[str, Any] | int] = [again, again, again, again]
    with scripted_engine(script) as engine:
        status, error = await run(agent(), config(engine.url, max_calls=2), tmp_path / "b.db")

    assert status == "failed"
    assert "reached the attempt cap" in (error or "")
    assert len(engine.requests) == 3
    _, calls, events = recorded(tmp_path / "b.db")
    assert len(calls) == 2
    assert any("tools.max_calls" in str(e["payload"].get("error")) for e in events)


async def test_an_unknown_tool_fails_the_run_naming_agent_and_tool(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        cfg = config(engine.url, models=())
        status, error = await run(agent(tools=["teleport"]), cfg, tmp_path / "u.db")

    assert status == "failed"
    assert "agent 'helper'" in (error or "") and "unknown tool 'teleport'" in (error or "")


async def test_command_mode_on_the_loopback_engine(tmp_path: Path) -> None:
    """The loopback engine answers what the last user message scripts after ``ANSWER:``:
    the prompt scripts the tool call, and the tool's output (a user tool that puts the
    marker before its argument) scripts the final answer."""
    (tmp_path / "script_tools.py").write_text(
        "def announce(text: str) -> str:\n    return 'ANSWER: ' + text\n", encoding="utf-8"
    )
    final = '{"command": null, "answer": "done"}'
    call = {"tool": "announce", "args": {"text": final}}
    spec = agent(
        prompt=f"Announce it. ANSWER: {json.dumps({'command': call, 'answer': ''})}",
        tools=["script_tools:announce"],
        response_format=None,
    )
    (tmp_path / "agents.yaml").write_text("[]")
    async with LoopbackEngine() as engine:
        [outcome] = await run_agents(
            [spec],
            config=config(engine.url, models=(), calling="command"),
            db_path=tmp_path / "l.db",
            display=PlainDisplay(io.StringIO()),
            agents_file=str(tmp_path / "agents.yaml"),
        )

    assert (outcome.status, outcome.error) == ("succeeded", None)
    results, calls, _ = recorded(tmp_path / "l.db")
    assert results == ["done"]
    assert [(c[1], json.loads(c[3])) for c in calls] == [("announce", f"ANSWER: {final}")]


async def test_a_command_is_run_whatever_the_other_fields_hold(tmp_path: Path) -> None:
    """The other fields are ignored while a command is given (the module docstring of
    agentos.tools.calling): a required string left empty, or left out, does not refuse
    the call; the final answer is still checked against the whole format."""
    spec = agent(response_format={"summary": "what was computed", "answer": 1})
    first = {"tool": "calculator", "args": {"expression": "6*7"}}
    second = {"tool": "calculator", "args": {"expression": "41*7"}}
    script: list[dict[str, Any] | int] = [
        {"content": json.dumps({"command": first, "summary": "", "answer": 0})},
        {"content": json.dumps({"command": second})},
        {"content": json.dumps({"command": None, "summary": "", "answer": 42})},
        {"content": json.dumps({"command": None, "summary": "six sevens", "answer": 42})},
    ]
    with scripted_engine(script) as engine:
        status, error = await run(spec, config(engine.url, calling="command"), tmp_path / "e.db")

    assert (status, error) == ("succeeded", None)
    assert len(engine.requests) == 4
    results, calls, events = recorded(tmp_path / "e.db")
    assert [(c[1], json.loads(c[3])) for c in calls] == [("calculator", 42), ("calculator", 287)]
    assert results == [{"summary": "six sevens", "answer": 42}]
    [miss] = [e["payload"]["error"] for e in events if e["type"] == "parse_error"]
    assert miss == "'summary' should not be empty"


# -- answers from the response cache -------------------------------------------------------


def runs_of(db: Path) -> list[tuple[str, str | None, list[dict[str, Any]]]]:
    """Each run's status, error and events, oldest first."""
    with Store(db) as store:
        rows = sorted(queries.list_runs(store), key=lambda row: row["started_at"])
        return [(r["status"], r["error"], queries.run_events(store, r["id"])) for r in rows]


def column(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute(sql)]
    finally:
        conn.close()


async def test_a_cached_answer_does_not_add_the_todo_again(tmp_path: Path) -> None:
    """Running the agent again gets its first answer, a todo_add call, from the response
    cache; that call ran on the first run and is not run a second time."""
    spec = agent(prompt="Add a todo to buy milk.", tools=["todo"], cache=True)
    script: list[dict[str, Any] | int] = [
        {"content": None, "tool_calls": [tool_call("todo_add", {"title": "buy milk"})]},
        {"content": '{"answer": 1}'},
    ]
    db = tmp_path / "c.db"
    with scripted_engine(script) as engine:
        first = await run(spec, config(engine.url), db)
        again = await run(spec, config(engine.url), db)

    assert first == ("succeeded", None)
    assert again == (
        "failed",
        "the answer came from the response cache (this conversation was answered before), "
        "and its tool call todo_add changes things; a cached answer's tool calls that "
        "change things are not run again, so none of its calls was run. To run them on "
        "every run, set cache: false on agent 'helper'",
    )
    assert column(db, "select title from todos") == ["buy milk"]
    assert column(db, "select tool from tool_calls") == ["todo_add"]
    assert len(engine.requests) == 2
    [_, (_, _, events)] = runs_of(db)
    [not_run] = [e["payload"] for e in events if e["type"] == "tool_call_not_run"]
    assert not_run == {
        "attempt": 1,
        "turn": 0,
        "reason": "cached answer with side effects",
        "calls": [{"tool": "todo_add", "arguments": {"title": "buy milk"}}],
    }


LOGGING_TOOLS = """
from pathlib import Path

LOG = Path(__file__).with_name("calls.log")


def announce(text: str) -> str:
    with LOG.open("a") as log:
        log.write(text + "\\n")
    return "ANSWER: " + text


def shout(text: str) -> str:
    with LOG.open("a") as log:
        log.write(text.upper() + "\\n")
    return "ANSWER: " + text


shout.tool_side_effects = False
"""


async def test_a_cached_command_runs_a_read_only_tool_anew_but_not_one_that_changes_things(
    tmp_path: Path,
) -> None:
    """Command mode on the loopback engine: the prompt scripts the call, the tool's output
    the final answer. Run twice, the answers come from the cache: a user tool (taken to
    change things) is not called again, one that says it does not is."""
    module = f"logging_tools_{tmp_path.name[-12:].replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(LOGGING_TOOLS, encoding="utf-8")
    (tmp_path / "agents.yaml").write_text("[]")
    final = '{"command": null, "answer": "done"}'

    def caller(name: str) -> AgentSpec:
        call = {"tool": name, "args": {"text": final}}
        return agent(
            name=name,
            prompt=f"Say it. ANSWER: {json.dumps({'command': call, 'answer': ''})}",
            tools=[f"{module}:{name}"],
            response_format=None,
            cache=True,
        )

    outcomes = []
    async with LoopbackEngine() as engine:
        for name in ("announce", "announce", "shout", "shout"):
            [outcome] = await run_agents(
                [caller(name)],
                config=config(engine.url, models=(), calling="command"),
                db_path=tmp_path / "m.db",
                display=PlainDisplay(io.StringIO()),
                agents_file=str(tmp_path / "agents.yaml"),
            )
            outcomes.append((outcome.agent, outcome.status, outcome.cache_hits))

    assert outcomes == [
        ("announce", "succeeded", 0),
        ("announce", "failed", 1),
        ("shout", "succeeded", 0),
        ("shout", "succeeded", 2),
    ]
    assert (tmp_path / "calls.log").read_text().splitlines() == [final, *[final.upper()] * 2]
