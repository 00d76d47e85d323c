"""The dashboard's layout at the sizes it must work at: at 80×24 the essentials show whole
(no horizontal scrollbar, no column cut, a header of three rows), wider terminals get
every column back, and a cluster's nodes show only when a snapshot has them."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets._footer import FooterKey

from agentos.store import Store
from agentos.tui.app import TopApp
from agentos.tui.data import build_view
from agentos.tui.nodes_line import NodesLine
from agentos.tui.rows import NodeRow, Totals
from agentos.tui.sorting import ASCENDING_MARK, DESCENDING_MARK
from agentos.tui.summary import LABELS, Summary
from agentos.tui.table import StoreTable
from tests.tui.conftest import make_app, settle, text_of
from tests.tui.seed import (
    NODES,
    NOW,
    RUNTIME_A,
    SNAPSHOT_A,
    seed,
    snapshot_row,
    write_snapshot,
)

ESSENTIAL = {
    "engines": ["engine", "state", "req/jobs", "failed r/j", "tok/s"],
    "processes": ["name", "state", "runs", "ok/failed", "jobs", "wait"],
    "runs": ["agent", "status", "good/wanted", "tries", "started", "took"],
}
"""Per table, the column headers a glance at 80×24 needs: is each engine busy or idle
and failing, each agent's state and progress, whether a process is starved, the latest
runs and how they ended."""


def headers(table: StoreTable) -> list[str]:
    """The column headers shown, without the sort mark (the runs table's ``started ▼``)."""
    marks = " " + ASCENDING_MARK + DESCENDING_MARK
    return [str(column.label).rstrip(marks) for column in table.ordered_columns]


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


async def test_a_clusters_nodes_show_as_a_table_when_tall(db_path: Path) -> None:
    seed(db_path, cluster=True)
    app = make_app(db_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table, line = app.nodes.display, app.nodes_line.display
        rows = [[str(c) for c in app.nodes.get_row_at(i)] for i in range(app.nodes.row_count)]
    assert (table, line) == (True, False)
    assert rows == [
        ["a1b2c3d4", "10.0.0.5", "alive", "8", "2"],
        ["e5f60718", "10.0.0.6", "alive", "4", "1"],
        ["9f8e7d6c", "10.0.0.7", "dead", "4", "0"],
    ]


async def test_a_clusters_nodes_show_as_one_line_at_80x24(db_path: Path) -> None:
    seed(db_path, cluster=True)
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table, line = app.nodes.display, app.nodes_line.display
        text = text_of(app.nodes_line).strip()
        runs_rows = app.runs.scrollable_content_region.height - 1
    assert (table, line) == (False, True)
    assert text == "nodes 2/3 alive · 12 cpus · 3 runs: a1b2c3d4 2 · e5f60718 1 · 9f8e7d6c dead"
    assert runs_rows >= 4  # the line costs one row, the runs still all show


async def test_no_nodes_no_panel(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    shown = []
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        shown.append((app.nodes.display, app.nodes_line.display))
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        shown.append((app.nodes.display, app.nodes_line.display))
    assert shown == [(False, False), (False, False)]


def test_the_view_reads_nodes_from_a_snapshot_and_skips_what_is_not_one() -> None:
    data = {**SNAPSHOT_A, "nodes": [*NODES, "junk", {"address": "10.0.0.9"}]}
    row = snapshot_row(RUNTIME_A, 4242, data, updated_at=NOW - 0.4, uptime_s=74.6)
    view = build_view(NOW, [row])
    without = build_view(
        NOW, [snapshot_row(RUNTIME_A, 4242, SNAPSHOT_A, updated_at=NOW, uptime_s=1)]
    )
    assert view.nodes[0] == NodeRow(
        key=f"{RUNTIME_A}/a1b2c3d4", label="a1b2c3d4", address="10.0.0.5", alive=True,
        cpus=8.0, runs=2,
    )  # fmt: skip
    assert [n.label for n in view.nodes] == ["a1b2c3d4", "e5f60718", "9f8e7d6c"]
    assert without.nodes == ()


def test_the_nodes_line_says_when_no_node_is_alive() -> None:
    dead = NodeRow(key="r/n", label="n", address="", alive=False, cpus=2.0, runs=0)
    text: Text = NodesLine.describe([dead])
    assert text.plain == "nodes 0/1 alive · 0 cpus · 0 runs: n dead"


# -- help, filter and groups at 80×24 (issue 16 items 3 and 5 together) ------------------


def ticker_runs(count: int, start: float) -> list[dict[str, object]]:
    """``count`` finished runs of a perpetual agent, one every 2 s, each on node a1b2c3."""
    return [
        {
            "id": f"ticker-{i:05d}",
            "agent": "ticker",
            "status": "succeeded",
            "started_at": start + 2 * i,
            "finished_at": start + 2 * i + 1.5,
            "kind": "prompt",
            "wanted": 1,
            "successes": 1,
            "attempts": 1,
            "spec": "{}",
            "pid": 4242,
            "node": "a1b2c3",
        }
        for i in range(count)
    ]


async def test_at_80x24_a_group_shows_its_last_start_and_the_essentials_fit(
    seeded_db: Path,
) -> None:
    """A group's start range (``07:24:43–08:03:21``) and a cluster's node column would push
    the runs table's essentials out at 80 columns: the range is cut to its last start
    before any column goes, then the id goes; a wide terminal shows the range again."""
    with Store(seeded_db) as store, store.db.conn:  # runs that record their node (m016)
        store.db.table("runs").insert_all(ticker_runs(1160, NOW - 2400))
    app = make_app(seeded_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runs = app.runs
        group = "group:ticker-00000"
        narrow = (headers(runs), runs.show_horizontal_scrollbar, runs.virtual_size.width)
        narrow_width = runs.scrollable_content_region.width
        narrow_started = str(runs.get_cell(group, "started"))
        await pilot.resize_terminal(160, 40)
        await settle(pilot)
        wide = headers(runs)
        wide_started = str(runs.get_cell(group, "started"))
        wide_node = str(runs.get_cell(group, "node"))
    # cut to its last start, the range leaves room for the node; the id goes
    assert narrow[0] == [*ESSENTIAL["runs"], "node"]
    assert narrow[1] is False and narrow[2] <= narrow_width
    assert narrow_started == "08:03:21"
    assert wide == ["agent", "status", "good/wanted", "tries", "started", "took", "node", "id"]
    assert wide_started == "07:24:43–08:03:21"
    assert wide_node == "a1b2c3"


async def test_the_footer_shows_help_at_80_columns_whatever_is_focused(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    placed = {}
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for table in (app.processes, app.runs, app.engines):
            table.focus()
            await settle(pilot)
            keys = [k for k in app.query(FooterKey) if k.key == "question_mark"]
            placed[table.id] = [(k.region.x, k.region.right, k.display) for k in keys]
    for where, keys in placed.items():
        assert len(keys) == 1, where
        x, right, shown = keys[0]
        assert shown and x >= 0 and right <= 80, (where, keys)


async def test_the_filter_line_takes_a_row_only_while_it_is_typed_in(seeded_db: Path) -> None:
    """At 80×24 every row counts: the filter line shows while the user types a filter;
    kept (enter) or cleared, it goes, and the runs table's title names the kept filter."""
    app = make_app(seeded_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runs = app.runs
        runs.focus()
        before = (runs.outer_size.height, app.filter_bar.display)
        await pilot.press("slash")
        await settle(pilot)
        typing = (runs.outer_size.height, app.filter_bar.display)
        await pilot.press("f", "a", "i", "l", "enter")
        await settle(pilot)
        kept = (runs.outer_size.height, app.filter_bar.display, str(runs.border_title))
        kept_rows = runs.row_count
        await pilot.press("escape")
        await settle(pilot)
        cleared = (runs.outer_size.height, app.filter_bar.display, str(runs.border_title))
    assert before == (typing[0] + 1, False)
    assert typing[1] is True
    assert kept == (before[0], False, "recent runs · filter /fail")
    assert kept_rows == 1  # extract-dates's run, the seed's one failed run
    assert cleared == (before[0], False, "recent runs")
