"""Task agents: a Python callable run with tracking, retries and idempotent results.

Each test writes its task functions as a module next to its agents file (a unique module
name per test, so Python's module cache never hands one test another's code) and runs
``TaskRun`` against a real SQLite store; model questions go to a real loopback engine.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.agents.base import RunContext
from agentos.agents.loading import load_callable
from agentos.agents.registry import make_run
from agentos.agents.state import AgentState
from agentos.agents.task import TaskOutcome, TaskRun
from agentos.agents.task_results import item_key, task_period
from agentos.errors import SpecError
from agentos.router.client import EngineClient
from agentos.router.engines import open_engines
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.display import PlainDisplay
from agentos.spec.agents import AgentSpec, load_agents
from agentos.spec.config import Config
from agentos.store import Store, queries
from agentos.testing.engine import LoopbackEngine

ROOT = Path(__file__).resolve().parents[2]


class Workspace:
    """A folder with an agents file and a module of task functions, and a store."""

    def __init__(self, folder: Path, store: Store) -> None:
        self.folder = folder
        self.store = store
        self.module = f"tasks_{uuid.uuid4().hex[:10]}"
        self.published: list[tuple[str, str, Any]] = []
        self.log = io.StringIO()

    def functions(self, source: str) -> None:
        (self.folder / f"{self.module}.py").write_text(textwrap.dedent(source))

    def agent(self, yaml_body: str) -> AgentSpec:
        """The one agent of an agents file; ``MODULE`` in the text is the module's name."""
        path = self.folder / "agents.yaml"
        path.write_text(textwrap.dedent(yaml_body).replace("MODULE", self.module))
        (spec,) = load_agents(path).agents
        return spec

    def context(self, router: Any = None) -> RunContext:
        context = RunContext(
            router=router if router is not None else Router([]),
            store=self.store,
            display=PlainDisplay(self.log),
            agents_file=str(self.folder / "agents.yaml"),
        )
        context.on_result.append(
            lambda spec, run_id, data: self.published.append((spec.name, run_id, data))
        )
        return context

    async def run(self, spec: AgentSpec, router: Any = None, **variables: Any) -> TaskOutcome:
        outcome = await TaskRun(spec, self.context(router), variables=variables).run()
        await self.store.aflush()
        return outcome

    def events(self, run_id: str, type_: str) -> list[dict[str, Any]]:
        return [e["payload"] for e in queries.run_events(self.store, run_id) if e["type"] == type_]

    def stored(self, agent: str) -> list[tuple[str, str]]:
        return list(
            self.store.db.execute(
                "SELECT period, item_key FROM task_results WHERE agent = ? ORDER BY id", [agent]
            )
        )


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    with Store(tmp_path / "agentos.db") as store:
        workspace = Workspace(tmp_path, store)
        yield workspace
    sys.modules.pop(workspace.module, None)


@pytest.fixture
async def router(ws: Workspace) -> AsyncIterator[Router]:
    """A router over a loopback engine that records its calls in the workspace's store."""
    async with LoopbackEngine() as engine:
        client = EngineClient("loop", engine.url, timeout=5.0)
        info = await client.detect(None)
        assert info.healthy, info.detail
        handle = EngineHandle(name="loop", client=client, info=info, max_requests=4)
        async with Router([handle], recorder=StoreCallRecorder(ws.store)) as routed:
            yield routed
        await client.aclose()


COLLECTOR = """
    calls = []

    def collect(source, context):
        calls.append(context.period)
        return [
            {"id": "a", "source": source, "n": 1},
            {"id": 2, "source": source},
            {"no_id": True, "source": source},
        ]
"""


async def test_a_collector_run_twice_for_the_same_period_stores_nothing_twice(
    ws: Workspace,
) -> None:
    ws.functions(COLLECTOR)
    spec = ws.agent(
        """
        - name: collector
          kind: task
          run: MODULE:collect
          args: {source: feed}
        """
    )
    first = await ws.run(spec, period="2025-06-01")
    assert (first.status, first.error) == ("succeeded", None)
    assert (first.period, first.new_results, first.duplicate_results) == ("2025-06-01", 3, 0)
    assert [r["data"] for r in queries.run_results(ws.store, first.run_id)] == [
        {"id": "a", "source": "feed", "n": 1},
        {"id": 2, "source": "feed"},
        {"no_id": True, "source": "feed"},
    ]
    assert len(ws.published) == 3

    second = await ws.run(spec, period="2025-06-01")
    assert second.status == "succeeded"
    assert (second.new_results, second.duplicate_results) == (0, 3)
    assert queries.run_results(ws.store, second.run_id) == []
    assert len(ws.published) == 3, "items already stored for the period were published again"
    (event,) = ws.events(second.run_id, "results")
    assert (event["new"], event["duplicates"]) == (0, 3)
    assert sorted(event["duplicate_keys"]) == sorted(
        ["a", "2", item_key({"no_id": True, "source": "feed"})]
    )

    third = await ws.run(spec, period="2025-06-02")
    assert (third.new_results, third.duplicate_results) == (3, 0)
    assert len(ws.published) == 6
    periods = [period for period, _ in ws.stored("collector")]
    assert periods == ["2025-06-01"] * 3 + ["2025-06-02"] * 3
    finished = ws.events(second.run_id, "run_finished")[0]
    assert (finished["new_results"], finished["duplicate_results"]) == (0, 3)


async def test_two_runs_of_the_same_fire_at_once_store_each_item_once(ws: Workspace) -> None:
    ws.functions(
        """
        import asyncio

        async def collect(context):
            await asyncio.sleep(0.05)
            return [{"id": f"item-{i}"} for i in range(20)]
        """
    )
    spec = ws.agent("- {name: racer, kind: task, run: 'MODULE:collect'}")
    fire = 1_750_000_000.0
    a, b = await asyncio.gather(ws.run(spec, fire_time=fire), ws.run(spec, fire_time=fire))
    assert a.period == b.period
    assert a.new_results + b.new_results == 20
    assert a.duplicate_results + b.duplicate_results == 20
    assert len(ws.stored("racer")) == 20
    assert len(ws.published) == 20


async def test_a_failing_function_is_retried_then_fails_with_its_error(ws: Workspace) -> None:
    ws.functions(
        """
        def collect(context):
            raise ConnectionError(f"source down (attempt {context.attempt})")
        """
    )
    spec = ws.agent(
        """
        - name: flaky
          kind: task
          run: MODULE:collect
          retry: {max_attempts: 3, backoff_initial: 0.01, backoff_max: 0.02}
        """
    )
    outcome = await ws.run(spec, period="p")
    assert outcome.status == "failed"
    assert (outcome.attempts, outcome.successes) == (3, 0)
    assert outcome.error == "ConnectionError: source down (attempt 3) (gave up after 3 attempts)"
    errors = ws.events(outcome.run_id, "error")
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert all(e["error_class"] == "ConnectionError" for e in errors)
    assert "in collect" in errors[0]["traceback"]
    assert "ConnectionError: source down (attempt 1)" in errors[0]["traceback"]
    assert [e["attempt"] for e in ws.events(outcome.run_id, "retry")] == [1, 2]
    run = queries.get_run(ws.store, outcome.run_id)
    assert run is not None
    assert (run["status"], run["attempts"], run["error"]) == ("failed", 3, outcome.error)
    assert ws.stored("flaky") == []


async def test_a_function_that_fails_once_succeeds_on_its_retry(ws: Workspace) -> None:
    ws.functions(
        """
        async def collect(context):
            if context.attempt == 1:
                raise TimeoutError("slow source")
            return {"id": "only"}
        """
    )
    spec = ws.agent(
        """
        - name: flaky
          kind: task
          run: MODULE:collect
          retry: {max_attempts: 2, backoff_initial: 0.01}
        """
    )
    run = TaskRun(spec, ws.context(), variables={"period": "p"})
    outcome = await run.run()
    assert (outcome.status, outcome.attempts, outcome.new_results) == ("succeeded", 2, 1)
    assert run.failed_attempts == 1
    assert "attempt 1 failed" in ws.log.getvalue() and "attempt 2 ok" in ws.log.getvalue()


async def test_state_persists_across_runs_and_stores(ws: Workspace, tmp_path: Path) -> None:
    ws.functions(
        """
        def count(context):
            n = context.state.get("n", 0) + 1
            context.state.set("n", n)
            assert context.state.get("n") == n
            return {"id": f"n{n}", "n": n}
        """
    )
    spec = ws.agent("- {name: counter, kind: task, run: 'MODULE:count'}")
    first = await ws.run(spec)
    second = await ws.run(spec)
    assert (first.new_results, second.new_results) == (1, 1)
    assert [r["data"]["n"] for r in queries.run_results(ws.store, second.run_id)] == [2]
    with Store(tmp_path / "agentos.db") as other:
        assert AgentState(other, "counter").get("n") == 2


async def test_the_function_asks_the_model_through_the_router(
    ws: Workspace, router: Router
) -> None:
    ws.functions(
        """
        async def ask_async(context):
            text = await context.ask("Reply with a word. ANSWER: bonjour")
            context.log("asked", answer=text)
            return {"id": "async", "text": text}

        def ask_plain(context):
            return {"id": "plain", "text": context.ask_sync("Again. ANSWER: hello")}
        """
    )
    outcomes = {}
    for function, expected in (("ask_async", "bonjour"), ("ask_plain", "hello")):
        spec = ws.agent(
            f"""
            - name: asker-{function}
              kind: task
              run: MODULE:{function}
              priority: background
            """
        )
        outcome = outcomes[function] = await ws.run(spec, router=router)
        assert outcome.status == "succeeded", outcome.error
        (result,) = queries.run_results(ws.store, outcome.run_id)
        assert result["data"]["text"] == expected
        (call,) = queries.run_llm_calls(ws.store, outcome.run_id)
        assert call["job_id"] == f"{outcome.run_id}:1:1"
        (request,) = ws.events(outcome.run_id, "request")
        assert request["messages"][-1]["content"].endswith(f"ANSWER: {expected}")
        (answer,) = ws.events(outcome.run_id, "answer")
        assert answer["text"] == expected
    (log,) = ws.events(outcomes["ask_async"].run_id, "log")
    assert (log["message"], log["answer"]) == ("asked", "bonjour")
    assert f"{outcomes['ask_async'].run_id} asker-ask_async: asked" in ws.log.getvalue()


async def test_a_task_without_an_engine_fails_at_once(ws: Workspace) -> None:
    ws.functions(
        """
        async def ask(context):
            return {"text": await context.ask("hello")}
        """
    )
    spec = ws.agent("- {name: lonely, kind: task, run: 'MODULE:ask'}")
    outcome = await ws.run(spec)
    assert outcome.status == "failed"
    assert outcome.attempts == 1, "retrying cannot find an engine that is not there"


@pytest.mark.parametrize(
    ("run", "args", "message"),
    [
        ("no_such_module_here:collect", "{}", "cannot import module 'no_such_module_here'"),
        ("MODULE:missing", "{}", "has no 'missing'"),
        ("MODULE:collect", "{wrong: 1}", "cannot be called with args (wrong)"),
        ("MODULE:collect", "{context: 1}", "'context' is passed by agentos"),
        ("MODULE:VALUE", "{}", "is a int, not a function"),
    ],
)
async def test_a_callable_that_cannot_be_called_fails_without_an_attempt(
    ws: Workspace, run: str, args: str, message: str
) -> None:
    ws.functions(
        """
        VALUE = 3

        def collect(source="x"):
            return []
        """
    )
    spec = ws.agent(f"- {{name: broken, kind: task, run: '{run}', args: {args}}}")
    outcome = await ws.run(spec)
    assert outcome.status == "failed"
    assert outcome.attempts == 0
    assert outcome.error is not None and message in outcome.error
    assert "agent 'broken'" in outcome.error
    (event,) = ws.events(outcome.run_id, "error")
    assert event["error_class"] == "SpecError"


@pytest.mark.parametrize(
    ("returned", "message"),
    [("'done'", "returned a str"), ("[{'when': object()}]", "item 0 returned by")],
)
async def test_an_unusable_return_value_fails_the_run_without_retrying(
    ws: Workspace, returned: str, message: str
) -> None:
    ws.functions(f"def collect():\n    return {returned}\n")
    spec = ws.agent("- {name: odd, kind: task, run: 'MODULE:collect'}")
    outcome = await ws.run(spec)
    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert outcome.error is not None and message in outcome.error


async def test_pause_holds_the_next_call_and_cancel_ends_the_run(ws: Workspace) -> None:
    ws.functions(
        """
        import asyncio

        async def slow(context):
            await asyncio.sleep(30)
        """
    )
    spec = ws.agent("- {name: slow, kind: task, run: 'MODULE:slow'}")
    run = make_run(spec, ws.context())
    assert isinstance(run, TaskRun)
    run.pause()
    task = asyncio.create_task(run.run())
    deadline = time.monotonic() + 5
    while run.status != "running" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert run.state == "paused"
    await asyncio.sleep(0.1)
    assert run.attempts == 0, "a paused task called its function"
    run.resume()
    while run.attempts == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    run.cancel("stopped by the test")
    outcome = await asyncio.wait_for(task, 5)
    assert (outcome.status, outcome.error) == ("cancelled", "stopped by the test")
    await ws.store.aflush()
    run_row = queries.get_run(ws.store, outcome.run_id)
    assert run_row is not None and run_row["status"] == "cancelled"


def test_the_period_comes_from_the_variables_or_the_start_date() -> None:
    scheduled = AgentSpec.model_validate(
        {
            "name": "hourly",
            "kind": "task",
            "run": "m:f",
            "life_cycle": {"type": "scheduled", "cron": "0 * * * *", "timezone": "Europe/Berlin"},
        }
    )
    # 2025-01-01 09:00 UTC is 10:00 in Berlin
    fire = 1_735_722_000.0
    assert task_period(scheduled, {"fire_time": fire}, 0) == "2025-01-01T10:00:00+01:00"
    assert task_period(scheduled, {"period": "week-1", "fire_time": fire}, 0) == "week-1"
    assert task_period(scheduled, {}, fire + 14 * 3600) == "2025-01-02"
    single = AgentSpec.model_validate({"name": "once", "kind": "task", "run": "m:f"})
    today = time.strftime("%Y-%m-%d", time.localtime(fire))
    assert task_period(single, {}, fire) == today


def test_load_callable_searches_the_folder_only_while_importing(tmp_path: Path) -> None:
    name = f"loadme_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def hello():\n    return 'hi'\n")
    try:
        function = load_callable(f"{name}:hello", tmp_path, agent="a")
        assert function() == "hi"
        assert str(tmp_path) not in sys.path
        with pytest.raises(SpecError, match=r"agent 'a'.*is not a Python callable"):
            load_callable("not a target", tmp_path, agent="a")
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(tmp_path / f"{name}.py", other / f"{name}.py")
        with pytest.raises(SpecError, match="already imported from"):
            load_callable(f"{name}:hello", other, agent="b")
        (tmp_path / "broken_dep.py").write_text("import not_installed_anywhere_xyz\n")
        with pytest.raises(SpecError, match="imports 'not_installed_anywhere_xyz'"):
            load_callable("broken_dep:f", tmp_path, agent="c")
    finally:
        sys.modules.pop(name, None)


async def test_the_examples_run_on_the_loopback_engine(ws: Workspace, router: Router) -> None:
    folder = ws.folder / "examples"
    folder.mkdir()
    for name in ("collector.yaml", "collector_task.py", "counter_fsm.yaml", "counter_fsm.py"):
        shutil.copy(ROOT / "examples" / name, folder / name)
    store = ws.store
    context = RunContext(
        router=router,
        store=store,
        display=PlainDisplay(io.StringIO()),
        agents_file=str(folder / "collector.yaml"),
    )
    try:
        (collector,) = load_agents(folder / "collector.yaml").agents
        fire = {"fire_time": 1_750_000_000}
        first = await TaskRun(collector, context, variables=fire).run()
        again = await TaskRun(collector, context, variables=fire).run()
        assert first.status == "succeeded", first.error
        assert first.new_results == 3  # the two yaml files and the model's summary
        assert (again.new_results, again.duplicate_results) == (0, 3)

        context.agents_file = str(folder / "counter_fsm.yaml")
        (counter,) = load_agents(folder / "counter_fsm.yaml").agents
        steps = []
        for _ in range(5):
            outcome = await TaskRun(counter, context).run()
            assert outcome.status == "succeeded", outcome.error
            await store.aflush()
            (result,) = queries.run_results(store, outcome.run_id)
            steps.append((result["data"]["to"], result["data"]["count"]))
        assert steps == [
            ("counting", 1),
            ("counting", 2),
            ("done", 3),
            ("idle", 0),
            ("counting", 1),
        ]
        assert AgentState(store, "counter").items() == {"count": 1, "cycle": 2, "state": "counting"}
    finally:
        sys.modules.pop("collector_task", None)
        sys.modules.pop("counter_fsm", None)


@pytest.mark.model
async def test_the_examples_run_on_the_bundled_model(ws: Workspace) -> None:
    """The collector and the counter FSM, each asking SmolLM2 through the local engine."""
    folder = ws.folder / "examples"
    folder.mkdir()
    for name in ("collector.yaml", "collector_task.py", "counter_fsm.yaml", "counter_fsm.py"):
        shutil.copy(ROOT / "examples" / name, folder / name)
    config = Config()
    try:
        async with open_engines(config, log_dir=ws.folder) as engines:
            router = Router(engines, recorder=StoreCallRecorder(ws.store))
            async with router:
                context = RunContext(
                    router=router,
                    store=ws.store,
                    display=PlainDisplay(ws.log),
                    agents_file=str(folder / "collector.yaml"),
                )
                (collector,) = load_agents(folder / "collector.yaml").agents
                fire = {"fire_time": time.time() // 3600 * 3600}
                first = await TaskRun(collector, context, variables=fire).run()
                again = await TaskRun(collector, context, variables=fire).run()
                context.agents_file = str(folder / "counter_fsm.yaml")
                (counter,) = load_agents(folder / "counter_fsm.yaml").agents
                counts = [await TaskRun(counter, context).run() for _ in range(3)]
        await ws.store.aflush()
        assert first.status == "succeeded", first.error
        assert (first.new_results, again.new_results, again.duplicate_results) == (3, 0, 3)
        summary = next(
            r["data"]
            for r in queries.run_results(ws.store, first.run_id)
            if r["data"]["id"] == "summary"
        )
        assert summary["note"], "the model wrote no note"
        assert all(o.status == "succeeded" for o in counts), [o.error for o in counts]
        assert AgentState(ws.store, "counter").items() == {
            "count": 3,
            "cycle": 1,
            "state": "done",
        }
        calls = [c for o in counts for c in queries.run_llm_calls(ws.store, o.run_id)]
        assert len(calls) == 3 and all(c["engine"] == "local" for c in calls)
    finally:
        sys.modules.pop("collector_task", None)
        sys.modules.pop("counter_fsm", None)
