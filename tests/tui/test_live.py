"""``agentos top`` attached to a real ``agentos run``: another process, the same database.

The engine is the loopback test engine with a cost per request, so the run lasts a few
seconds; the dashboard runs with the real clock and its refresh timer, as a user has it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from agentos.testing.engine import CostModel, LoopbackEngine
from agentos.tui.app import TopApp
from tests.tui.conftest import text_of

AGENTS = """\
agents:
  - name: cities
    prompt: "ANSWER: {\\"city\\": \\"Paris\\"}"
    response_format:
      city: the city
    life_cycle: {type: single-shot, length: LENGTH, concurrency: 2}
"""


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine(cost=CostModel(per_request_ms=120, slots=2)).run_in_thread() as eng:
        yield eng


def start_run(
    tmp_path: Path, engine: LoopbackEngine, db: Path, length: int
) -> subprocess.Popen[str]:
    (tmp_path / "agents.yaml").write_text(AGENTS.replace("LENGTH", str(length)))
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
        "    max_batch_size: 1\n"
        # the figures checked here are the agent's jobs only: no background embeddings
        "embeddings:\n  enabled: false\n"
    )
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home")}
    env.pop("AGENTOS_DB", None)
    return subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "agents.yaml", "--db", str(db)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def wait_for(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await pilot.pause(0.05)


def jobs_done(app: TopApp) -> int:
    view = app.view
    return view.totals.jobs_done if view is not None and view.totals is not None else -1


async def test_top_follows_a_real_run_and_shows_its_last_state(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db = tmp_path / "agentos.db"
    app = TopApp(db, refresh_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        run = start_run(tmp_path, engine, db, length=24)
        try:
            await wait_for(pilot, lambda: app.view is not None and bool(app.view.attached))
            seen = {jobs_done(app)}

            def moved_twice() -> bool:
                seen.add(jobs_done(app))
                return len(seen) >= 3

            await wait_for(pilot, moved_twice)
            attached_status = text_of(app.status)
            engines_while_running = app.engines.row_count
            output, _ = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 0, output
        await wait_for(pilot, lambda: app.view is not None and not app.view.attached)
        await wait_for(pilot, lambda: jobs_done(app) == 24)
        status = text_of(app.status)
        process = app.processes.get_row_at(0)
        top_run = app.runs.get_row_at(0)
    assert "attached: 1 runtime" in attached_status and f"pid {run.pid}" in attached_status
    assert engines_while_running == 1
    assert len(seen) >= 3  # the figures moved while it ran
    assert "not attached — last seen" in status
    assert [str(c) for c in process[:4]] == ["cities", "agent", "succeeded", "1"]
    assert [str(c) for c in top_run[:3]] == ["cities", "succeeded", "24/24"]


async def test_pause_from_top_stops_new_attempts_until_resumed(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db = tmp_path / "agentos.db"
    app = TopApp(db, refresh_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        run = start_run(tmp_path, engine, db, length=30)
        try:
            await wait_for(pilot, lambda: jobs_done(app) >= 4)
            app.processes.focus()
            await pilot.press("p")
            await wait_for(pilot, lambda: str(app.processes.get_row_at(0)[2]) == "paused", 5)
            assert not app.pending  # the runtime marked the command done
            # attempts in flight when the pause came finish, and reach a snapshot
            await pilot.pause(1.2)
            paused_at = jobs_done(app)
            await pilot.pause(1.0)
            assert jobs_done(app) == paused_at  # nothing new started while paused
            await pilot.press("r")
            output, _ = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 0, output
        await wait_for(pilot, lambda: jobs_done(app) == 30)
