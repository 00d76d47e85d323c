"""Planner agents: plans checked against the registry, re-planned when they cannot run,
executed step by step with retries, every step recorded; and ``agentos ask``.

Plans are scripted with the loopback engine's ``ANSWER:`` marker (the rest of the line
after the last marker in the last user message is the answer). A re-plan is asked with
the problems of the last plan on the last line, quoting what was wrong, so a bad plan
whose wrong value holds a marker scripts the next plan: that is how these tests give the
model a second answer, and it checks on the way that a re-plan is told what was wrong.
In the prompt that marker is written ``\u0041NSWER:`` inside the JSON (:func:`hidden`),
so it only becomes a marker once the bad plan is decoded.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentos.agents import planner
from agentos.agents.ask import ask
from agentos.agents.planner import PlanOutcome
from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.runner import run_agents
from agentos.spec.agents import AgentSpec, load_agents
from agentos.spec.config import Config, EmbeddingsConfig, OpenAIEngineConfig, ToolsConfig
from agentos.store import Store, queries
from agentos.testing.engine import LoopbackEngine
from agentos.tools.registry import check_agent_tools

ROOT = Path(__file__).resolve().parents[2]


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps({"steps": [{**args, "tool": tool} for tool, args in steps]})


def hidden(text: str) -> str:
    """``text`` (JSON) with its markers written ``\\u0041NSWER:``: the same value once
    decoded, but no marker for the engine while it is still text in a prompt."""
    return text.replace("ANSWER:", "\\u0041NSWER:")


def planner_agent(answer: str, **fields: Any) -> AgentSpec:
    data: dict[str, Any] = {
        "name": "planner",
        "kind": "planner",
        "prompt": "Do it. ANSWER: {{ plan }}",
        "vars": {"plan": answer},
        "tools": ["calculator", "todo", "file_writer"],
        "temperature": 0,
        "cache": False,
        **fields,
    }
    return AgentSpec.model_validate(data)


def config_for(url: str, workspace: Path) -> Config:
    engine = OpenAIEngineConfig(type="openai", name="loop", base_url=url)
    # no background[embeddings]: it is not what these tests are about
    return Config(
        engines=[engine],
        tools=ToolsConfig(workspace=str(workspace)),
        embeddings=EmbeddingsConfig(enabled=False),
    )


async def run_planner(spec: AgentSpec, tmp_path: Path, **run: Any) -> PlanOutcome:
    async with LoopbackEngine() as engine:
        [outcome] = await run_agents(
            [spec],
            config=config_for(engine.url, tmp_path / "ws"),
            db_path=tmp_path / "p.db",
            display=PlainDisplay(io.StringIO()),
            **run,
        )
    assert isinstance(outcome, PlanOutcome)
    return outcome


def tool_calls(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "select step, tool, arguments, output, error from tool_calls order by started_at"
        ).fetchall()
    finally:
        conn.close()
    return [(s, t, json.loads(a), json.loads(o), e) for s, t, a, o, e in rows]


def events(db: Path, run_id: str) -> list[dict[str, Any]]:
    with Store(db) as store:
        return queries.run_events(store, run_id)


async def test_a_plan_runs_in_order_and_is_recorded(tmp_path: Path) -> None:
    spec = planner_agent(plan(("todo_add", {"title": "buy milk"}), ("todo_list", {})))

    outcome = await run_planner(spec, tmp_path)

    assert (outcome.status, outcome.error, outcome.plans) == ("succeeded", None, 1)
    [item] = outcome.answer
    assert (item["title"], item["done"]) == ("buy milk", False)
    assert [(s[0], s[1], s[2]) for s in tool_calls(tmp_path / "p.db")] == [
        (1, "todo_add", {"title": "buy milk"}),
        (2, "todo_list", {}),
    ]
    with Store(tmp_path / "p.db") as store:
        [result] = queries.run_results(store, outcome.run_id)
        run = queries.get_run(store, outcome.run_id)
    assert result["data"]["answer"] == outcome.answer
    assert [s["tool"] for s in result["data"]["steps"]] == ["todo_add", "todo_list"]
    assert run is not None and (run["status"], run["kind"]) == ("succeeded", "planner")
    types = [e["type"] for e in events(tmp_path / "p.db", outcome.run_id)]
    assert types.index("plan") < types.index("tool_call") < types.index("run_finished")


async def test_calculate_answers_300(tmp_path: Path) -> None:
    spec = planner_agent(plan(("calculator", {"expression": "(41 * 7) + 13"})))

    outcome = await run_planner(spec, tmp_path)

    assert (outcome.status, outcome.answer) == ("succeeded", 300)


async def test_an_unknown_tool_is_re_planned(tmp_path: Path) -> None:
    good = plan(("calculator", {"expression": "2 + 2"}))
    spec = planner_agent(hidden(plan(("ANSWER: " + good, {}))))

    outcome = await run_planner(spec, tmp_path)

    assert (outcome.status, outcome.answer, outcome.plans) == ("succeeded", 4, 2)
    recorded = events(tmp_path / "p.db", outcome.run_id)
    [invalid] = [e["payload"] for e in recorded if e["type"] == "plan_invalid"]
    assert invalid["errors"][0].startswith("step 1: unknown tool 'ANSWER: ")
    second_request = [e["payload"] for e in recorded if e["type"] == "request"][1]
    assert (
        "The last plan cannot run: step 1: unknown tool"
        in (second_request["messages"][-1]["content"])
    )
    assert [c[1] for c in tool_calls(tmp_path / "p.db")] == ["calculator"]


async def test_bad_arguments_are_re_planned(tmp_path: Path) -> None:
    good = plan(("todo_add", {"title": "call mom"}))
    spec = planner_agent(hidden(plan(("todo_complete", {"id": "ANSWER: " + good}))))

    outcome = await run_planner(spec, tmp_path)

    assert (outcome.status, outcome.plans) == ("succeeded", 2)
    assert outcome.answer["title"] == "call mom"
    recorded = events(tmp_path / "p.db", outcome.run_id)
    [invalid] = [e["payload"] for e in recorded if e["type"] == "plan_invalid"]
    assert "arguments of todo_complete: id:" in invalid["errors"][0]
    assert "not of type 'integer'" in invalid["errors"][0]


async def test_re_planning_is_bounded(tmp_path: Path) -> None:
    spec = planner_agent(plan(("teleport", {"to": "mars"})), max_replans=2)

    outcome = await run_planner(spec, tmp_path)

    assert (outcome.status, outcome.plans) == ("failed", 3)
    assert "no plan that can run after 3 tries (2 re-plans)" in (outcome.error or "")
    assert "unknown tool 'teleport'" in (outcome.error or "")
    assert tool_calls(tmp_path / "p.db") == []


async def test_a_failed_step_ends_the_run_and_later_steps_never_run(tmp_path: Path) -> None:
    spec = planner_agent(
        plan(("calculator", {"expression": "1 / 0"}), ("todo_add", {"title": "never"}))
    )

    outcome = await run_planner(spec, tmp_path)

    assert outcome.status == "failed"
    assert outcome.error == "step 1 (calculator) failed: division by zero"
    assert [(c[1], c[4]) for c in tool_calls(tmp_path / "p.db")] == [
        ("calculator", "division by zero")
    ]


async def test_a_transient_failure_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "STEP_BACKOFF_S", 0.01)
    (tmp_path / "flaky_tools.py").write_text(
        "from agentos.tools.registry import ToolError\n"
        "CALLS = []\n"
        "def flaky(text: str) -> str:\n"
        "    CALLS.append(text)\n"
        "    if len(CALLS) < 3:\n"
        "        raise ToolError('busy, try later', transient=True)\n"
        "    return text.upper()\n",
        encoding="utf-8",
    )
    (tmp_path / "agents.yaml").write_text("[]")
    spec = planner_agent(plan(("flaky", {"text": "hi"})), tools=["flaky_tools:flaky"])

    outcome = await run_planner(spec, tmp_path, agents_file=str(tmp_path / "agents.yaml"))

    assert (outcome.status, outcome.answer) == ("succeeded", "HI")
    assert outcome.steps[0].tries == 3
    assert [c[4] for c in tool_calls(tmp_path / "p.db")] == [
        "busy, try later",
        "busy, try later",
        None,
    ]
    recorded = events(tmp_path / "p.db", outcome.run_id)
    assert [e["type"] for e in recorded].count("step_retry") == 2


@pytest.mark.parametrize("side_effects", [True, False])
async def test_a_timed_out_step_that_changes_things_is_not_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side_effects: bool
) -> None:
    """A call that timed out may have done its work; a step that changes things is then
    not run a second time (the run fails saying so), a read-only one is tried again."""
    monkeypatch.setattr(planner, "STEP_BACKOFF_S", 0.01)
    module = f"slow_tools_{str(side_effects).lower()}"  # a module is imported once
    (tmp_path / f"{module}.py").write_text(
        "import pathlib, time\n"
        # counted in a file: the call that times out is killed with its worker process
        "CALLS = pathlib.Path(__file__).with_suffix('.calls')\n"
        "def send(text: str) -> str:\n"
        "    CALLS.write_text(CALLS.read_text() + text if CALLS.exists() else text)\n"
        "    if CALLS.read_text() == text:\n"
        "        time.sleep(0.5)\n"
        "    return 'sent ' + text\n"
        "send.tool_timeout = 0.2\n"
        f"send.tool_side_effects = {side_effects}\n",
        encoding="utf-8",
    )
    (tmp_path / "agents.yaml").write_text("[]")
    spec = planner_agent(plan(("send", {"text": "hi"})), tools=[f"{module}:send"])

    outcome = await run_planner(spec, tmp_path, agents_file=str(tmp_path / "agents.yaml"))

    errors = [c[4] for c in tool_calls(tmp_path / "p.db")]
    if side_effects:
        assert outcome.status == "failed"
        assert outcome.error == (
            "step 1 (send) failed: send took longer than 0.2s (not tried again: the step "
            "changes things, and the call may have done so before it timed out)"
        )
        assert errors == ["send took longer than 0.2s"]
    else:
        assert (outcome.status, outcome.answer) == ("succeeded", "sent hi")
        assert errors == ["send took longer than 0.2s", None]


async def test_later_steps_use_earlier_results(tmp_path: Path) -> None:
    spec = planner_agent(
        plan(
            ("calculator", {"expression": "6 * 7"}),
            ("file_writer", {"path": "answer.txt", "content": "The answer is {{step1}}."}),
        )
    )

    outcome = await run_planner(spec, tmp_path)

    assert outcome.status == "succeeded"
    assert (tmp_path / "ws" / "answer.txt").read_text() == "The answer is 42."
    assert outcome.steps[1].arguments["content"] == "The answer is 42."


async def test_a_reference_forward_is_re_planned(tmp_path: Path) -> None:
    spec = planner_agent(
        plan(("file_writer", {"path": "a.txt", "content": "{{step2}}"})), max_replans=0
    )

    outcome = await run_planner(spec, tmp_path)

    assert outcome.status == "failed"
    assert "{{step2}} does not name an earlier step" in (outcome.error or "")


async def test_ask_end_to_end_on_the_loopback_engine(tmp_path: Path) -> None:
    request = "Calculate (41 * 7) + 13 ANSWER: " + plan(
        ("calculator", {"expression": "(41 * 7) + 13"})
    )
    async with LoopbackEngine() as engine:
        outcome = await ask(
            request,
            config=config_for(engine.url, tmp_path / "ws"),
            store_path=tmp_path / "ask.db",
            display=PlainDisplay(io.StringIO()),
        )

    assert (outcome.status, outcome.answer, outcome.agent) == ("succeeded", 300, "ask")
    assert outcome.request == request
    with Store(tmp_path / "ask.db") as store:
        run = queries.get_run(store, outcome.run_id)
    assert run is not None and run["status"] == "succeeded"
    assert run["spec"]["tools"] == ["calculator", "todo", "file_writer"]


def test_the_example_validates() -> None:
    agents = load_agents(ROOT / "examples" / "planner.yaml")
    check_agent_tools(agents, base_dir=ROOT / "examples")
    assert [a.kind for a in agents] == ["planner", "planner"]


@pytest.mark.model
@pytest.mark.parametrize(
    ("request_text", "check"),
    [
        ("Calculate (41 * 7) + 13", lambda answer: answer == 300),
        (
            "Add a todo to buy milk, then show me all my tasks",
            lambda answer: [i["title"] for i in answer] == ["buy milk"],
        ),
    ],
)
async def test_ask_on_the_bundled_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_text: str, check: Any
) -> None:
    monkeypatch.setenv("AGENTOS_HOME", str(tmp_path / "home"))
    outcome = await ask(
        request_text,
        config=Config(),
        store_path=tmp_path / "model.db",
        display=PlainDisplay(io.StringIO()),
        log_dir=tmp_path,
    )

    assert outcome.status == "succeeded", outcome.error
    assert check(outcome.answer), outcome.answer


async def test_ask_can_search_memory(tmp_path: Path) -> None:
    """``agentos ask`` gives its planner the runtime's semantic memory, as ``agentos run``
    gives agents: ``memory_search`` recalls what an earlier run recorded."""
    from agentos.memory import Embedder
    from agentos.router.client import EngineClient
    from agentos.router.router import EngineHandle, Router

    planted = "The launch code for the orbital station is PELICAN-7"
    db = tmp_path / "ask.db"
    async with LoopbackEngine() as engine:
        with Store(db) as store:
            writer = queries.create_run(
                store, agent="writer", kind="prompt", spec={"name": "writer"}, wanted=1,
                agents_file=None,
            )  # fmt: skip
            queries.record_result(store, writer, None, planted)
            queries.record_result(store, writer, None, "an ordinary note")
            store.flush()
            client = EngineClient("loop", engine.url, timeout=10.0)
            info = await client.detect()
            handle = EngineHandle(name="loop", client=client, info=info, max_requests=4)
            async with Router([handle]) as router:
                embedder = Embedder(store, router, "test-model")
                try:
                    assert await embedder.embed_pending() == 2
                finally:
                    embedder.close()
            await client.aclose()
            await store.aflush()
        config = config_for(engine.url, tmp_path / "ws")
        config.embeddings.enabled = True
        request = "What is the launch code? ANSWER: " + plan(
            ("memory_search", {"query": "launch code of the orbital station", "limit": 1})
        )
        outcome = await ask(
            request,
            config=config,
            store_path=db,
            display=PlainDisplay(io.StringIO()),
            tools=["memory_search"],
        )

    assert outcome.status == "succeeded", outcome.error
    [hit] = outcome.answer
    assert (hit["text"], hit["agent"], hit["run_id"]) == (planted, "writer", writer)


def todos(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [title for (title,) in conn.execute("select title from todos order by id")]
    finally:
        conn.close()


async def test_a_cached_plan_does_not_add_the_todo_again(tmp_path: Path) -> None:
    """Asking the same thing again serves the plan from the response cache; its steps
    that change things are not run again from it (the run fails and says how to do it on
    purpose), and ``fresh`` plans anew and runs it."""
    request = "Add a todo to buy milk ANSWER: " + plan(("todo_add", {"title": "buy milk"}))
    db = tmp_path / "ask.db"
    async with LoopbackEngine() as engine:
        config = config_for(engine.url, tmp_path / "ws")
        assert config.cache.enabled

        async def asking(**options: Any) -> PlanOutcome:
            display = PlainDisplay(io.StringIO())
            return await ask(request, config=config, store_path=db, display=display, **options)

        first = await asking()
        again = await asking()
        fresh = await asking(fresh=True)

    assert (first.status, first.plan_cached) == ("succeeded", False)
    assert (again.status, again.plan_cached, again.steps) == ("failed", True, [])
    assert again.error == (
        "the plan came from the response cache (this request was planned before), and its "
        "step 1 (todo_add) changes things; a cached plan's steps that change things are not "
        "run again, so nothing was run. To do it again on purpose, ask with --fresh"
    )
    assert (fresh.status, fresh.plan_cached) == ("succeeded", False)
    assert todos(db) == ["buy milk", "buy milk"]
    assert [call[1] for call in tool_calls(db)] == ["todo_add", "todo_add"]
    refused = [e for e in events(db, again.run_id) if e["type"] == "plan_not_run"]
    assert [e["payload"]["steps"] for e in refused] == [[{"step": 1, "tool": "todo_add"}]]


async def test_a_cached_read_only_plan_runs_its_steps_anew_and_says_so(tmp_path: Path) -> None:
    request = "Calculate (41 * 7) + 13 ANSWER: " + plan(
        ("calculator", {"expression": "(41 * 7) + 13"})
    )
    db = tmp_path / "ask.db"
    async with LoopbackEngine() as engine:
        config = config_for(engine.url, tmp_path / "ws")
        outcomes = [
            await ask(request, config=config, store_path=db, display=PlainDisplay(io.StringIO()))
            for _ in range(2)
        ]

    assert [(o.status, o.answer, o.plan_cached) for o in outcomes] == [
        ("succeeded", 300, False),
        ("succeeded", 300, True),
    ]
    assert [call[1] for call in tool_calls(db)] == ["calculator", "calculator"]
    [plan_event] = [e for e in events(db, outcomes[1].run_id) if e["type"] == "plan"]
    assert plan_event["payload"]["cached"] is True


async def test_a_planner_agent_with_a_cached_plan_names_the_cache_setting(
    tmp_path: Path,
) -> None:
    spec = planner_agent(plan(("todo_add", {"title": "water the plants"})), cache=True)
    first = await run_planner(spec, tmp_path)
    second = await run_planner(spec, tmp_path)

    assert (first.status, second.status) == ("succeeded", "failed")
    assert (second.error or "").endswith(
        "To run it on every run, set cache: false on agent 'planner'"
    )
    assert todos(tmp_path / "p.db") == ["water the plants"]


def test_ask_twice_from_the_cli_says_the_plan_came_from_the_cache(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def agentos(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "COLUMNS": "300"}
        env.pop("AGENTOS_DB", None)
        return subprocess.run(
            [sys.executable, "-m", "agentos", "ask", *args, "--config", "config.yaml",
             "--db", "a.db"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with LoopbackEngine().run_in_thread() as engine:
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - type: openai\n    name: loop\n    base_url: {engine.url}\n"
            f"tools:\n  workspace: {tmp_path / 'ws'}\nembeddings:\n  enabled: false\n"
        )
        add = "Add a todo to buy milk ANSWER: " + plan(("todo_add", {"title": "buy milk"}))
        first = agentos(add)
        again = agentos(add)
        fresh = agentos(add, "--fresh")
        calc = "Calculate 2 + 2 ANSWER: " + plan(("calculator", {"expression": "2 + 2"}))
        agentos(calc)
        calc_again = agentos(calc)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "not verified: step 1 (todo_add): todo_add has no check" in first.stdout
    assert again.returncode == 1
    assert "the plan came from the response cache" in again.stdout
    assert "ask with --fresh" in again.stdout
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert calc_again.returncode == 0
    assert "plan from the response cache; its steps ran anew" in calc_again.stdout
    assert "verified: step 1: the expression '2 + 2' uses the request's numbers" in (
        calc_again.stdout
    )
    assert todos(tmp_path / "a.db") == ["buy milk", "buy milk"]


async def test_a_percentage_taken_whole_is_re_planned_not_reported_as_the_answer(
    tmp_path: Path,
) -> None:
    """'15% of 240' planned as 15 * 240 (3600) is caught by the calculator's check before
    it runs, and the model is asked for a new plan with the reason (an engine that
    answers from a script, in order: the wrong plan, then the right one)."""
    from tests.tools.scripted_engine import scripted_engine

    wrong = plan(("calculator", {"expression": "15 * 240"}))
    right = plan(("calculator", {"expression": "15 / 100 * 240"}))
    spec = planner_agent("", prompt="What is 15% of 240?", tools=["calculator"])
    with scripted_engine([{"content": wrong}, {"content": right}]) as engine:
        [outcome] = await run_agents(
            [spec],
            config=config_for(engine.url, tmp_path / "ws"),
            db_path=tmp_path / "p.db",
            display=PlainDisplay(io.StringIO()),
        )

    assert isinstance(outcome, PlanOutcome)
    assert (outcome.status, outcome.answer, outcome.plans) == ("succeeded", 36, 2)
    assert engine.requests[1]["messages"][-1]["content"].endswith(
        "The last plan cannot run: step 1: the request takes 15% but the expression "
        "'15 * 240' does not divide 15 by 100 (write 15% as 15 / 100)"
    )
    assert [call[2] for call in tool_calls(tmp_path / "p.db")] == [{"expression": "15 / 100 * 240"}]
    assert (outcome.verified, outcome.unverified) == (True, [])
    with Store(tmp_path / "p.db") as store:
        [result] = queries.run_results(store, outcome.run_id)
    assert result["data"]["verified"] is True
    assert result["data"]["steps"][0]["check"] == (
        "the expression '15 / 100 * 240' uses the request's numbers"
    )


async def test_a_plan_without_checks_is_reported_as_not_verified(tmp_path: Path) -> None:
    spec = planner_agent(plan(("todo_add", {"title": "buy milk"}), ("todo_list", {})))

    outcome = await run_planner(spec, tmp_path)

    assert outcome.status == "succeeded"
    assert not outcome.verified
    assert outcome.unverified == [
        "step 1 (todo_add): todo_add has no check",
        "step 2 (todo_list): todo_list has no check",
    ]
