"""Runs over HTTP: ``POST /runs``, ``GET /runs/{id}``, ``GET /runs``, ``GET /tools``.

A real ``agentos serve`` subprocess in front of the loopback engine; what the API says is
checked against the SQLite file and against what ``agentos runs`` and ``agentos replay``
(real CLI processes) say about the same runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agentos.serve.run_lanes import MAX_LANES
from agentos.testing.engine import CostModel, LoopbackEngine
from agentos.tui.commands import send_command
from tests.cli_process import run_agentos
from tests.serve.conftest import Served, engine_config
from tests.test_cli import agent_requests

AGENTS = """\
agents:
  - name: capitals
    prompt: 'Capital of {{ country }}? ANSWER: {"capital": "the capital of {{ country }}"}'
    vars: {country: France}
    response_format: {capital: the capital city}
    life_cycle: {type: single-shot, length: 2}
  - name: echo
    prompt: "ANSWER: {{ word }}"
    vars: {word: hello}
  - name: shouter
    prompt: "ANSWER: loud"
    tools: ["loudtools:shout"]
  - name: pro
    prompt: "ANSWER: I am for it"
  - name: con
    prompt: "ANSWER: I am against it"
  - name: reader
    prompt: "Summarise {{ text }}. ANSWER: short"
    input_sink: notes
  - name: daily
    prompt: "Report for {{ fire_time }}. ANSWER: reported"
    life_cycle: {type: scheduled, cron: "0 9 * * *", timezone: UTC}
"""

TOOLS_MODULE = '''\
def shout(text: str) -> str:
    """Say the text in capitals."""
    return text.upper()
'''

INLINE = {
    "name": "haiku",
    "prompt": 'Haiku on {{ topic }}. ANSWER: {"haiku": "leaves fall on {{ topic }}"}',
    "response-format": {"haiku": "the haiku"},
}

KEY = "a-client-key-of-some-length"


def config(engine: LoopbackEngine, **more: Any) -> dict[str, Any]:
    return {"engines": [engine_config(engine)], "embeddings": {"enabled": False}, **more}


def start(
    serve: Callable[..., Served],
    engine: LoopbackEngine,
    tmp: Path,
    settings: dict[str, Any] | None = None,
) -> Served:
    """``agentos serve agents.yaml`` with ``serve: settings`` in its config.yaml."""
    (tmp / "agents.yaml").write_text(AGENTS)
    (tmp / "loudtools.py").write_text(TOOLS_MODULE)
    extra = {"serve": settings} if settings else {}
    return serve(config(engine, **extra), str(tmp / "agents.yaml"))


def wait_done(client: httpx.Client, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        run: dict[str, Any] = answer.json()
        if run["status"] != "running":
            return run
        assert time.monotonic() < deadline, f"run {run_id} still running: {run}"
        time.sleep(0.05)


def db_rows(db: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_runs_of_a_file_agent_and_an_inline_one_are_what_the_database_and_the_cli_say(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        first = client.post("/runs", json={"agent": "capitals", "variables": {"country": "Peru"}})
        assert first.status_code == 202, first.text
        started = first.json()
        assert started["status"] == "running" and started["agent"] == "capitals"
        assert started["url"] == f"/runs/{started['id']}"
        # the row exists when the answer comes
        assert db_rows(served.db, "SELECT agent FROM runs WHERE id = ?", started["id"]) == [
            {"agent": "capitals"}
        ]
        second = client.post("/runs", json={"spec": INLINE, "variables": {"topic": "rain"}})
        assert second.status_code == 202, second.text
        file_run = wait_done(client, started["id"])
        inline_run = wait_done(client, second.json()["id"])

    assert file_run["status"] == "succeeded" and file_run["kind"] == "prompt"
    assert (file_run["wanted"], file_run["successes"]) == (2, 2)
    assert file_run["results"] == [{"capital": "the capital of Peru"}] * 2
    assert file_run["agents_file"] == str((tmp_path / "agents.yaml").resolve())
    assert inline_run["agent"] == "haiku" and inline_run["status"] == "succeeded"
    assert inline_run["results"] == [{"haiku": "leaves fall on rain"}]
    assert inline_run["spec"]["response_format"] == {"haiku": "the haiku"}

    for run in (file_run, inline_run):
        stored = db_rows(served.db, "SELECT * FROM runs WHERE id = ?", run["id"])[0]
        for field in ("status", "wanted", "successes", "attempts", "error", "finished_at"):
            assert run[field] == stored[field], field
        results = db_rows(
            served.db, "SELECT data FROM results WHERE run_id = ? ORDER BY id", run["id"]
        )
        assert run["results"] == [json.loads(r["data"]) for r in results]
        events = db_rows(
            served.db, "SELECT seq, type FROM events WHERE run_id = ? ORDER BY seq", run["id"]
        )
        assert [(e["seq"], e["type"]) for e in run["events"]] == [
            (e["seq"], e["type"]) for e in events
        ]
        assert run["events_total"] == len(events) and run["events_next"] is None
        assert run["events"][0]["type"] == "run_started"
        assert run["events"][-1]["payload"]["status"] == "succeeded"

    # the variables were rendered into what the model was asked
    asked = [e for e in file_run["events"] if e["type"] == "request"]
    assert asked and all(
        "Capital of Peru?" in e["payload"]["messages"][-1]["content"] for e in asked
    )

    listed = run_agentos("runs", "--db", str(served.db), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    by_id = {r["id"]: r for r in json.loads(listed.stdout)}
    for run in (file_run, inline_run):
        assert by_id[run["id"]]["status"] == run["status"]
        assert by_id[run["id"]]["agent"] == run["agent"]
        assert by_id[run["id"]]["answers"] == run["answers"]
    replayed = run_agentos(
        "replay", file_run["id"][:12], "--db", str(served.db), "--json", cwd=tmp_path
    )
    assert replayed.returncode == 0, replayed.stderr
    timeline = json.loads(replayed.stdout)
    assert timeline["run"]["status"] == "succeeded"
    assert [s["parsed"] for s in timeline["steps"]] == file_run["results"]
    assert len(timeline["steps"]) == len(asked)


def test_bad_requests_name_what_is_wrong_and_start_nothing(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)

    def refused(body: Any, status: int, param: str | None, *words: str) -> None:
        answer = client.post("/runs", json=body)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["param"] == param, error
        for word in words:
            assert word in error["message"], error

    with httpx.Client(base_url=served.url, timeout=30) as client:
        bad_length = {**INLINE, "life-cycle": {"length": 0}}
        refused({"spec": bad_length}, 400, "spec.life-cycle.length", "greater than or equal to 1")
        refused({"spec": {"name": "x"}}, 400, "spec.prompt", "missing required key 'prompt'")
        refused({"spec": {**INLINE, "colour": 1}}, 400, "spec.colour", "unknown key 'colour'")
        refused(
            {"spec": INLINE}, 400, "spec.prompt", "'topic' has no value: give it in 'variables'"
        )
        refused({"agent": "reader"}, 400, "variables", "'text' has no value", "'variables'")
        refused({"agent": "nobody"}, 404, "agent", "no agent named 'nobody'", "capitals")
        refused({"agent": "echo", "spec": INLINE}, 400, None, "either 'agent'")
        refused({"agent": "echo", "vars": {}}, 400, "vars", "unknown key 'vars'")
        refused({"agent": "echo", "variables": []}, 400, "variables", "dictionary")
        task = {"name": "t", "kind": "task", "run": "os:system"}
        refused({"spec": task}, 400, "spec.kind", "cannot be a task agent")
        user_tool = {"name": "t", "prompt": "hi", "tools": ["os:getcwd"]}
        refused({"spec": user_tool}, 400, "spec.tools[0]", "built-in tools only")
        refused(
            {"spec": {"name": "t", "prompt": "hi", "tools": ["hammer"]}},
            400,
            "spec.tools[0]",
            "unknown tool 'hammer'",
        )
        team = {"name": "t", "kind": "team", "prompt": "hi", "members": ["echo", "ghost"]}
        refused({"spec": team}, 400, "spec.members[1]", "member 'ghost' is not an agent")
        refused(
            {"spec": {"name": "t", "prompt": "hi", "model": "gpt-9"}},
            400,
            "spec.model",
            "no engine serves model 'gpt-9'",
        )
        refused(
            {"spec": {"name": "t", "prompt": "hi", "engine": "gone"}},
            400,
            "spec.engine",
            "unknown engine 'gone'",
        )
        not_json = client.post(
            "/runs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and "not valid JSON" in not_json.text
        huge = client.post("/runs", json={"agent": "echo", "variables": {"x": "y" * 2**20}})
        assert huge.status_code == 413 and "at most 1048576" in huge.json()["error"]["message"]
        deep: Any = "bottom"
        for _ in range(100):
            deep = {"d": deep}
        nested = client.post("/runs", json={"agent": "echo", "variables": {"x": deep}})
        assert nested.status_code == 400 and "more than 64 deep" in nested.text

        missing = client.get("/runs/ffffffffff")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
        bad_page = client.get("/runs/x", params={"events": 5000})
        assert bad_page.status_code == 400 and bad_page.json()["error"]["param"] == "events"
        bad_status = client.get("/runs", params={"status": "done"})
        assert bad_status.status_code == 400 and bad_status.json()["error"]["param"] == "status"
        assert client.get("/runs").json()["data"] == []
    assert db_rows(served.db, "SELECT count(*) AS n FROM runs") == [{"n": 0}]


def test_runs_list_and_filter_and_a_long_timeline_comes_in_pages(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        ids = [
            client.post("/runs", json={"agent": "echo", "variables": {"word": w}}).json()["id"]
            for w in ("one", "two")
        ]
        ids.append(client.post("/runs", json={"agent": "capitals"}).json()["id"])
        failing = {
            "name": "never",
            "prompt": "hi",
            "response_format": {"x": "an x"},
            "life_cycle": {"max_attempts": 2},
        }
        ids.append(client.post("/runs", json={"spec": failing}).json()["id"])
        runs = {run_id: wait_done(client, run_id) for run_id in ids}
        assert [runs[i]["results"] for i in ids[:2]] == [["one"], ["two"]]
        assert runs[ids[3]]["status"] == "failed" and "attempt cap" in runs[ids[3]]["error"]

        everything = client.get("/runs").json()["data"]
        assert [r["id"] for r in everything] == ids[::-1], "newest first"
        echo = client.get("/runs", params={"agent": "echo"}).json()["data"]
        assert sorted(r["id"] for r in echo) == sorted(ids[:2])
        failed = client.get("/runs", params={"status": "failed"}).json()["data"]
        assert [r["id"] for r in failed] == [ids[3]]
        assert len(client.get("/runs", params={"limit": 1}).json()["data"]) == 1

        # the prefix `agentos runs` shows is taken back
        prefix = next(r["prefix"] for r in everything if r["id"] == ids[2])
        assert client.get(f"/runs/{prefix}").json()["id"] == ids[2]
        table = run_agentos("runs", "--db", str(served.db), cwd=tmp_path).stdout
        assert prefix in table

        # a run with many events, read two at a time, is the database's event list
        whole = runs[ids[3]]
        pages: list[dict[str, Any]] = []
        after = 0
        while True:
            page = client.get(f"/runs/{ids[3]}", params={"events": 2, "after": after}).json()
            assert len(page["events"]) <= 2
            pages += page["events"]
            if page["events_next"] is None:
                break
            after = page["events_next"]
        assert len(pages) == whole["events_total"] > 4
        assert pages == whole["events"]
        stored = db_rows(served.db, "SELECT seq FROM events WHERE run_id = ? ORDER BY seq", ids[3])
        assert [e["seq"] for e in pages] == [r["seq"] for r in stored]
        assert client.get(f"/runs/{ids[3]}", params={"events": 0}).json()["events"] == []


def test_tools_lists_the_built_ins_and_the_user_tools_of_the_agents_file(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    tools = {t["name"]: t for t in httpx.get(served.url + "/tools").json()["data"]}
    assert {"calculator", "todo_add", "file_writer", "http_get", "memory_search"} <= set(tools)
    assert tools["calculator"]["side_effects"] is False
    assert tools["todo_add"]["side_effects"] is True
    assert tools["calculator"]["parameters"]["type"] == "object"
    shout = tools["shout"]
    assert shout["source"] == "loudtools:shout" and shout["agents"] == ["shouter"]
    assert shout["description"] == "Say the text in capitals."
    assert shout["parameters"]["properties"]["text"]["type"] == "string"


def test_with_client_keys_every_runs_route_needs_one(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(
        serve, engine, tmp_path, {"keys": [{"name": "ci", "key": KEY, "priority": "user"}]}
    )
    with httpx.Client(base_url=served.url, timeout=30) as anonymous:
        for method, path in [
            ("POST", "/runs"),
            ("GET", "/runs"),
            ("GET", "/runs/x"),
            ("GET", "/tools"),
        ]:
            answer = anonymous.request(method, path, json={"agent": "echo"})
            assert answer.status_code == 401, (path, answer.text)
            assert answer.json()["error"]["code"] == "invalid_api_key"
        wrong = anonymous.post(
            "/runs", json={"agent": "echo"}, headers={"Authorization": "Bearer not-the-key-at-all"}
        )
        assert wrong.status_code == 401
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
    assert db_rows(served.db, "SELECT count(*) AS n FROM runs") == [{"n": 0}]
    with httpx.Client(
        base_url=served.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        started = client.post("/runs", json={"agent": "echo"})
        assert started.status_code == 202, started.text
        assert wait_done(client, started.json()["id"])["results"] == ["hello"]
        assert client.get("/tools").status_code == 200
        # the key's priority (user) is a ceiling for the runs it starts
        above = client.post(
            "/runs", json={"spec": {**INLINE, "priority": "kernel"}, "variables": {"topic": "x"}}
        )
        assert above.status_code == 403, above.text
        assert above.json()["error"]["param"] == "spec.priority"
        assert "client[ci] may start runs at priority user or lower" in above.text
        below = {"spec": {**INLINE, "priority": "background"}, "variables": {"topic": "x"}}
        assert client.post("/runs", json=below).status_code == 202
    assert db_rows(served.db, "SELECT agent FROM runs ORDER BY started_at") == [
        {"agent": "echo"},
        {"agent": "haiku"},
    ]


def test_an_inline_team_speaks_with_members_of_the_agents_file(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    team = {
        "name": "debate",
        "kind": "team",
        "prompt": "Debate {{ motion }}",
        "members": ["pro", "con"],
        "termination": {"max-turns": 3},
    }
    with httpx.Client(base_url=served.url, timeout=30) as client:
        answer = client.post("/runs", json={"spec": team, "variables": {"motion": "tea"}})
        assert answer.status_code == 202, answer.text
        run = wait_done(client, answer.json()["id"])
    assert run["kind"] == "team" and run["status"] == "succeeded", run["error"]
    said = [
        (e["payload"]["member"], e["payload"]["text"])
        for e in run["events"]
        if e["type"] == "message"
    ]
    assert said == [("pro", "I am for it"), ("con", "I am against it"), ("pro", "I am for it")]
    (result,) = run["results"]
    assert (result["member"], result["terminated"]) == ("pro", "max_turns")
    assert run["events"][0]["payload"]["task"] == "Debate tea"


def test_starts_of_one_agent_at_once_get_their_own_runs_and_a_name_keeps_one_spec_at_a_time(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    engine.cost = CostModel(slots=8, per_request_ms=1_500)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda w: client.post(
                        "/runs", json={"agent": "echo", "variables": {"word": w}}
                    ),
                    ["a", "b", "c", "d"],
                )
            )
        assert [a.status_code for a in answers] == [202] * 4
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == 4
        # an inline agent named like one with runs going, but another spec: refused
        other = {"name": "echo", "prompt": "ANSWER: replaced"}
        busy = client.post("/runs", json={"spec": other})
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["param"] == "spec.name"
        assert "another name" in busy.json()["error"]["message"]
        runs = [wait_done(client, run_id) for run_id in ids]
        assert [r["results"] for r in runs] == [["a"], ["b"], ["c"], ["d"]]
        # once they are done, the name takes the new spec
        engine.cost = CostModel(slots=8)
        again = client.post("/runs", json={"spec": other})
        assert again.status_code == 202, again.text
        assert wait_done(client, again.json()["id"])["results"] == ["replaced"]
    assert db_rows(served.db, "SELECT count(*) AS n FROM runs WHERE agent = 'echo'") == [{"n": 5}]


def test_a_scheduled_agent_run_over_http_is_for_now_and_top_keeps_a_bounded_set_of_agents(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        before = time.time()
        daily = wait_done(client, client.post("/runs", json={"agent": "daily"}).json()["id"])
        assert daily["status"] == "succeeded" and daily["results"] == ["reported"]
        fire_time = daily["events"][0]["payload"]["variables"]["fire_time"]
        assert abs(datetime.fromisoformat(fire_time).timestamp() - before) < 5
        given = {"agent": "daily", "variables": {"fire_time": "2026-01-01T09:00:00+00:00"}}
        run = wait_done(client, client.post("/runs", json=given).json()["id"])
        asked = next(e for e in run["events"] if e["type"] == "request")
        assert "Report for 2026-01-01T09:00:00+00:00." in json.dumps(asked["payload"])

        # inline agents' names come from clients: top keeps at most MAX_LANES of them
        for index in range(MAX_LANES + 4):
            spec = {"name": f"n{index}", "prompt": "ANSWER: ok", "temperature": 0}
            assert client.post("/runs", json={"spec": spec}).status_code == 202

        def agents_in_top() -> list[str]:
            rows = db_rows(served.db, "SELECT data FROM runtime_snapshots")
            processes = json.loads(rows[0]["data"])["processes"]
            return [p["name"] for p in processes if p.get("kind") == "agent"]

        wait_for(lambda: f"n{MAX_LANES + 3}" in agents_in_top())
        shown = agents_in_top()
        assert len(shown) == MAX_LANES
        # the least recently started went first; daily was started before every n
        assert "daily" not in shown and "n0" not in shown
        last = wait_done(client, client.get("/runs", params={"limit": 1}).json()["data"][0]["id"])
        assert last["agent"] == f"n{MAX_LANES + 3}" and last["status"] == "succeeded"
    n_runs = db_rows(served.db, "SELECT count(*) AS n FROM runs WHERE agent LIKE 'n%'")
    assert n_runs == [{"n": MAX_LANES + 4}]


def snapshot_state(db: Path, agent: str) -> str | None:
    rows = db_rows(db, "SELECT data FROM runtime_snapshots ORDER BY updated_at DESC LIMIT 1")
    if not rows:
        return None
    processes = json.loads(rows[0]["data"]).get("processes") or []
    return next((p.get("state") for p in processes if p.get("name") == agent), None)


def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_over_http_shows_in_top_and_is_paused_and_cancelled_from_it(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    engine.cost = CostModel(slots=8, per_request_ms=400)
    slow = {
        "name": "slow",
        "prompt": "hi",
        "response_format": {"x": "an x"},
        "life_cycle": {"length": 50, "concurrency": 1},
    }
    with httpx.Client(base_url=served.url, timeout=30) as client:
        run_id = client.post("/runs", json={"spec": slow}).json()["id"]
        wait_for(lambda: snapshot_state(served.db, "slow") == "running")
        send_command(served.db, "pause", "slow")
        wait_for(lambda: snapshot_state(served.db, "slow") == "paused")
        send_command(served.db, "cancel", run_id)
        run = wait_done(client, run_id)
    assert run["status"] == "cancelled"
    assert run["error"] == "cancelled from agentos top"
    assert run["events"][-1]["payload"]["status"] == "cancelled"


def test_a_run_still_going_at_sigterm_ends_cancelled_with_the_reason(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path, {"shutdown_s": 1})
    engine.cost = CostModel(slots=8, per_request_ms=8_000)  # read on every request
    run_id = httpx.post(served.url + "/runs", json={"agent": "echo"}, timeout=30).json()["id"]
    wait_for(lambda: agent_requests(engine) > 0)
    stopped_at = time.time()
    assert served.stop() == 0, served.output()
    (row,) = db_rows(served.db, "SELECT status, error, finished_at FROM runs WHERE id = ?", run_id)
    assert row["status"] == "cancelled", served.output()
    assert "agentos serve stopped" in row["error"] and "1 s had passed" in row["error"]
    # cancelled when the grace was over, not when the engine's answer came
    assert 1 <= row["finished_at"] - stopped_at < 4
    finished = db_rows(
        served.db,
        "SELECT payload FROM events WHERE run_id = ? AND type = 'run_finished'",
        run_id,
    )
    assert json.loads(finished[0]["payload"])["error"] == row["error"]
    assert "1 request(s) and run(s) in flight" in served.output()


def test_the_openapi_document_describes_the_runs_api(
    serve: Callable[..., Served], engine: LoopbackEngine, tmp_path: Path
) -> None:
    served = start(serve, engine, tmp_path)
    document = httpx.get(served.url + "/openapi.json").json()
    post = document["paths"]["/runs"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"agent", "spec", "variables"}
    assert body["additionalProperties"] is False
    assert "agents file" in body["properties"]["agent"]["description"]
    assert "202" in post["responses"] and "422" not in post["responses"]
    assert {"/runs", "/runs/{run_id}", "/tools"} <= set(document["paths"])
    params = {p["name"] for p in document["paths"]["/runs/{run_id}"]["get"]["parameters"]}
    assert params == {"run_id", "events", "after"}
    assert "/docs" not in document["paths"]
    assert httpx.get(served.url + "/docs").status_code == 200
