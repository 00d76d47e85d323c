"""``agentos dataset export``: real runs of prompt agents on the loopback engine (one
agent's first answers fail to parse and are re-asked), exported by the CLI as a user
runs it, and read back as the JSONL OpenAI fine-tuning takes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.testing.engine import LoopbackEngine
from tests.cli_process import run_agentos
from tests.test_cli import write_config

AGENTS = """\
agents:
  - name: city
    system: You answer with JSON only.
    prompt: "Name a city in {{ country }}. ANSWER: no idea, sorry"
    vars: {country: France}
    response_format: {city: the city}
    life_cycle: {type: single-shot, length: 2, concurrency: 1}
  - name: river
    prompt: "Name a river in {{ country }}."
    vars: {country: Spain}
    response_format: {river: the river}
    life_cycle: {type: single-shot, length: 2, concurrency: 1}
"""
CITY_PROMPT = "Name a city in France. ANSWER: no idea, sorry"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder whose runs.db holds two runs of each agent (the second from the cache)."""
    folder = tmp_path_factory.mktemp("dataset")
    with LoopbackEngine().run_in_thread() as engine:
        (folder / "agents.yaml").write_text(AGENTS)
        config = write_config(folder, engine.url, structured_output=True)
        config.write_text(config.read_text() + "embeddings:\n  enabled: false\n")
        for _ in range(2):
            done = run_agentos("run", "--db", "runs.db", cwd=folder)
            assert done.returncode == 0, done.stdout + done.stderr
    yield folder


def export(folder: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    done = run_agentos("dataset", "export", "--db", "runs.db", *args, cwd=folder)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def check_chat_line(line: dict[str, Any]) -> None:
    """The shape of an OpenAI chat fine-tuning line."""
    assert set(line) == {"messages"}
    roles = [m["role"] for m in line["messages"]]
    assert roles[-1] == "assistant" and "user" in roles
    assert set(roles) <= {"system", "user", "assistant", "tool"}
    assert all(isinstance(m["content"], str) and m["content"] for m in line["messages"])


def runs_of(folder: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(folder / "runs.db")
    try:
        rows = conn.execute("SELECT agent, id FROM runs ORDER BY started_at").fetchall()
    finally:
        conn.close()
    found: dict[str, list[str]] = {}
    for agent, run_id in rows:
        found.setdefault(agent, []).append(run_id)
    return found


def test_every_accepted_answer_once_as_a_chat_example(recorded: Path) -> None:
    lines, stderr = export(recorded)
    for line in lines:
        check_chat_line(line)
    # 2 agents x 2 accepted answers; the cached second runs repeat them exactly
    assert len(lines) == 4
    assert "wrote 4 examples from 2 runs (4 duplicates left out)" in stderr
    city = [line["messages"] for line in lines if line["messages"][0]["role"] == "system"]
    assert len(city) == 2
    for messages in city:
        # the re-ask detour (the rejected answer, the feedback) is not in the example
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == "You answer with JSON only."
        assert messages[1]["content"].startswith(CITY_PROMPT)
        assert "Answer with only a JSON object" in messages[1]["content"]
        assert set(json.loads(messages[2]["content"])) == {"city"}
    assert len({m[2]["content"] for m in city}) == 2


def test_the_accepted_answers_are_the_recorded_results(recorded: Path) -> None:
    lines, _ = export(recorded)
    conn = sqlite3.connect(recorded / "runs.db")
    try:
        results = {row[0] for row in conn.execute("SELECT data FROM results")}
    finally:
        conn.close()
    answers = {line["messages"][-1]["content"] for line in lines}
    assert {json.dumps(json.loads(r)) for r in results} == answers


def test_filters_agent_run_since_and_first_try(recorded: Path) -> None:
    runs = runs_of(recorded)
    river, _ = export(recorded, "--agent", "river")
    assert len(river) == 2 and all("river" in line["messages"][-1]["content"] for line in river)
    both, _ = export(recorded, "--agent", "river", "--agent", "city")
    assert len(both) == 4
    one_run, stderr = export(recorded, "--run", runs["city"][1])
    assert len(one_run) == 2 and "from 1 runs (0 duplicates" in stderr
    first_try, _ = export(recorded, "--first-try")
    assert {line["messages"][-1]["content"] for line in first_try} == {
        line["messages"][-1]["content"] for line in river
    }, "city's answers were all accepted after a re-ask"
    future, stderr = export(recorded, "--since", "2999-01-01")
    assert future == [] and "wrote 0 examples" in stderr
    past, _ = export(recorded, "--since", "1d")
    assert len(past) == 4


def test_pairs_put_each_rejected_answer_against_an_accepted_one(recorded: Path) -> None:
    pairs, stderr = export(recorded, "--pairs", "--agent", "city")
    assert len(pairs) == 2, stderr
    for pair in pairs:
        assert set(pair) == {"input", "preferred_output", "non_preferred_output"}
        assert [m["role"] for m in pair["input"]["messages"]] == ["system", "user"]
        assert pair["non_preferred_output"] == [{"role": "assistant", "content": "no idea, sorry"}]
        (preferred,) = pair["preferred_output"]
        assert preferred["role"] == "assistant" and "city" in json.loads(preferred["content"])
    river, _ = export(recorded, "--pairs", "--agent", "river")
    assert river == [], "river had no rejected answers"


def test_output_file_and_bad_input(recorded: Path) -> None:
    done = run_agentos(
        "dataset", "export", "--db", "runs.db", "-o", "train.jsonl", "--json", cwd=recorded
    )
    assert done.returncode == 0, done.stderr
    written = (recorded / "train.jsonl").read_text().splitlines()
    assert len(written) == 4 and done.stdout == ""
    assert json.loads(done.stderr) == {"examples": 4, "duplicates": 4, "runs": 2, "rejected": 4}
    missing = run_agentos("dataset", "export", "--db", "runs.db", "--run", "zzzz", cwd=recorded)
    assert missing.returncode == 2 and "--run 'zzzz'" in missing.stderr
    bad_since = run_agentos("dataset", "export", "--db", "runs.db", "--since", "soon", cwd=recorded)
    assert bad_since.returncode == 2 and "--since 'soon'" in bad_since.stderr
    typo = run_agentos("dataset", "export", "--db", "runs.db", "--agent", "rivers", cwd=recorded)
    assert typo.returncode == 2 and "--agent 'rivers': no runs of this agent" in typo.stderr
    assert "(agents with runs: city, river)" in " ".join(typo.stderr.split())
    no_db = run_agentos("dataset", "export", "--db", "absent.db", cwd=recorded)
    assert no_db.returncode == 2 and "no database at" in no_db.stderr


def test_tool_calls_stay_in_the_path_and_re_asks_do_not(tmp_path: Path) -> None:
    """An attempt recorded as a tool-using prompt agent records it: a command answer and its
    result, then an answer that does not parse, the re-ask, and the accepted answer."""
    from agentos.store import RunEvents, Store, create_run, finish_run

    system = {"role": "system", "content": "Use the calculator."}
    user = {"role": "user", "content": "What is 6 x 7?"}
    command = {"role": "assistant", "content": '{"tool": "calculator", "args": "6*7"}'}
    result = {"role": "user", "content": "calculator: 42"}
    bad = {"role": "assistant", "content": "forty-two"}
    reask = {"role": "user", "content": "That was not JSON."}
    with Store(tmp_path / "runs.db") as store:
        run_id = create_run(store, agent="calc", kind="prompt", spec={}, wanted=1, agents_file=None)
        events = RunEvents(store, run_id)
        events.add("run_started", {"json_schema": {"type": "object"}})
        events.add("request", {"attempt": 1, "turn": 0, "messages": [system, user]})
        events.add("answer", {"attempt": 1, "turn": 0, "text": command["content"]})
        events.add(
            "request", {"attempt": 1, "turn": 1, "messages": [system, user, command, result]}
        )
        events.add("answer", {"attempt": 1, "turn": 1, "text": "forty-two"})
        events.add("parse_error", {"attempt": 1, "turn": 1, "error": "no JSON"})
        events.add(
            "request",
            {"attempt": 1, "turn": 2, "messages": [system, user, command, result, bad, reask]},
        )
        events.add("answer", {"attempt": 1, "turn": 2, "text": '{"answer": 42}'})
        events.add("parsed", {"attempt": 1, "turn": 2, "data": {"answer": 42}})
        finish_run(store, run_id, status="succeeded", successes=1, attempts=1)
    (chat,), _ = export(tmp_path)
    accepted = {"role": "assistant", "content": '{"answer": 42}'}
    assert chat == {"messages": [system, user, command, result, accepted]}
    (pair,), _ = export(tmp_path, "--pairs")
    assert pair["input"]["messages"] == [system, user, command, result]
    assert pair["preferred_output"] == [accepted]
    assert pair["non_preferred_output"] == [bad]
    first_try, _ = export(tmp_path, "--first-try")
    assert first_try == []
