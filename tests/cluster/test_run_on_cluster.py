"""``agentos run --cluster`` on a real two-node Ray cluster, as a user runs it: a CLI
subprocess, a loopback engine, a real SQLite file, then ``agentos runs``, ``audit``,
``replay`` and ``export`` on what it recorded.

Selected with ``-m cluster``; skipped where Ray is not installed (``agentos[ray]``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentos.tui.commands import send_command
from tests.cli_process import run_agentos
from tests.cluster.conftest import start_engine, stop_engine

pytestmark = pytest.mark.cluster

TASKS = Path(__file__).with_name("pipeline_tasks.py")

PIPELINE = """
agents:
  - name: emitter
    kind: task
    run: pipeline_tasks:emit
    args: {count: 6}
    output_sink: names
  - name: greeter
    prompt: "Greet {{ name }}. ANSWER: hi {{ name }}"
    input_sink: names
    output_sink: greetings
    life_cycle: {overlap: allow, concurrency: 6}
  - name: cruncher
    kind: task
    run: pipeline_tasks:crunch
    args: {rounds: 600000}
    input_sink: greetings
    resources: {num_cpus: 1}
    life_cycle: {overlap: allow, concurrency: 4}
  - name: sums
    kind: planner
    prompt: 'Calculate. ANSWER: {"steps": [{"tool": "calculator", "expression": "41 * 7 + 13"}]}'
    tools: [calculator]
    temperature: 0
  - name: slogans
    kind: team
    prompt: Write a slogan for a bakery.
    members: [writer, critic]
    termination: {max_turns: 4, mention: {text: APPROVED, sources: [critic]}}
  - name: writer
    prompt: "Write the slogan. ANSWER: Fresh bread daily"
  - name: critic
    prompt: "Review it. ANSWER: APPROVED"
"""


def write_files(folder: Path, agents: str, engine_url: str) -> None:
    (folder / "agents.yaml").write_text(textwrap.dedent(agents))
    (folder / "config.yaml").write_text(
        f"engines:\n  - {{name: loop, type: openai, base_url: '{engine_url}'}}\n"
        "cache: {enabled: false}\n"
        "embeddings: {enabled: false}\n"
    )
    shutil.copy(TASKS, folder / "pipeline_tasks.py")


def rows(db: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)  # never creates it
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def test_every_kind_runs_on_the_cluster_and_the_record_is_whole(
    cluster: Any, engine_url: str, tmp_path: Path
) -> None:
    """A pipeline (task → prompt → CPU-bound task with ``resources``), a planner and a
    team in one ``agentos run --cluster``; the CPU-bound runs hold a CPU each and so
    spread over both nodes; every run is recorded whole in the driver's database."""
    write_files(tmp_path, PIPELINE, engine_url)
    db = tmp_path / "agentos.db"

    done = run_agentos(
        "run", "agents.yaml", "--db", str(db), "--cluster", cluster.address, cwd=tmp_path
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cluster: connected to {cluster.address}" in done.stdout
    # the runs' own lines, made on the nodes, shown by the driver
    assert "slogans [2] critic: APPROVED" in done.stdout
    assert 'sums: step 1 calculator {"expression": "41 * 7 + 13"} → 300' in done.stdout
    runs = rows(db, "SELECT * FROM runs ORDER BY started_at")
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_agent.setdefault(run["agent"], []).append(run)
    counts = {agent: len(found) for agent, found in by_agent.items()}
    assert counts == {"emitter": 1, "greeter": 6, "cruncher": 6, "sums": 1, "slogans": 1}
    assert {r["status"] for r in runs} == {"succeeded"}, [(r["agent"], r["error"]) for r in runs]
    nodes = {cluster.head_node.node_id[:12], cluster.list_all_nodes()[1].node_id[:12]}
    assert {r["node"] for r in runs} <= nodes
    # one CPU each, four at once on 2 + 2 CPUs: the CPU-bound runs used both nodes
    assert {r["node"] for r in by_agent["cruncher"]} == nodes
    # the driver owns every run, wherever it executed
    assert len({(r["pid"], r["owner"]) for r in runs}) == 1

    greetings = rows(db, "SELECT data FROM sink_items WHERE sink = 'greetings'")
    assert sorted(json.loads(g["data"])["value"] for g in greetings) == [
        f"hi name-{i}" for i in range(6)
    ]
    crunched = rows(db, "SELECT data FROM task_results WHERE agent = 'cruncher'")
    assert len(crunched) == 6
    assert len({json.loads(c["data"])["pid"] for c in crunched}) >= 2
    for greeter in by_agent["greeter"]:
        calls = rows(db, "SELECT status FROM llm_calls WHERE run_id = ?", greeter["id"])
        assert calls == [{"status": "ok"}]
        types = [e["type"] for e in rows(db, "SELECT type FROM events WHERE run_id = ? "
                                         "ORDER BY seq", greeter["id"])]  # fmt: skip
        assert types[0] == "run_started" and types[-1] == "run_finished", types
    assert rows(db, "SELECT count(*) AS n FROM tool_calls")[0]["n"] == 1  # the planner's step

    listing = run_agentos("runs", "--db", str(db), "--json", "--limit", "100", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    listed = {r["id"]: r["node"] for r in json.loads(listing.stdout)}
    assert listed == {r["id"]: r["node"] for r in runs}
    audit = run_agentos("audit", "--db", str(db), cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert f"{len(runs)} runs audited: {len(runs)} verified" in audit.stdout
    replay = run_agentos(
        "replay", by_agent["greeter"][0]["id"], "exact", "--db", str(db), cwd=tmp_path
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reproduced" in replay.stdout
    export = run_agentos("export", "--db", str(db), "--table", "runs", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    exported = [json.loads(line) for line in export.stdout.splitlines()]
    assert {e["id"]: e["node"] for e in exported} == {r["id"]: r["node"] for r in runs}


CONTROLLED = """
agents:
  - name: cancelled
    prompt: "Wait. ANSWER: waited"
  - name: paused
    prompt: "Wait twice. ANSWER: waited"
    life_cycle: {length: 2, concurrency: 1}
  - name: interrupted
    prompt: "Wait ten times. ANSWER: waited"
    life_cycle: {length: 10, concurrency: 1}
  - name: spender
    prompt: "Spend. ANSWER: one two three four five"
    life_cycle: {length: 10, concurrency: 1}
    budget: {tokens_per_day: 40}
"""


def start_agentos(folder: Path, db: Path, address: str) -> subprocess.Popen[str]:
    """``agentos run agents.yaml --cluster ADDRESS`` in ``folder``, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "agents.yaml", "--db", str(db),
         "--cluster", address],
        cwd=folder,
        env={**os.environ, "AGENTOS_HOME": str(folder / "home"), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for(
    what: str, process: subprocess.Popen[str], found: Callable[[], Any], timeout: float = 60
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, (what, process.communicate())
        try:
            value = found()
        except sqlite3.OperationalError:  # the database is still being created
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def snapshot(db: Path) -> dict[str, Any]:
    [row] = rows(db, "SELECT data FROM runtime_snapshots")
    data: dict[str, Any] = json.loads(row["data"])
    return data


def test_controls_budgets_and_ctrl_c_reach_runs_on_the_nodes_and_top_sees_the_nodes(
    cluster: Any, tmp_path: Path
) -> None:
    """``top``'s commands (rows of the control table) reach runs executing on the nodes:
    a paused run starts no new attempt until resumed, a cancelled one ends cancelled; on
    Ctrl-C the run still going ends cancelled ("interrupted"); an agent's budget counts
    the answers its run gets on a node and stops it. The runtime's snapshot carries the
    node table, with the runs in flight per node."""
    engine, url = start_engine("--delay-ms", "2500")
    write_files(tmp_path, CONTROLLED, url)
    db = tmp_path / "agentos.db"
    try:
        process = start_agentos(tmp_path, db, cluster.address)
        running = "SELECT agent, id, node FROM runs WHERE status = 'running' AND node IS NOT NULL"
        wait_for("the runs on nodes", process, lambda: len(rows(db, running)) == 4)
        ids = {r["agent"]: r["id"] for r in rows(db, running)}

        def nodes_with_the_runs() -> list[dict[str, Any]] | None:
            if not rows(db, "SELECT 1 FROM runtime_snapshots"):
                return None
            table = snapshot(db).get("nodes") or []
            return table if sum(n["runs"] for n in table) == 4 else None

        nodes = wait_for("the node table with the runs", process, nodes_with_the_runs)
        send_command(db, "pause", "paused")
        send_command(db, "cancel", ids["cancelled"])
        calls = "SELECT count(*) AS n FROM llm_calls WHERE run_id = ?"
        wait_for("the first attempt", process, lambda: rows(db, calls, ids["paused"])[0]["n"])
        time.sleep(3.5)  # longer than an attempt: a second one would have started and ended
        held = rows(db, "SELECT status FROM runs WHERE id = ?", ids["paused"])[0]["status"]
        attempts_while_paused = rows(db, calls, ids["paused"])[0]["n"]
        state = {p["name"]: p.get("state") for p in snapshot(db)["processes"]}["paused"]
        send_command(db, "resume", "paused")
        status = "SELECT 1 FROM runs WHERE agent = 'paused' AND status = 'succeeded'"
        wait_for("the resumed run to end", process, lambda: rows(db, status))
        spent = "SELECT 1 FROM runs WHERE agent = 'spender' AND status != 'running'"
        wait_for("the budget to stop its run", process, lambda: rows(db, spent))
        process.send_signal(signal.SIGINT)  # Ctrl-C while 'interrupted' still goes
        out, err = process.communicate(timeout=60)
    finally:
        stop_engine(engine)

    assert held == "running" and attempts_while_paused == 1 and state == "paused"
    head, worker = (n.node_id[:12] for n in cluster.list_all_nodes()[:2])
    assert {n["node"] for n in nodes} >= {head, worker}
    for node in nodes:
        assert set(node) == {"node", "address", "alive", "cpus", "runs"}
        assert node["alive"] is True and node["cpus"] == 2.0 and node["address"]
    assert process.returncode == 130, out + err
    final = {r["agent"]: r for r in rows(db, "SELECT * FROM runs")}
    assert final["cancelled"]["status"] == "cancelled"
    assert final["cancelled"]["error"] == "cancelled from agentos top"
    assert final["paused"]["status"] == "succeeded" and final["paused"]["attempts"] == 2
    # interrupted, the run on the node ends as a local one does, and says so
    assert final["interrupted"]["status"] == "cancelled"
    assert final["interrupted"]["error"] == "interrupted"
    assert f"run {final['interrupted']['id']} cancelled" in out
    # a budget counts the answers of runs on the nodes: spent (~17 tokens an answer) after
    # the third, it stops the run (answers reach the driver every 0.5 s, so an attempt or
    # two more may start meanwhile on a busy machine; without the budget it makes 10)
    assert final["spender"]["status"] == "cancelled"
    spent = re.match(r"budget spent: (\d+) of 40 tokens", final["spender"]["error"])
    assert spent is not None and 40 <= int(spent[1]) < 60, final["spender"]["error"]
    assert 3 <= final["spender"]["attempts"] <= 6
    spender_events = [
        e["type"] for e in rows(db, "SELECT type FROM events WHERE run_id = ? ORDER BY seq",
                                final["spender"]["id"])
    ]  # fmt: skip
    assert "budget_spent" in spender_events and spender_events[-1] == "run_finished"


SLOW = """
agents:
  - name: emitter
    kind: task
    run: pipeline_tasks:emit
    args: {count: 6}
    output_sink: names
  - name: greeter
    prompt: "Greet {{ name }}. ANSWER: hi {{ name }}"
    input_sink: names
    life_cycle: {overlap: allow, concurrency: 6}
"""


def test_a_node_killed_mid_run_its_runs_end_crashed_and_are_redone_on_another_node(
    cluster: Any, tmp_path: Path
) -> None:
    """Six slow runs spread over three nodes' run hosts; the third node is killed while
    they wait for the engine. Its runs are finished as crashed naming the node, and new
    runs of the same items, linked to them, succeed on the other nodes."""
    engine, url = start_engine("--delay-ms", "3000")
    victim = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    lost = victim.node_id[:12]
    write_files(tmp_path, SLOW, url)
    db = tmp_path / "agentos.db"
    try:
        process = start_agentos(tmp_path, db, cluster.address)
        on_victim = "SELECT id FROM runs WHERE node = ? AND status = 'running'"
        wait_for("a run on the node to kill", process, lambda: rows(db, on_victim, lost))
        cluster.remove_node(victim, allow_graceful=False)
        out, err = process.communicate(timeout=120)
    finally:
        stop_engine(engine)

    assert process.returncode == 0, out + err
    runs = {r["id"]: r for r in rows(db, "SELECT * FROM runs WHERE agent = 'greeter'")}
    crashed = [r for r in runs.values() if r["status"] == "crashed"]
    assert crashed, runs
    for run in crashed:
        assert run["node"] == lost
        assert f"node {lost} died" in run["error"]
        [retry] = [r for r in runs.values() if r["parent_id"] == run["id"]]
        assert retry["forked_from"] == run["id"]
        assert retry["status"] == "succeeded"
        assert retry["node"] != lost
        [first] = rows(db, "SELECT type, payload FROM events WHERE run_id = ? AND seq = 1",
                       retry["id"])  # fmt: skip
        assert first["type"] == "retried_after_node_loss"
        assert json.loads(first["payload"])["lost_run"] == run["id"]
    # every item's work done once, by a run that succeeded; the items all acknowledged
    assert sum(r["status"] == "succeeded" for r in runs.values()) == 6
    deliveries = rows(db, "SELECT status FROM sink_deliveries WHERE consumer = 'greeter'")
    assert [d["status"] for d in deliveries] == ["done"] * 6
    # top's node table (the runtime's last snapshot) shows the node dead
    [gone] = [n for n in snapshot(db)["nodes"] if n["node"] == lost]
    assert gone["alive"] is False and gone["runs"] == 0
    # the lost runs' records are whole too: finished after the last events their node
    # shipped, their anchors cover them
    audit = run_agentos("audit", "--db", str(db), cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    total = len(runs) + 1  # and the emitter's
    assert f"{total} runs audited: {total} verified" in audit.stdout
