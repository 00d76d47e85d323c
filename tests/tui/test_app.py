"""The dashboard against a seeded database: what it shows is what the rows say."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Sparkline, Static

from agentos.store import Store
from agentos.tui.confirm import ConfirmCancel
from agentos.tui.engines import EnginesTable
from agentos.tui.processes import ProcessesTable
from agentos.tui.runs import RunsTable
from agentos.tui.status import AttachStatus
from agentos.tui.summary import Summary
from agentos.tui.table import StoreTable
from agentos.tui.timeline import TimelineScreen
from tests.tui.conftest import FakeClock, make_app, reload, settle, text_of
from tests.tui.seed import (
    NOW,
    R1,
    R2,
    R3,
    RUNTIME_A,
    SNAPSHOT_A,
    SNAPSHOT_B,
    mark_done,
    seed,
    with_more_jobs,
    write_snapshot,
)


def cells(table: StoreTable, key: str) -> list[str]:
    return [str(cell) for cell in table.get_row(key)]


def control_rows(db_path: Path) -> list[dict[str, Any]]:
    with Store(db_path, readonly=True) as store:
        return list(store.db.query("SELECT * FROM control ORDER BY id"))


async def test_header_shows_the_snapshot_figures(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        status = text_of(app.query_one(AttachStatus))
        summary = " ".join(text_of(app.query_one(Summary)).split())
    assert "attached: 1 runtime (pid 4242)" in status
    a = SNAPSHOT_A
    jobs_per_request = (a["jobs_done"] - a["cache_hits"]) / a["requests"]
    assert f"jobs done {a['jobs_done']}" in summary
    assert f"requests {a['requests']} ({jobs_per_request:.2f} jobs/req)" in summary
    assert "in requests 52.3s" in summary  # request_time_s 52.31
    assert "engines idle 1m36s" in summary  # idle_s 96.89
    assert f"waiting {a['waiting']}(+{a['intake']})" in summary
    assert "planning 18ms" in summary  # planning_s 0.0183
    assert "uptime 1m14s" in summary  # uptime_s 74.6
    assert f"jobs failed {a['jobs_failed']} ({a['retrying']} retrying)" in summary
    assert f"cache hits {a['cache_hits']}" in summary
    assert "cost today 0.004210 USD*" in summary  # * : some calls have no price


async def test_tables_show_the_engine_process_and_run_rows(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        engines = app.query_one(EnginesTable)
        processes = app.query_one(ProcessesTable)
        runs = app.query_one(RunsTable)
        local = cells(engines, f"{RUNTIME_A}/local")
        gpu = cells(engines, f"{RUNTIME_A}/gpu-box")
        news = cells(processes, f"{RUNTIME_A}/summarize-news")
        dates = cells(processes, f"{RUNTIME_A}/extract-dates")
        embeddings = cells(processes, f"{RUNTIME_A}/background[embeddings]")
        run_keys = [str(row.key.value) for row in runs.ordered_rows]
        running = cells(runs, R2)
        failed = cells(runs, R3)
    assert local == [
        "local", "busy - 2", "2/8", "17/32", "48.1s", "26.5s", "0s", "0/0", "2.8s", "5.4s",
        "126", "188%", "288M", "http://127.0.0.1:52853",
    ]  # fmt: skip
    # the limit lowered after a 429, the failures, the half-open circuit
    # a remote engine: no server process of agentos's, so no cpu or memory
    assert gpu[2:] == ["2 of 4/1", "6/6", "4.2s", "1m10s", "3.0s", "2/1 half-open", "555ms",
                       "867ms", "0", "-", "-", "http://10.0.0.7:8000/v1"]  # fmt: skip
    assert news == [
        "summarize-news", "agent", "running", "1", "2/1", "12", "24", "8,112", "3.8s", "1.5s",
        "97", "3.5s", "8.3s", "0.003650",
    ]  # fmt: skip
    assert embeddings == [
        "background[embeddings]", "system", "running", "-", "-", "2", "8", "512", "12.6s",
        "2.4s", "6.50", "2.2s", "4.3s", "0",
    ]  # fmt: skip
    assert dates[-1] == "no price"
    assert run_keys[:3] == [R2, R3, R1]  # newest first
    assert running == ["summarize-news", "running", "2/5", "3", "08:04:35", "8.0s", R2]
    assert failed[:6] == ["extract-dates", "failed", "0/2", "4", "08:04:13", "18.0s"]


async def test_enter_on_a_run_opens_its_timeline(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        runs = app.query_one(RunsTable)
        runs.focus()
        runs.move_cursor(row=runs.get_row_index(R1))
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TimelineScreen)
        head = text_of(screen.query_one("#timeline-head", Static))
        body = text_of(screen.query_one("#timeline-body", Static))
        scroll = screen.query_one("#timeline-scroll")
        await pilot.press("pagedown")  # the timeline is longer than the screen
        await pilot.pause()
        scrolled = scroll.scroll_y
        await pilot.press("escape")
        await pilot.pause()
        back = app.screen
    assert f"run {R1}" in head and "capital-cities" in head and "succeeded" in head
    assert "calls 6 (2 failed)" in head
    assert "Name the capital city of France." in body
    assert "answer from local (smollm2-135m) in 510ms · 121 tokens · batch of 2" in body
    assert "The capital of France is Paris." in body
    assert "parse error" in body and "re-ask 1" in body
    assert "parsed after repairing: trailing comma" in body
    assert "cache hit" in body
    assert "request to gpu-box failed after 2.0s: EngineTimeout" in body
    assert "EngineStatusError (HTTP 503)" in body
    assert "run succeeded · 3 good results" in body
    assert body.index("request to gpu-box failed after 2.0s") < body.index("+5.31s")
    assert scrolled > 0
    assert back is not screen and not isinstance(back, TimelineScreen)


async def test_enter_on_a_process_opens_its_latest_run(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        processes = app.query_one(ProcessesTable)
        assert app.focused is processes
        await pilot.press("enter")  # capital-cities, the first row
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TimelineScreen)
    assert screen.run_id == R1


async def test_pause_resume_and_cancel_write_control_rows(
    seeded_db: Path, clock: FakeClock
) -> None:
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        processes = app.query_one(ProcessesTable)
        processes.move_cursor(row=processes.get_row_index(f"{RUNTIME_A}/summarize-news"))
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)

        runs = app.query_one(RunsTable)
        runs.focus()
        runs.move_cursor(row=runs.get_row_index(R2))
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmCancel)
        await pilot.press("n")  # keeps it running: nothing is sent
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        rows = control_rows(seeded_db)
        pending_before = set(app.pending)

        mark_done(seeded_db, rows[0]["id"])
        await reload(pilot)
        pending_after = set(app.pending)
        clock.now += 11  # nothing carries out the other two
        await reload(pilot)
        given_up = set(app.pending)
    assert [(r["command"], r["target"], r["done_at"]) for r in rows] == [
        ("pause", "summarize-news", None),
        ("resume", "summarize-news", None),
        ("cancel", R2, None),
    ]
    assert all(abs(r["created_at"] - time.time()) < 60 for r in rows)
    assert pending_before == {r["id"] for r in rows}
    assert pending_after == pending_before - {rows[0]["id"]}
    assert given_up == set()


async def test_pause_from_the_runs_table_pauses_the_runs_agent(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        runs = app.query_one(RunsTable)
        runs.focus()
        runs.move_cursor(row=runs.get_row_index(R3))
        await pilot.press("p")
        await settle(pilot)
    assert [(r["command"], r["target"]) for r in control_rows(seeded_db)] == [
        ("pause", "extract-dates")
    ]


async def test_no_command_for_a_system_process_or_a_finished_run(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        processes = app.query_one(ProcessesTable)
        processes.move_cursor(row=processes.get_row_index(f"{RUNTIME_A}/background[embeddings]"))
        await pilot.press("p")
        await settle(pilot)
        runs = app.query_one(RunsTable)
        runs.focus()
        runs.move_cursor(row=runs.get_row_index(R1))  # succeeded
        await pilot.press("c")
        await settle(pilot)
        screen = app.screen
    assert not isinstance(screen, ConfirmCancel)
    assert control_rows(seeded_db) == []


async def test_not_attached_shows_when_last_seen_and_keeps_the_figures(db_path: Path) -> None:
    seed(db_path, snapshot_age_s=60)
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        status = text_of(app.query_one(AttachStatus))
        summary = " ".join(text_of(app.query_one(Summary)).split())
        engines = app.query_one(EnginesTable).row_count
        await pilot.press("p")  # nothing runs to carry it out: not sent
        await settle(pilot)
    assert "not attached — last seen 2026-11-21 08:03:43 (pid 4242)" in status
    assert f"jobs done {SNAPSHOT_A['jobs_done']}" in summary
    assert engines == len(SNAPSHOT_A["engines"])
    assert control_rows(db_path) == []


async def test_a_finished_runtime_is_not_attached(db_path: Path) -> None:
    seed(db_path)
    write_snapshot(db_path, {**SNAPSHOT_A, "finished": True}, updated_at=NOW - 0.1)
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        status = text_of(app.query_one(AttachStatus))
    assert "not attached — last seen 2026-11-21 08:04:42" in status


async def test_two_runtimes_on_one_database_are_shown_together(db_path: Path) -> None:
    seed(db_path, two_runtimes=True)
    app = make_app(db_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        status = text_of(app.query_one(AttachStatus))
        summary = " ".join(text_of(app.query_one(Summary)).split())
        engine_names = [str(r[0]) for r in map(app.query_one(EnginesTable).get_row_at, range(3))]
        process_names = [str(app.query_one(ProcessesTable).get_row_at(i)[0]) for i in range(5)]
    assert "attached: 2 runtimes (pids 4242, 5151)" in status
    assert f"jobs done {SNAPSHOT_A['jobs_done'] + SNAPSHOT_B['jobs_done']}" in summary
    assert f"requests {SNAPSHOT_A['requests'] + SNAPSHOT_B['requests']} " in summary
    assert "waiting 5(+2)" in summary
    assert engine_names == ["4242/local", "4242/gpu-box", "5151/local"]
    assert process_names[-1] == "5151/daily-report"
    assert process_names[0] == "4242/capital-cities"


async def test_figures_and_throughput_move_with_the_snapshots(
    seeded_db: Path, clock: FakeClock
) -> None:
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        first = text_of(app.query_one("#throughput-rate", Static))
        later = with_more_jobs(SNAPSHOT_A, jobs=10, seconds=0.5)
        write_snapshot(seeded_db, later, updated_at=NOW + 0.1)
        clock.now = NOW + 1
        await reload(pilot)
        rate = text_of(app.query_one("#throughput-rate", Static))
        summary = " ".join(text_of(app.query_one(Summary)).split())
        line = list(app.throughput.query_one("#throughput-line", Sparkline).data or [])
    assert "jobs/s -" in first
    assert "jobs/s 20\n" in rate  # 10 jobs between snapshots 0.5 s apart
    assert f"jobs done {SNAPSHOT_A['jobs_done'] + 10}" in summary
    assert line[-1] == pytest.approx(20.0)


async def test_waits_for_a_database_that_does_not_exist_yet(db_path: Path) -> None:
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = text_of(app.query_one(AttachStatus))
        seed(db_path)
        await reload(pilot)
        after = text_of(app.query_one(AttachStatus))
    assert f"there is no agentos database at {db_path}" in before
    assert "attached: 1 runtime" in after


async def test_in_a_running_runs_timeline_c_cancels_it_and_refreshes_go_on(
    seeded_db: Path, clock: FakeClock
) -> None:
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.runs.focus()
        app.runs.move_cursor(row=app.runs.get_row_index(R2))
        await pilot.press("enter")
        await settle(pilot)
        timeline = app.screen
        assert isinstance(timeline, TimelineScreen)
        body = text_of(timeline.query_one("#timeline-body", Static))
        write_snapshot(seeded_db, with_more_jobs(SNAPSHOT_A, 5, 0.5), updated_at=NOW + 0.1)
        clock.now = NOW + 1
        await reload(pilot)  # the dashboard refreshes underneath the timeline
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmCancel)
        await pilot.press("y")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        on_top = app.screen
        summary = " ".join(text_of(app.summary).split())
    assert "no events recorded for this run" in body
    assert on_top is timeline
    assert f"jobs done {SNAPSHOT_A['jobs_done'] + 5}" in summary
    assert [(r["command"], r["target"]) for r in control_rows(seeded_db)] == [
        ("cancel", R2),
        ("pause", "summarize-news"),
    ]


async def test_q_quits(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        running = app.is_running
    assert not running
