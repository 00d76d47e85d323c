"""The run life-cycle every agent kind shares: a run's row is opened, and always finished.

A cancel (Ctrl-C, or ``c`` in ``top``) can land while a run is still creating its row:
the row is written in a worker thread that goes on regardless. These tests hold the
database's write lock from a second connection (what another agentos writing to the same
file does), so the row cannot be committed until the test lets go; the cancel lands in
that window, for each kind of agent, and the run must still end as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentos.agents.base import RunContext
from agentos.agents.registry import make_run
from agentos.router.router import Router
from agentos.scheduler.display import PlainDisplay
from agentos.spec.agents import load_agents
from agentos.store import Store, queries

AGENTS = """
agents:
  - name: asker
    prompt: "Say hello. ANSWER: hello"
  - name: planner
    kind: planner
    prompt: Calculate 1 + 1
    tools: [calculator]
  - name: worker
    kind: task
    run: lifecycle_work:work
  - name: team
    kind: team
    prompt: Write a slogan.
    members: [asker]
    termination: {max_turns: 1}
"""

KINDS = {"prompt": "asker", "planner": "planner", "task": "worker", "team": "team"}


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold the database's write lock (another writer at work) until the block ends."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["ctrl-c", "top"])
async def test_a_cancel_while_the_run_row_is_created_finishes_the_run_as_cancelled(
    tmp_path: Path, kind: str, how: str
) -> None:
    (tmp_path / "agents.yaml").write_text(textwrap.dedent(AGENTS))
    (tmp_path / "lifecycle_work.py").write_text("def work():\n    return None\n")
    agents = load_agents(tmp_path / "agents.yaml")
    db = tmp_path / "agentos.db"
    log = io.StringIO()
    with Store(db) as store:
        context = RunContext(
            router=Router([]),
            store=store,
            display=PlainDisplay(log),
            agents_file=str(agents.path),
            agents=agents,
        )
        run = make_run(agents[KINDS[kind]], context)
        with write_lock(db):
            task = asyncio.create_task(run.run())
            # the run cannot get past creating its row while the lock is held
            await asyncio.sleep(0.2)
            assert not task.done()
            if how == "ctrl-c":
                task.cancel()
            else:
                run.cancel("cancelled from top")
            await asyncio.sleep(0.1)
        if how == "ctrl-c":
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        else:
            outcome = await asyncio.wait_for(task, 10)
            assert (outcome.status, outcome.error) == ("cancelled", "cancelled from top")
        store.flush()
        [row] = queries.list_runs(store)
        events = queries.run_events(store, row["id"])

    error = "interrupted" if how == "ctrl-c" else "cancelled from top"
    assert (row["agent"], row["status"], row["error"]) == (KINDS[kind], "cancelled", error)
    assert row["finished_at"] is not None
    finished = events[-1]
    assert finished["type"] == "run_finished"
    assert (finished["payload"]["status"], finished["payload"]["error"]) == ("cancelled", error)
    assert f"run {row['id']} cancelled: {KINDS[kind]} 0/" in log.getvalue()
