"""Replay: the timeline of a recorded run, and its exact and live re-execution.

Runs are recorded for real: a prompt agent against the loopback test engine, through the
router, into a SQLite file. The engine is told what to answer with ``ANSWER:`` in the
prompt; with structured output on, a re-ask (whose last message has no marker) gets a
schema-valid answer, so a run has a failed parse followed by a good one.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentos.agents.prompt import PromptAgentRun
from agentos.replay.reexec import replay_exact, replay_live
from agentos.replay.timeline import ReplayError, build_timeline
from agentos.router.client import EngineClient
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.scheduler.display import NullDisplay, PlainDisplay
from agentos.spec.agents import AgentSpec
from agentos.store import Store
from agentos.testing.engine import Faults, LoopbackEngine

SPEC = {
    "name": "scripted",
    "prompt": "ANSWER: this is not json",
    "response_format": {"city": "a city"},
    "life_cycle": {"type": "single-shot", "length": 2, "concurrency": 1},
    "temperature": 0.0,
    "retry": {"max_attempts": 3, "backoff_initial": 0.001},
    "cache": False,
}


async def handle_for(engine: LoopbackEngine) -> EngineHandle:
    client = EngineClient("loop", engine.url, timeout=5, structured_output=True)
    info = await client.detect()
    return EngineHandle(name="loop", client=client, info=info, max_requests=2)


async def record_run(store: Store, engine: LoopbackEngine, spec: dict | None = None) -> str:
    handle = await handle_for(engine)
    engine.faults = Faults(fail_first=1, error_status=503)
    try:
        async with Router([handle], StoreCallRecorder(store), settings=RouterSettings()) as router:
            run = PromptAgentRun(
                AgentSpec.model_validate(spec or SPEC),
                router=router,
                store=store,
                display=PlainDisplay(io.StringIO()),
            )
            outcome = await run.run()
    finally:
        await handle.client.aclose()
    engine.faults = Faults()
    store.flush()
    assert outcome.status == "succeeded"
    return outcome.run_id


async def test_view_shows_retries_failed_parse_and_results(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        with Store(tmp_path / "r.db") as store:
            run_id = await record_run(store, engine)
            timeline = build_timeline(store, run_id[:10])
    assert timeline.run["id"] == run_id
    first = timeline.steps[0]
    assert (first.attempt, first.turn) == (1, 0)
    assert [c.status for c in first.calls] == ["error", "ok"]  # the 503, then the retry
    assert first.calls[0].error_class == "EngineStatusError/transient"
    assert first.answer == "this is not json"
    assert first.parse_error == "no JSON object found in the answer"
    second = timeline.steps[1]
    assert (second.attempt, second.turn) == (1, 1)
    assert isinstance(second.parsed, dict) and second.parsed["city"]
    assert second.messages[-2] == {"role": "assistant", "content": "this is not json"}
    assert all(s.engine == "loop" for s in timeline.steps)
    assert timeline.finished is not None and timeline.finished["status"] == "succeeded"
    as_json = timeline.to_json()
    assert as_json["steps"][0]["outcome"] == "parse error"
    json.dumps(as_json)


async def test_exact_replay_contacts_nothing_and_reproduces(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        with Store(tmp_path / "r.db") as store:
            run_id = await record_run(store, engine)
            engine.faults = Faults(error_rate=1.0, error_status=500)
            before = engine.stats.requests
            report = await replay_exact(store, run_id, NullDisplay())
            runs_after = store.db.execute("select count(*) from runs").fetchone()[0]
        assert engine.stats.requests == before, "exact replay contacted the engine"
    assert report.reproduced, report.to_json()
    assert report.outcome is not None and report.outcome.status == "succeeded"
    assert [s.source for s in report.steps] == ["record"] * len(report.steps)
    assert runs_after == 1, "exact replay wrote to the user's database"


async def test_exact_replay_names_the_step_whose_request_changed(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        with Store(tmp_path / "r.db") as store:
            run_id = await record_run(store, engine)
            changed = {**SPEC, "prompt": "ANSWER: something else entirely"}
            conn = sqlite3.connect(tmp_path / "r.db")
            with conn:
                conn.execute("update runs set spec = ? where id = ?", (json.dumps(changed), run_id))
            conn.close()
            report = await replay_exact(store, run_id, NullDisplay())
    assert not report.reproduced
    assert report.divergence is not None
    assert report.divergence.step is not None and report.divergence.step.number == 1
    assert "step 1" in report.divergence.message
    assert any("something else entirely" in line for line in report.divergence.difference)


async def test_live_replay_from_step_n_records_a_linked_run(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        with Store(tmp_path / "r.db") as store:
            run_id = await record_run(store, engine)
            before = engine.stats.by_path.get("/v1/chat/completions", 0)
            handle = await handle_for(engine)
            try:
                async with Router([handle], StoreCallRecorder(store)) as router:
                    report = await replay_live(store, run_id, NullDisplay(), router, from_step=2)
            finally:
                await handle.client.aclose()
            asked = engine.stats.by_path.get("/v1/chat/completions", 0) - before
            new_run = store.db.execute(
                "select forked_from, status from runs where id = ?", [report.new_run_id]
            ).fetchone()
    assert new_run == (run_id, "succeeded")
    sources = {(s.attempt, s.turn): s.source for s in report.steps}
    assert sources[(1, 0)] == "record"
    assert sources[(1, 1)] == "live"
    assert asked >= 1, "steps from N on must ask today's engine"
    assert report.steps[0].same_answer


async def test_bad_replays_are_refused_with_clear_errors(tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        with Store(tmp_path / "r.db") as store:
            run_id = await record_run(store, engine)
            with pytest.raises(ReplayError, match="no run 'nope'"):
                await replay_exact(store, "nope", NullDisplay())
            conn = sqlite3.connect(tmp_path / "r.db")
            with conn:
                conn.execute("update runs set status = 'running' where id = ?", (run_id,))
            with pytest.raises(ReplayError, match="still in progress"):
                await replay_exact(store, run_id, NullDisplay())
            broken = {**SPEC, "temperature": "very hot"}
            with conn:
                conn.execute(
                    "update runs set status = 'succeeded', spec = ? where id = ?",
                    (json.dumps(broken), run_id),
                )
            conn.close()
            with pytest.raises(ReplayError, match="no longer loads"):
                await replay_exact(store, run_id, NullDisplay())


async def test_cli_replay_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with LoopbackEngine() as engine:
        with Store(db) as store:
            run_id = await record_run(store, engine)
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path)}

    def agentos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentos", *args, "--db", str(db)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    view = agentos("replay", run_id, "--json")
    assert view.returncode == 0
    assert json.loads(view.stdout)["run"]["id"] == run_id
    assert agentos("replay", run_id, "exact").returncode == 0
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "update runs set spec = ? where id = ?",
            (json.dumps({**SPEC, "prompt": "ANSWER: changed"}), run_id),
        )
    conn.close()
    diverged = agentos("replay", run_id, "exact")
    assert diverged.returncode == 1
    assert "step 1" in diverged.stdout
    unknown = agentos("replay", "no-such-run")
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr
