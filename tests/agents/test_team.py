"""Teams: turn order, every termination condition, the record and the shared memory.

Each test runs a real team against the loopback engine over HTTP, with a real SQLite store.
``ANSWER: text`` at the end of a member's prompt scripts what it says: the member's prompt
is the last part of its request, so its marker is the one the engine reads.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentos.agents.base import RunContext
from agentos.agents.registry import make_run
from agentos.agents.team import TeamOutcome, TeamRun, check_team_members, mentions
from agentos.errors import SpecError
from agentos.router.client import EngineClient
from agentos.router.engines import open_engines
from agentos.router.handle import RouterSettings
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.display import PlainDisplay
from agentos.spec.agents import AgentsFile, AgentSpec, load_agents
from agentos.spec.config import Config
from agentos.store import Store, queries
from agentos.testing.engine import CostModel, LoopbackEngine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "team.yaml"


@dataclass
class Runtime:
    """A router on a loopback engine and a store, ready to run the teams of a YAML text."""

    tmp_path: Path
    engine: LoopbackEngine
    router: Router
    store: Store
    log: io.StringIO

    def load(self, text: str) -> AgentsFile:
        path = self.tmp_path / "agents.yaml"
        path.write_text(text)
        return load_agents(path)

    def context(self, agents: AgentsFile, results: list[Any] | None = None) -> RunContext:
        context = RunContext(
            router=self.router,
            store=self.store,
            display=PlainDisplay(self.log),
            agents_file=str(agents.path),
            agents=agents,
        )
        if results is not None:
            context.on_result.append(lambda spec, run_id, data: results.append(data))
        return context

    async def run(self, text: str, team: str = "team") -> tuple[TeamOutcome, list[dict[str, Any]]]:
        agents = self.load(text)
        run = make_run(agents[team], self.context(agents))
        outcome = await run.run()
        assert isinstance(outcome, TeamOutcome)
        self.store.flush()
        return outcome, queries.run_events(self.store, outcome.run_id)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with LoopbackEngine() as engine:
        client = EngineClient("loop", engine.url, timeout=5.0)
        info = await client.detect(None)
        assert info.healthy, info.detail
        handle = EngineHandle(name="loop", client=client, info=info, max_requests=4)
        with Store(tmp_path / "agentos.db") as store:
            settings = RouterSettings(batch_window_s=0)
            async with Router([handle], StoreCallRecorder(store), settings=settings) as router:
                yield Runtime(tmp_path, engine, router, store, io.StringIO())
        await client.aclose()


def messages(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [
        (e["payload"]["turn"], e["payload"]["member"], e["payload"]["text"])
        for e in events
        if e["type"] == "message"
    ]


def terminated(events: list[dict[str, Any]]) -> dict[str, Any]:
    (event,) = [e["payload"] for e in events if e["type"] == "terminated"]
    return event


def requests_of(events: list[dict[str, Any]], member: str) -> list[str]:
    """The text of each request ``member`` made, all messages joined."""
    return [
        "\n".join(m["content"] for m in e["payload"]["messages"])
        for e in events
        if e["type"] == "request" and e["payload"]["member"] == member
    ]


WRITER_CRITIC = """
agents:
  - name: team
    kind: team
    prompt: {task}
    members: [writer, critic]
    termination: {termination}
  - name: writer
    system: You write slogans.
    prompt: "Write or improve the slogan. ANSWER: {writer}"
  - name: critic
    system: You review slogans.
    prompt: "Review the last slogan. ANSWER: {critic}"
"""


def two_members(
    *,
    termination: str,
    writer: str = "Fresh bread daily",
    critic: str = "Needs more warmth",
    task: str = "Write a slogan for a bakery.",
) -> str:
    return WRITER_CRITIC.format(task=task, termination=termination, writer=writer, critic=critic)


async def test_members_take_turns_until_max_turns_and_every_message_is_recorded(
    runtime: Runtime,
) -> None:
    outcome, events = await runtime.run(two_members(termination="{max_turns: 3}"))

    assert (outcome.status, outcome.terminated, outcome.attempts) == ("succeeded", "max_turns", 3)
    assert messages(events) == [
        (1, "writer", "Fresh bread daily"),
        (2, "critic", "Needs more warmth"),
        (3, "writer", "Fresh bread daily"),
    ]
    assert terminated(events)["reason"] == "max_turns"
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-2:] == ["terminated", "run_finished"]
    assert all(e["payload"]["tokens"] > 0 for e in events if e["type"] == "message")
    (result,) = queries.run_results(runtime.store, outcome.run_id)
    assert result["data"]["text"] == "Fresh bread daily"
    assert (result["data"]["member"], result["data"]["turn"]) == ("writer", 3)
    assert result["data"]["terminated"] == "max_turns"
    run = queries.get_run(runtime.store, outcome.run_id)
    assert run is not None and (run["status"], run["attempts"]) == ("succeeded", 3)


async def test_each_member_sees_the_conversation_from_its_own_point_of_view(
    runtime: Runtime,
) -> None:
    _, events = await runtime.run(two_members(termination="{max_turns: 3}"))
    (critic_request,) = [
        e["payload"]["messages"]
        for e in events
        if e["type"] == "request" and e["payload"]["member"] == "critic"
    ]
    writer_requests = [
        e["payload"]["messages"]
        for e in events
        if e["type"] == "request" and e["payload"]["member"] == "writer"
    ]
    assert critic_request[0]["role"] == "system"
    assert critic_request[0]["content"].startswith("You review slogans.")
    assert [m["role"] for m in critic_request] == ["system", "user"]
    assert "writer: Fresh bread daily" in critic_request[1]["content"]
    assert critic_request[1]["content"].startswith("Write a slogan for a bakery.")
    # the writer's own earlier answer comes back as its own (assistant) message
    assert [m["role"] for m in writer_requests[1]] == ["system", "user", "assistant", "user"]
    assert writer_requests[1][2]["content"] == "Fresh bread daily"
    assert writer_requests[1][3]["content"].startswith("critic: Needs more warmth")


async def test_a_mention_from_a_source_ends_the_conversation(runtime: Runtime) -> None:
    results: list[Any] = []
    agents = runtime.load(
        two_members(
            termination="{max_turns: 10, mention: {text: APPROVED, sources: [critic]}}",
            critic="Warm and short. APPROVED",
        )
    )
    outcome = await TeamRun(agents["team"], runtime.context(agents, results)).run()
    runtime.store.flush()
    events = queries.run_events(runtime.store, outcome.run_id)

    assert isinstance(outcome, TeamOutcome)
    assert (outcome.status, outcome.terminated) == ("succeeded", "mention")
    assert [m[1] for m in messages(events)] == ["writer", "critic"]
    assert terminated(events)["detail"] == "critic said 'APPROVED'"
    assert [r["text"] for r in results] == ["Warm and short. APPROVED"]


async def test_a_mention_by_a_member_that_is_not_a_source_does_not_end_it(
    runtime: Runtime,
) -> None:
    outcome, events = await runtime.run(
        two_members(
            termination="{max_turns: 4, mention: {text: APPROVED, sources: [critic]}}",
            writer="APPROVED by me",
        )
    )
    assert outcome.terminated == "max_turns"
    assert len(messages(events)) == 4
    assert messages(events)[0][2] == "APPROVED by me"


async def test_a_team_that_never_hears_its_mention_fails_and_says_how_it_ended(
    runtime: Runtime,
) -> None:
    outcome, events = await runtime.run(
        two_members(termination="{max_turns: 4, mention: {text: APPROVED, sources: [critic]}}")
    )

    assert (outcome.status, outcome.terminated, outcome.successes) == ("failed", "max_turns", 0)
    assert outcome.error == (
        "ended by max_turns (4 turns) without critic saying 'APPROVED'; "
        "the last message was turn 4 (critic)"
    )
    assert (terminated(events)["reason"], terminated(events)["reached"]) == ("max_turns", False)
    assert events[-1]["payload"]["terminated"] == "max_turns"
    assert queries.run_results(runtime.store, outcome.run_id) == []
    run = queries.get_run(runtime.store, outcome.run_id)
    assert run is not None and (run["status"], run["error"]) == ("failed", outcome.error)
    assert f"run {outcome.run_id} failed: team 0/1 in 4 attempts: ended by max_turns" in (
        runtime.log.getvalue()
    )


async def test_a_team_without_a_mention_ends_by_its_limit_and_says_so(runtime: Runtime) -> None:
    outcome, _ = await runtime.run(two_members(termination="{max_turns: 2}"))

    assert (outcome.status, outcome.terminated) == ("succeeded", "max_turns")
    assert "team: ended by max_turns (2 turns)" in runtime.log.getvalue()


async def test_empty_sources_means_any_member(runtime: Runtime) -> None:
    outcome, events = await runtime.run(
        two_members(termination="{max_turns: 4, mention: {text: APPROVED}}", writer="APPROVED")
    )
    assert (outcome.terminated, len(messages(events))) == ("mention", 1)


async def test_the_task_containing_the_mention_text_never_ends_it(runtime: Runtime) -> None:
    outcome, events = await runtime.run(
        two_members(
            task="Write a slogan. The critic says DONE when it is good.",
            termination="{max_turns: 3, mention: {text: DONE}}",
        )
    )
    assert outcome.terminated == "max_turns"
    assert len(messages(events)) == 3


async def test_a_member_quoting_the_task_does_not_end_it_but_saying_it_does(
    runtime: Runtime,
) -> None:
    outcome, events = await runtime.run(
        two_members(
            task="Write a slogan. The critic says DONE when it is good.",
            termination="{max_turns: 6, mention: {text: DONE}}",
            writer="I know the critic says DONE when it is good",
            critic="Lovely. DONE",
        )
    )
    assert outcome.terminated == "mention"
    assert [m[1] for m in messages(events)] == ["writer", "critic"]


def test_mentions_tells_a_quote_of_the_task_from_saying_it() -> None:
    task = "Review the draft. Reply APPROVED when it is ready."
    assert mentions("APPROVED", "APPROVED", task)
    assert mentions("Ready to ship. APPROVED!", "APPROVED", task)
    assert not mentions("You asked me to reply APPROVED when it is ready.", "APPROVED", task)
    assert not mentions("reply approved", "APPROVED", task)  # case-sensitive
    assert mentions("reply APPROVED when ready. Also: APPROVED", "APPROVED", task)
    assert not mentions("Not yet.", "APPROVED", task)


async def test_the_token_budget_ends_it(runtime: Runtime) -> None:
    outcome, events = await runtime.run(
        two_members(termination="{max_turns: 50, token_budget: 120}")
    )
    said = [e["payload"]["tokens"] for e in events if e["type"] == "message"]
    assert outcome.terminated == "token_budget"
    assert 1 < len(said) < 50
    assert sum(said[:-1]) < 120 <= sum(said) == terminated(events)["tokens"]


async def test_the_timeout_ends_it_mid_call(runtime: Runtime) -> None:
    runtime.engine.cost = CostModel(per_request_ms=100)
    started = time.monotonic()
    outcome, events = await runtime.run(two_members(termination="{max_turns: 50, timeout: 0.5s}"))
    assert time.monotonic() - started < 3  # 50 turns would take 5 s
    assert (outcome.status, outcome.terminated) == ("succeeded", "timeout")
    assert 1 <= len(messages(events)) <= 5
    assert terminated(events)["reason"] == "timeout"
    (result,) = queries.run_results(runtime.store, outcome.run_id)
    assert result["data"]["turn"] == len(messages(events))


async def test_a_timeout_before_anyone_spoke_fails_the_run(runtime: Runtime) -> None:
    runtime.engine.cost = CostModel(per_request_ms=500)
    outcome, events = await runtime.run(two_members(termination="{timeout: 0.1s}"))
    assert (outcome.status, outcome.terminated) == ("failed", "timeout")
    assert outcome.error is not None and "before any member spoke" in outcome.error
    assert messages(events) == []
    assert queries.run_results(runtime.store, outcome.run_id) == []


MEMORY_TEAM = """
agents:
  - name: team
    kind: team
    prompt: Plan a picnic.
    members: [planner, helper]
    termination: {max_turns: 2}
  - name: planner
    prompt: >-
      Decide where.
      ANSWER: {"reply": "Let us go to the lake", "memory": {"place": "the lake"}}
    response_format:
      reply: your message
      memory: {place: where the picnic is}
  - name: helper
    prompt: "Say what to bring. ANSWER: Sandwiches"
"""


async def test_memory_written_by_one_member_is_seen_by_the_next_and_kept(
    runtime: Runtime,
) -> None:
    outcome, events = await runtime.run(MEMORY_TEAM)

    assert messages(events) == [
        (1, "planner", "Let us go to the lake"),
        (2, "helper", "Sandwiches"),
    ]
    (write,) = [e["payload"] for e in events if e["type"] == "memory"]
    assert (write["member"], write["memory"]) == ("planner", {"place": "the lake"})
    (planner_request,) = requests_of(events, "planner")
    (helper_request,) = requests_of(events, "helper")
    assert "Team memory: (empty)" in planner_request
    assert "Team memory:\n- place: the lake" in helper_request
    rows = list(runtime.store.db.query("select agent, key, value from agent_state"))
    assert rows == [{"agent": "team", "key": "place", "value": '"the lake"'}]
    (result,) = queries.run_results(runtime.store, outcome.run_id)
    assert result["data"]["memory"] == {"place": "the lake"}

    # the next run of the team starts from what the last one remembered
    second, events = await runtime.run(MEMORY_TEAM)
    assert second.status == "succeeded"
    (planner_request,) = requests_of(events, "planner")
    assert "Team memory:\n- place: the lake" in planner_request


FORGETTING_TEAM = """
agents:
  - name: team
    kind: team
    prompt: Plan a picnic.
    members: [planner, helper]
    termination: {max_turns: 2}
  - name: planner
    prompt: 'Change plans. ANSWER: {"reply": "Not the lake", "memory": {"place": null}}'
    response_format:
      type: object
      properties:
        reply: {type: string}
        memory: {type: object, additionalProperties: {type: [string, "null"]}}
      required: [reply, memory]
  - name: helper
    prompt: "Say what to bring. ANSWER: Sandwiches"
"""


async def test_a_null_in_a_memory_write_removes_the_key(runtime: Runtime) -> None:
    await runtime.run(MEMORY_TEAM)
    outcome, events = await runtime.run(FORGETTING_TEAM)

    (write,) = [e["payload"] for e in events if e["type"] == "memory"]
    assert (write["updates"], write["memory"]) == ({"place": None}, {})
    (helper_request,) = requests_of(events, "helper")
    assert "Team memory" not in helper_request
    assert list(runtime.store.db.query("select * from agent_state")) == []
    (result,) = queries.run_results(runtime.store, outcome.run_id)
    assert result["data"]["memory"] == {}


async def test_a_failing_engine_fails_the_run_naming_the_turn(runtime: Runtime) -> None:
    outcome, events = await runtime.run(
        two_members(termination="{max_turns: 3}").replace(
            "    system: You review slogans.", "    system: You review slogans.\n    engine: nope"
        )
    )
    assert (outcome.status, outcome.terminated) == ("failed", None)
    assert outcome.error is not None and outcome.error.startswith("turn 2 (critic): ")
    assert [m[1] for m in messages(events)] == ["writer"]


async def test_an_answer_that_does_not_parse_is_asked_again_then_said_as_written(
    runtime: Runtime,
) -> None:
    agents = runtime.load(
        MEMORY_TEAM.replace(
            """ANSWER: {"reply": "Let us go to the lake", "memory": {"place": "the lake"}}""",
            "ANSWER: the lake, I think",
        )
    )
    run = TeamRun(agents["team"], runtime.context(agents))
    outcome = await run.run()
    runtime.store.flush()
    events = queries.run_events(runtime.store, outcome.run_id)

    errors = [e["payload"] for e in events if e["type"] == "parse_error"]
    assert [(e["member"], e["attempt"], e["turn"]) for e in errors] == [
        ("planner", 1, 0),
        ("planner", 1, 1),
    ]
    answers = [e["payload"] for e in events if e["type"] == "answer"]
    assert [(a["member"], a["attempt"], a["turn"]) for a in answers] == [
        ("planner", 1, 0),
        ("planner", 1, 1),
        ("helper", 2, 0),
    ]
    first = next(e["payload"] for e in events if e["type"] == "message")
    assert (first["text"], first["data"]) == (answers[1]["text"], None)
    assert first["tokens"] == answers[0]["tokens"] + answers[1]["tokens"]
    assert (outcome.status, outcome.attempts, run.failed_attempts) == ("succeeded", 2, 1)
    assert not [e for e in events if e["type"] == "memory"]


async def test_cancel_ends_the_run_as_cancelled(runtime: Runtime) -> None:
    runtime.engine.cost = CostModel(per_request_ms=100)
    agents = runtime.load(two_members(termination="{max_turns: 50}"))
    run = TeamRun(agents["team"], runtime.context(agents))
    task = asyncio.create_task(run.run())
    while run.attempts < 1:
        await asyncio.sleep(0.02)
    run.cancel("stopped by the test")
    outcome = await asyncio.wait_for(task, 5)
    assert (outcome.status, outcome.error) == ("cancelled", "stopped by the test")
    assert 1 <= outcome.attempts < 50


BAD_TEAMS = [
    ("members: [writer, ghost]", 5, "team 'team': member 'ghost' is not an agent of this file"),
    ("members: [writer, team]", 5, "team 'team' cannot be a member of itself"),
    (
        "members: [writer]\n    termination: {mention: {text: OK, sources: [critic]}}",
        6,
        "team 'team': mention source 'critic' is not a member",
    ),
    ("members: [writer]\n    termination: {timeout: soon}", 6, "team 'team': 'soon' is not a"),
    ("members: [worker]", 5, "team 'team': member 'worker' is a task agent"),
]


@pytest.mark.parametrize(("members", "line", "message"), BAD_TEAMS)
async def test_a_bad_team_is_a_spec_error_before_anything_runs(
    runtime: Runtime, members: str, line: int, message: str
) -> None:
    agents = runtime.load(
        "agents:\n"
        "  - name: team\n"
        "    kind: team\n"
        "    prompt: Do it.\n"
        f"    {members}\n"
        "  - name: writer\n"
        "    prompt: Write.\n"
        "  - name: worker\n"
        "    kind: task\n"
        "    run: json:dumps\n"
    )
    with pytest.raises(SpecError, match=f"agents.yaml:{line}, ") as raised:
        check_team_members(agents)
    assert message in str(raised.value)
    with pytest.raises(SpecError):
        make_run(agents["team"], runtime.context(agents))
    assert queries.list_runs(runtime.store) == []


def test_a_team_without_its_agents_file_is_a_spec_error(runtime: Runtime) -> None:
    team = AgentSpec(name="team", kind="team", prompt="Do it.", members=["writer"])
    context = RunContext(router=runtime.router, store=runtime.store, display=PlainDisplay())
    with pytest.raises(SpecError, match="team 'team' needs the agents file"):
        TeamRun(team, context)


@pytest.mark.model
async def test_the_example_team_talks_on_the_bundled_model(tmp_path: Path) -> None:
    agents = load_agents(EXAMPLE)
    check_team_members(agents)
    log = io.StringIO()
    async with open_engines(Config(), log_dir=tmp_path) as engines:
        with Store(tmp_path / "agentos.db") as store:
            async with Router(engines, StoreCallRecorder(store)) as router:
                context = RunContext(
                    router=router,
                    store=store,
                    display=PlainDisplay(log),
                    agents_file=str(EXAMPLE),
                    agents=agents,
                )
                outcome = await make_run(agents["slogan-team"], context).run()
                store.flush()
                events = queries.run_events(store, outcome.run_id)
                results = queries.run_results(store, outcome.run_id)

    assert isinstance(outcome, TeamOutcome)
    assert outcome.terminated in ("mention", "token_budget", "max_turns", "timeout")
    # the example has a mention: any other end is the goal not reached, a failed run
    assert outcome.status == ("succeeded" if outcome.terminated == "mention" else "failed")
    said = messages(events)
    assert 1 <= len(said) <= 6
    turn_order = [("writer", "critic")[i % 2] for i in range(len(said))]
    assert [member for _, member, _ in said] == turn_order
    assert all(text.strip() for _, _, text in said)
    if outcome.status == "succeeded":
        [result] = results
        assert (result["data"]["turn"], result["data"]["text"]) == (said[-1][0], said[-1][2])
    else:
        assert results == [] and "without" in (outcome.error or "")
    assert "slogan-team [1] writer: " in log.getvalue()
