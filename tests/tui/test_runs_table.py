"""The recent-runs table while runs keep coming: it shows the newest while the user is
elsewhere, and keeps the run the user is on, on its screen line, once they are in it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import Label

from agentos.store import Store
from agentos.store.writer import Execute, Insert
from agentos.tui.app import TopApp
from agentos.tui.confirm import ConfirmCancel
from agentos.tui.runs import RunsTable
from tests.tui.conftest import FakeClock, make_app, reload, settle, text_of
from tests.tui.seed import NOW, R2, write_snapshot


def add_runs(db_path: Path, names: list[str], started_at: float, status: str = "running") -> None:
    """Runs of the perpetual agent ``ticker``, started one after the other from
    ``started_at``, as ``agentos run`` writes them."""
    with Store(db_path) as store:
        for i, run_id in enumerate(names):
            row = {
                "id": run_id,
                "agent": "ticker",
                "kind": "prompt",
                "status": status,
                "started_at": started_at + i * 0.001,
                "wanted": 1,
                "successes": 0,
                "attempts": 1,
                "spec": "{}",
                "pid": 4242,
                "host": "studio",
            }
            store.submit(Insert("runs", row))


def set_status(db_path: Path, run_id: str, status: str) -> None:
    with Store(db_path) as store:
        store.submit(Execute("UPDATE runs SET status = ? WHERE id = ?", [status, run_id]))


def first_shown(table: RunsTable) -> str | None:
    """The id of the run on the table's first visible line."""
    key = table.coordinate_to_cell_key(Coordinate(round(table.scroll_y), 0)).row_key
    return key.value


def cursor_line(table: RunsTable) -> int:
    """The cursor's line among the rows shown (0: the first one under the header)."""
    return table.cursor_row - round(table.scroll_y)


def control_rows(db_path: Path) -> list[dict[str, Any]]:
    with Store(db_path, readonly=True) as store:
        return list(store.db.query("SELECT command, target FROM control ORDER BY id"))


async def wait_for(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await pilot.pause(0.01)


async def test_the_table_shows_the_newest_run_within_one_refresh_in_a_long_session(
    seeded_db: Path,
) -> None:
    """Runs keep coming (60 of them, more than the table lists and than it has lines) while
    the dashboard refreshes on its own timer; after each, the next read shows it on top."""
    refresh_s = 0.1
    app = TopApp(seeded_db, refresh_s=refresh_s)
    late: list[float] = []
    shown: list[tuple[str | None, str]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for i in range(60):
            run_id = f"ticker-{i:03d}"
            add_runs(seeded_db, [run_id], time.time())
            written = time.time()
            await wait_for(pilot, lambda at=written: app.view is not None and app.view.now > at)
            late.append(time.time() - written)
            await pilot.pause()
            shown.append((first_shown(app.runs), run_id))
        cursor = app.runs.cursor_row
    assert all(top == newest for top, newest in shown), [s for s in shown if s[0] != s[1]]
    assert cursor == 0
    # a read that starts after the write shows it; that read comes within one interval,
    # plus the read itself (generous: this machine is shared)
    assert max(late) < refresh_s + 2.0, max(late)


async def test_a_run_picked_in_the_table_stays_on_its_line_and_is_the_one_cancelled(
    seeded_db: Path, clock: FakeClock
) -> None:
    add_runs(seeded_db, [f"old-{i:02d}" for i in range(30)], NOW - 20)
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.runs
        table.focus()
        table.move_cursor(row=3)
        await settle(pilot)
        picked, line = table.selected_key, cursor_line(table)

        add_runs(seeded_db, [f"new-{i:02d}" for i in range(5)], NOW - 1)
        await reload(pilot)
        after_five = (table.selected_key, cursor_line(table), str(table.border_title))
        add_runs(seeded_db, [f"newer-{i:02d}" for i in range(10)], NOW - 0.5)
        await reload(pilot)  # the table grows: the line holds once the new rows are measured
        after_more = (table.selected_key, cursor_line(table))

        await pilot.press("c")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmCancel)
        question = text_of(dialog.query_one("#confirm-question", Label))
        named = text_of(dialog.query_one("#confirm-run", Label))
        await pilot.press("y")
        await settle(pilot)

        await pilot.press("home")
        await settle(pilot)
        at_home = (table.selected_key, first_shown(table), str(table.border_title))
    assert picked is not None and picked.startswith("old-")
    assert after_five == (picked, line, "recent runs · ↑ 5 newer (home)")
    assert after_more == (picked, line)
    assert "Cancel this run of ticker?" in question
    assert f"id      {picked}" in named
    assert "status  running" in named
    assert control_rows(seeded_db) == [{"command": "cancel", "target": picked}]
    assert at_home == ("newer-09", "newer-09", "recent runs")


async def test_the_table_follows_the_newest_when_the_focus_is_elsewhere(
    seeded_db: Path, clock: FakeClock
) -> None:
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.runs
        table.move_cursor(row=2)  # the focus stays on the processes table
        add_runs(seeded_db, [f"new-{i:02d}" for i in range(30)], NOW - 1)
        await reload(pilot)
        state = (table.cursor_row, first_shown(table), str(table.border_title))
    assert state == (0, "new-29", "recent runs")


async def test_c_on_a_process_with_no_run_cancels_nothing(seeded_db: Path) -> None:
    """Not the run that happens to be under the runs table's cursor."""
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        processes = app.processes
        row = next(i for i, p in enumerate(app.view.processes if app.view else ()) if not p.run_id)
        processes.move_cursor(row=row)
        await pilot.press("c")
        await settle(pilot)
        screen = app.screen
    assert not isinstance(screen, ConfirmCancel)
    assert control_rows(seeded_db) == []


async def test_a_run_that_ended_while_asked_is_not_cancelled(
    seeded_db: Path, clock: FakeClock
) -> None:
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.runs.focus()
        app.runs.move_cursor(row=app.runs.get_row_index(R2))
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmCancel)
        set_status(seeded_db, R2, "succeeded")
        write_snapshot(seeded_db, {"uptime_s": 80.0, "finished": False}, updated_at=NOW + 0.5)
        clock.now = NOW + 1
        await reload(pilot)
        await pilot.press("y")
        await settle(pilot)
        said = [n.message for n in app._notifications]
    assert control_rows(seeded_db) == []
    assert f"run {R2} has already succeeded" in said


async def test_c_on_a_process_whose_run_is_not_listed_says_where_to_cancel_it(
    seeded_db: Path,
) -> None:
    """The process's run is older than the 50 runs listed: c names it and sends nothing."""
    add_runs(seeded_db, [f"new-{i:02d}" for i in range(50)], NOW - 1)
    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        view = app.view
        assert view is not None
        row, process = next((i, p) for i, p in enumerate(view.processes) if p.run_id == R2)
        app.processes.move_cursor(row=row)
        await pilot.press("c")
        await settle(pilot)
        screen = app.screen
        said = [n.message for n in app._notifications]
    assert not isinstance(screen, ConfirmCancel)
    assert control_rows(seeded_db) == []
    assert said == [
        f"{process.name}'s run {R2} is older than the recent runs listed: "
        "enter opens it, and c there cancels it"
    ]
