"""The dashboard's layout at the sizes it must work at: at 80×24 the essentials show whole
(no horizontal scrollbar, no column cut, a header of three rows), and wider terminals
get every column back."""

from __future__ import annotations

from pathlib import Path

from agentos.tui.app import TopApp
from agentos.tui.rows import Totals
from agentos.tui.summary import LABELS, Summary
from agentos.tui.table import StoreTable
from tests.tui.conftest import make_app, settle, text_of
from tests.tui.seed import RUNTIME_A, SNAPSHOT_A, seed, write_snapshot

ESSENTIAL = {
    "engines": ["engine", "state", "req/jobs", "failed r/j", "tok/s"],
    "processes": ["name", "state", "runs", "ok/failed", "jobs", "wait"],
    "runs": ["agent", "status", "good/wanted", "tries", "started", "took"],
}
"""Per table, the column headers a glance at 80×24 needs: is each engine busy or idle
and failing, each agent's state and progress, whether a process is starved, the latest
runs and how they ended."""


def headers(table: StoreTable) -> list[str]:
    return [str(column.label) for column in table.ordered_columns]


def tables(app: TopApp) -> dict[str, StoreTable]:
    return {"engines": app.engines, "processes": app.processes, "runs": app.runs}


async def test_at_80x24_the_essentials_fit_without_scrollbars(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        shown = {name: headers(table) for name, table in tables(app).items()}
        widths = {
            name: (table.virtual_size.width, table.scrollable_content_region.width)
            for name, table in tables(app).items()
        }
        scrollbars = {
            name: (table.show_horizontal_scrollbar, table.show_vertical_scrollbar)
            for name, table in tables(app).items()
        }
        rows_seen = {
            name: table.scrollable_content_region.height - 1 for name, table in tables(app).items()
        }
        row_counts = {name: table.row_count for name, table in tables(app).items()}
        header_rows = app.query_one("#top").outer_size.height
        summary = " ".join(text_of(app.summary).split())
        status = text_of(app.status)
        rate = str(app.throughput.query_one("#throughput-rate").render())
    for name, essential in ESSENTIAL.items():
        assert [h for h in shown[name] if h in essential] == essential, (name, shown[name])
        assert widths[name][0] <= widths[name][1], (name, widths[name])
        assert scrollbars[name] == (False, False), name
        assert rows_seen[name] >= row_counts[name], name  # every row of the seed shows
    assert "id" not in shown["runs"]  # the first to go: the timeline shows it
    assert header_rows == 3  # attach line and throughput, then two rows of figures
    assert "attached: 1 runtime" in status
    assert "jobs/s" in rate
    for label, value in [
        ("jobs done", SNAPSHOT_A["jobs_done"]),
        ("jobs failed", f"{SNAPSHOT_A['jobs_failed']} ({SNAPSHOT_A['retrying']} retrying)"),
        ("waiting", f"{SNAPSHOT_A['waiting']}(+{SNAPSHOT_A['intake']})"),
        ("requests", SNAPSHOT_A["requests"]),
        ("cost today", "0.004210 USD*"),
    ]:
        assert f"{label} {value}" in summary, (label, summary)


async def test_a_wide_terminal_shows_every_column_and_figure(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        shown = {name: table.shown_columns for name, table in tables(app).items()}
        summary = " ".join(text_of(app.summary).split())
    for name, table in tables(app).items():
        assert shown[name] == tuple(key for key, _ in table.COLUMNS), name
    for label in LABELS:
        assert label in summary


async def test_columns_come_back_as_the_terminal_widens_and_the_cursor_stays(
    seeded_db: Path,
) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        processes = app.processes
        processes.move_cursor(row=2)
        picked = processes.selected_key
        narrow = headers(processes)
        await pilot.resize_terminal(160, 40)
        await settle(pilot)
        wide = headers(processes)
        still = processes.selected_key
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        again = headers(processes)
        back = processes.selected_key
    assert len(narrow) < len(wide) == len(processes.COLUMNS)
    assert again == narrow
    assert picked == still == back == f"{RUNTIME_A}/extract-dates"


async def test_names_too_long_for_the_essentials_scroll_rather_than_cut(db_path: Path) -> None:
    """Only the columns of DROP_ORDER go: when the others alone are too wide (a very long
    agent name), the table scrolls sideways instead of cutting them."""
    long_name = "an-agent-whose-name-is-much-too-long-for-an-eighty-column-terminal"
    seed(db_path)
    data = {**SNAPSHOT_A, "processes": [{**SNAPSHOT_A["processes"][0], "name": long_name}]}
    write_snapshot(db_path, data)
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        shown = headers(app.processes)
        scrolls = app.processes.show_horizontal_scrollbar
    assert shown == ["name", "state", "ok/failed"]
    assert scrolls


def test_the_summary_keeps_the_first_figures_that_fit() -> None:
    totals = Totals(
        jobs_done=182, jobs_failed=2, cache_hits=3, requests=97, request_time_s=58.3,
        idle_s=102.0, waiting=4, intake=2, retrying=1, planning_s=0.018, uptime_s=80.0,
        cost_today="0.004210 USD*",
    )  # fmt: skip
    for width, rows, first in [(78, 2, 6), (158, 3, 10), (40, 2, 2), (78, 4, 10)]:
        text = Summary.render_totals(totals, width, rows)
        lines = text.plain.split("\n")
        assert len(lines) <= rows
        assert all(len(line) <= width for line in lines), (width, lines)
        shown = [label for label in LABELS if label in text.plain]
        assert shown == list(LABELS[:first]), (width, rows, shown)
