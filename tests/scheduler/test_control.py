"""Pause, resume and cancel reach a running runtime through the store's control table."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.runner import run_agents
from agentos.spec import load_agents, load_config
from agentos.testing.engine import CostModel, LoopbackEngine


def send(db: Path, command: str, target: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "insert into control (created_at, command, target, args) values (?, ?, ?, ?)",
            (time.time(), command, target, json.dumps(None)),
        )
    conn.close()


def attempts(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("select count(*) from events where type = 'answer'").fetchone()
        return int(row[0])
    finally:
        conn.close()


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_pause_resume_and_cancel_take_effect(tmp_path: Path) -> None:
    async with LoopbackEngine(cost=CostModel(per_request_ms=30, slots=2)) as engine:
        (tmp_path / "agents.yaml").write_text(
            "agents:\n"
            "  - name: worker\n"
            "    prompt: 'ANSWER: {\"n\": 1}'\n"
            "    response_format: {n: 1}\n"
            "    life_cycle: {type: single-shot, length: 400, concurrency: 2}\n"
            "    cache: false\n"
        )
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
        )
        agents = load_agents(tmp_path / "agents.yaml")
        config = load_config(tmp_path / "config.yaml")
        db = tmp_path / "c.db"
        task = asyncio.create_task(
            run_agents(
                agents.agents,
                config=config,
                db_path=db,
                display=PlainDisplay(io.StringIO()),
            )
        )
        await wait_for(lambda: db.exists() and attempts(db) >= 4)
        send(db, "pause", "worker")
        await asyncio.sleep(1.2)  # picked up within a second; in-flight attempts finish
        paused_at = attempts(db)
        await asyncio.sleep(0.6)
        assert attempts(db) == paused_at, "a paused agent started new attempts"
        conn = sqlite3.connect(db)
        done_by = conn.execute("select done_by from control where command='pause'").fetchone()
        assert done_by[0]
        snapshot = json.loads(conn.execute("select data from runtime_snapshots").fetchone()[0])
        (worker,) = [p for p in snapshot["processes"] if p["name"] == "worker"]
        assert worker["state"] == "paused"

        send(db, "resume", "worker")
        await wait_for(lambda: attempts(db) >= paused_at + 4)

        run_id = conn.execute("select id from runs").fetchone()[0]
        send(db, "cancel", run_id)
        (outcome,) = await asyncio.wait_for(task, 10)
        assert outcome.status == "cancelled"
        status, error = conn.execute("select status, error from runs").fetchone()
        assert (status, error) == ("cancelled", "cancelled from agentos top")
        conn.close()


async def test_commands_for_other_agents_or_older_than_the_runtime_are_left_alone(
    tmp_path: Path,
) -> None:
    async with LoopbackEngine(cost=CostModel(per_request_ms=20, slots=2)) as engine:
        (tmp_path / "agents.yaml").write_text(
            "agents:\n"
            "  - name: worker\n"
            "    prompt: 'ANSWER: {\"n\": 1}'\n"
            "    response_format: {n: 1}\n"
            "    life_cycle: {type: single-shot, length: 20, concurrency: 2}\n"
        )
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
        )
        db = tmp_path / "c.db"
        # a stale pause from before the runtime started
        from agentos.store import Store

        with Store(db):
            pass
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(
                "insert into control (created_at, command, target, args) values (?,?,?,?)",
                (time.time() - 60, "pause", "worker", "null"),
            )
        send(db, "pause", "someone-else")
        (outcome,) = await run_agents(
            load_agents(tmp_path / "agents.yaml").agents,
            config=load_config(tmp_path / "config.yaml"),
            db_path=db,
            display=PlainDisplay(io.StringIO()),
        )
        assert outcome.status == "succeeded"
        assert (
            conn.execute("select count(*) from control where done_at is not null").fetchone()[0]
            == 0
        )
        conn.close()


def worker_snapshot(db: Path) -> dict[str, Any] | None:
    """The ``worker`` process of the runtime's latest snapshot, once there is one."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("select data from runtime_snapshots").fetchone()
    except sqlite3.OperationalError:  # the store is still being created
        return None
    finally:
        conn.close()
    if row is None:
        return None
    found = [p for p in json.loads(row[0])["processes"] if p["name"] == "worker"]
    return found[0] if found else None


async def test_a_single_shot_agents_process_names_its_run_in_flight(tmp_path: Path) -> None:
    """The snapshot's ``run_id`` of a single-shot agent is its run while it goes, so that
    ``top``'s ``c`` on the process can cancel it (it used to be set only once it ended)."""
    async with LoopbackEngine(cost=CostModel(per_request_ms=30, slots=2)) as engine:
        (tmp_path / "agents.yaml").write_text(
            "agents:\n"
            "  - name: worker\n"
            "    prompt: 'ANSWER: {\"n\": 1}'\n"
            "    response_format: {n: 1}\n"
            "    life_cycle: {type: single-shot, length: 400, concurrency: 2}\n"
            "    cache: false\n"
        )
        (tmp_path / "config.yaml").write_text(
            f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
        )
        db = tmp_path / "c.db"
        task = asyncio.create_task(
            run_agents(
                load_agents(tmp_path / "agents.yaml").agents,
                config=load_config(tmp_path / "config.yaml"),
                db_path=db,
                display=PlainDisplay(io.StringIO()),
            )
        )
        await wait_for(lambda: db.exists() and attempts(db) >= 2)
        await wait_for(lambda: (worker_snapshot(db) or {}).get("state") == "running")
        worker = worker_snapshot(db)
        assert worker is not None
        conn = sqlite3.connect(db)
        (running,) = conn.execute("select id from runs where status = 'running'").fetchone()
        assert worker["run_id"] == running

        send(db, "cancel", worker["run_id"])
        (outcome,) = await asyncio.wait_for(task, 10)
        assert (outcome.run_id, outcome.status) == (running, "cancelled")
        finished = worker_snapshot(db)
        conn.close()
    assert finished is not None and finished["run_id"] == running
