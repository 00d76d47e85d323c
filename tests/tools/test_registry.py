"""The registry: names agents may use, user tools, and the record of every call."""

from __future__ import annotations

import json
import sqlite3
import textwrap
import uuid
from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec.agents import load_agents
from agentos.spec.config import ToolsConfig
from agentos.store import Store, queries
from agentos.tools.registry import (
    ToolContext,
    ToolRegistry,
    check_agent_tools,
    known_tool_names,
)


def write_agents(folder: Path, body: str) -> Path:
    path = folder / "agents.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def user_module(folder: Path, source: str) -> str:
    """A module of user tools next to the agents file; a fresh name per test."""
    name = f"tools_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def test_groups_and_names(registry: ToolRegistry) -> None:
    tools = registry.resolve(["todo", "calculator", "todo_list"], agent="a")
    assert [t.name for t in tools] == [
        "todo_add",
        "todo_list",
        "todo_complete",
        "todo_delete",
        "calculator",
    ]
    assert {"todo", "calculator", "file_writer", "http_get"} <= set(known_tool_names())


def test_unknown_tool_names_the_agent_and_the_tool(registry: ToolRegistry) -> None:
    with pytest.raises(SpecError) as caught:
        registry.resolve(["calculator", "teleport"], agent="helper")
    assert "agent 'helper'" in caught.value.message
    assert "unknown tool 'teleport'" in caught.value.message
    assert "calculator" in caught.value.message  # the known names are listed


async def test_memory_search_is_a_tool_that_says_when_there_is_no_memory(
    registry: ToolRegistry,
) -> None:
    from agentos.memory.search import MemoryUnavailableError, memory_search

    (tool,) = registry.resolve(["memory_search"], agent="helper")
    assert tool.name == "memory_search"
    assert "query" in tool.parameters["properties"]

    class NoMemory:
        memory = None
        agent = "helper"
        run_id = None

    with pytest.raises(MemoryUnavailableError):
        await memory_search("anything", 3, context=NoMemory())


def test_check_agent_tools_points_at_the_line(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
        agents:
          - name: fine
            prompt: hi
            tools: [calculator, todo]
          - name: broken
            prompt: hi
            tools:
              - calculator
              - teleport
        """,
    )
    agents = load_agents(path)

    with pytest.raises(SpecError) as caught:
        check_agent_tools(agents, base_dir=tmp_path)

    assert caught.value.file == str(path)
    assert caught.value.line == 9
    assert "agent 'broken'" in caught.value.message
    assert "unknown tool 'teleport'" in caught.value.message


def test_a_planner_needs_tools(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
        - name: planner
          kind: planner
          prompt: do things
        """,
    )
    with pytest.raises(SpecError, match="planner agent 'planner' has no tools"):
        check_agent_tools(load_agents(path), base_dir=tmp_path)


def test_user_tools_load_from_the_agents_folder(tmp_path: Path, store: Store) -> None:
    module = user_module(
        tmp_path,
        '''
        def word_count(text: str, min_length: int = 1) -> int:
            """Count the words of a text.

            Words shorter than min_length are not counted.
            """
            return len([w for w in text.split() if len(w) >= min_length])

        async def shout(text: str) -> str:
            return text.upper()

        word_count.tool_examples = [("How many words in 'a b c'?", {"text": "a b c"})]
        ''',
    )
    path = write_agents(
        tmp_path,
        f"""\
        - name: counter
          prompt: count
          tools: [{module}:word_count, "{module}:shout"]
        """,
    )
    check_agent_tools(load_agents(path), base_dir=tmp_path)
    registry = ToolRegistry(ToolsConfig(), store=store, base_dir=tmp_path)

    count, shout = registry.resolve([f"{module}:word_count", f"{module}:shout"], agent="counter")

    assert count.name == "word_count"
    assert count.description == "Count the words of a text."
    assert count.parameters["required"] == ["text"]
    assert count.parameters["properties"]["min_length"]["type"] == "integer"
    assert count.examples[0].steps == (("word_count", {"text": "a b c"}),)
    assert count.source == f"{module}:word_count"
    assert shout.name == "shout"


async def test_user_tools_are_called_with_keyword_arguments(tmp_path: Path, store: Store) -> None:
    module = user_module(
        tmp_path,
        """
        from agentos.tools.registry import ToolError

        def word_count(text: str, min_length: int = 1) -> int:
            return len([w for w in text.split() if len(w) >= min_length])

        async def shout(text: str) -> str:
            if not text:
                raise ToolError("nothing to shout")
            return text.upper()
        """,
    )
    registry = ToolRegistry(ToolsConfig(), store=store, base_dir=tmp_path)
    count, shout = registry.resolve([f"{module}:word_count", f"{module}:shout"], agent="a")
    context = ToolContext(config=registry.config, store=store, agent="a", run_id=None)

    counted = await registry.call(
        count, {"text": "a bb ccc", "min_length": 2}, context=context, step=1
    )
    shouted = await registry.call(shout, {"text": "hey"}, context=context, step=2)
    refused = await registry.call(shout, {"text": ""}, context=context, step=3)
    wrong = await registry.call(count, {"text": 5}, context=context, step=4)

    assert counted.output == 2
    assert shouted.output == "HEY"
    assert (refused.error, refused.error_class) == ("nothing to shout", "ToolError")
    assert wrong.error_class == "ArgumentError"


def test_user_tool_problems_are_spec_errors(tmp_path: Path, registry: ToolRegistry) -> None:
    module = user_module(
        tmp_path,
        """
        def calculator(expression: str) -> str:
            return expression

        def takes_tool(tool: str) -> str:
            return tool

        not_callable = 3
        """,
    )
    registry.base_dir = tmp_path
    cases = {
        f"{module}:calculator": "already the name of a built-in tool",
        f"{module}:takes_tool": "argument called 'tool'",
        f"{module}:not_callable": "not a function",
        f"{module}:missing": "has no 'missing'",
        "no_such_module_here:f": "cannot import module",
    }
    for target, reason in cases.items():
        with pytest.raises(SpecError) as caught:
            registry.resolve([target], agent="a")
        assert reason in caught.value.message, target
        assert "agent 'a'" in caught.value.message


async def test_every_call_is_recorded(registry: ToolRegistry, store: Store) -> None:
    run_id = queries.create_run(
        store, agent="a", kind="prompt", spec={}, wanted=1, agents_file=None
    )
    events = queries.RunEvents(store, run_id)
    context = ToolContext(config=registry.config, store=store, agent="a", run_id=run_id)
    calculator = registry.tools["calculator"]

    await registry.call(calculator, {"expression": "6 * 7"}, context=context, step=1, events=events)
    await registry.call(calculator, {"expression": "1 / 0"}, context=context, step=2, events=events)
    registry.refuse(
        "teleport", {"to": "mars"}, "not a tool", context=context, step=3, events=events
    )
    store.flush()

    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute(
            "select step, tool, arguments, output, error, duration_ms, started_at "
            "from tool_calls where run_id = ? order by step",
            [run_id],
        ).fetchall()
    finally:
        conn.close()
    assert [(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows] == [
        (1, "calculator", {"expression": "6 * 7"}, 42, None),
        (2, "calculator", {"expression": "1 / 0"}, None, "division by zero"),
        (3, "teleport", {"to": "mars"}, None, "not a tool"),
    ]
    assert all(r[5] >= 0 and r[6] > 0 for r in rows)
    recorded = [e["payload"] for e in queries.run_events(store, run_id)]
    assert [(p["tool"], p["output"], p["error"]) for p in recorded] == [
        ("calculator", 42, None),
        ("calculator", None, "division by zero"),
        ("teleport", None, "not a tool"),
    ]


def test_a_command_field_clashes_with_tool_calling(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
        - name: shell
          prompt: run something
          tools: [calculator]
          response_format:
            command: the command to run
        """,
    )
    with pytest.raises(SpecError) as caught:
        check_agent_tools(load_agents(path), base_dir=tmp_path)
    assert "field called 'command'" in caught.value.message
    assert caught.value.line == 4


def test_the_built_in_tools_do_not_import_the_registry() -> None:
    """The registry imports the built-ins; they take their types from ``tools.types``, so
    the two never import each other (an import cycle that only lazy imports kept alive)."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "agentos" / "tools"
    importers = []
    for name in ("calculator", "files", "todo", "http", "user", "types"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "agentos.tools.registry":
                importers.append(name)
    assert importers == []
