"""The help screen (``?``): it explains every column the tables show, every figure of the
header and every key, from the tables' own explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Static

from agentos.store import Store
from agentos.tui import summary
from agentos.tui.app import TopApp
from agentos.tui.engines import EnginesTable
from agentos.tui.filter import FilterBar
from agentos.tui.help import KEYS, HelpScreen, help_text
from agentos.tui.nodes import NodesTable
from agentos.tui.processes import ProcessesTable
from agentos.tui.runs import RunsTable
from agentos.tui.sorting import ASCENDING_MARK, DESCENDING_MARK
from agentos.tui.table import StoreTable
from agentos.tui.timeline import TimelineScreen
from tests.tui.conftest import make_app, settle
from tests.tui.seed import seed
from tests.tui.test_snapshots import SnapCompare

TABLES: tuple[type[StoreTable], ...] = (EnginesTable, NodesTable, ProcessesTable, RunsTable)


def plain(renderable: Any) -> str:
    """What the help shows, as plain text in one very wide column (no wrapping)."""
    import io

    from rich.console import Console

    console = Console(width=2000, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return " ".join(console.export_text().split())


def test_every_column_of_every_table_has_an_explanation() -> None:
    for table in TABLES:
        columns = {key for key, _ in table.COLUMNS}
        if table is RunsTable:
            columns.add(RunsTable.NODE_COLUMN[0])
        assert set(table.EXPLAIN) == columns, table.__name__  # none missing, none stale
        assert all(len(text.split()) >= 3 for text in table.EXPLAIN.values())


def test_every_header_figure_has_an_explanation() -> None:
    assert set(summary.EXPLAIN) == set(summary.LABELS)


def test_every_key_bound_is_in_the_help() -> None:
    classes: list[Any] = [TopApp, StoreTable, RunsTable, ProcessesTable, TimelineScreen]
    listed = {key for _, rows in KEYS for keys, _ in rows for key in keys.split()}
    names = {"question_mark": "?", "slash": "/", "greater_than_sign": ">"}
    names |= {"less_than_sign": "<", "select_cursor": "enter"}
    missing = []
    for cls in classes:
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding)
            for key in binding.key.split(","):
                if names.get(key, key) not in listed:
                    missing.append((cls.__name__, key))
    for binding in FilterBar.BINDINGS:
        assert isinstance(binding, Binding) and binding.key in listed
    assert missing == []


async def test_help_explains_every_column_shown(seeded_db: Path) -> None:
    """Against the live dashboard: each column header shown (sort mark aside) is in the
    help with its table's sentence for it."""
    app = make_app(seeded_db)
    text = plain(help_text())
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        shown = {
            type(table): [
                (str(column.key.value), str(column.label).rstrip(ASCENDING_MARK + DESCENDING_MARK))
                for column in table.columns.values()
            ]
            for table in app.query(StoreTable)
        }
    assert set(shown) == set(TABLES)
    for table, columns in shown.items():
        for key, label in columns:
            explanation = " ".join(table.EXPLAIN[key].split())
            assert f"{label.strip()} {explanation}" in text, (table.__name__, key)
    assert "busy - N: N requests to it are in flight right now" in text
    assert "max_requests / max_batch_size" in text


async def test_help_lists_the_columns_an_80_column_terminal_leaves_out(db_path: Path) -> None:
    """At 80×24 the tables drop columns to fit (and show the nodes as a header line, not a
    table); the help still explains every column of every table, shown or not."""
    seed(db_path, cluster=True)
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        dropped = {
            type(table): [key for key, _ in table.all_columns() if key not in table.shown_columns]
            for table in (app.engines, app.processes, app.runs)
        }
        nodes_table_shown = app.nodes.display
        await pilot.press("question_mark")
        await pilot.pause()
        text = plain(app.screen.query_one("#help-text", Static).content)
    assert all(dropped.values()), dropped  # each table left some out at 80 columns
    assert not nodes_table_shown
    for table in TABLES:
        for key, label in table.COLUMNS:
            explanation = " ".join(table.EXPLAIN[key].split())
            assert f"{label} {explanation}" in text, (table.__name__, key)
    assert "nodes columns" in text


async def test_question_mark_opens_and_closes_the_help_and_nothing_acts_under_it(
    seeded_db: Path,
) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        opened = app.screen
        shown = plain(opened.query_one("#help-text", Static).content)
        await pilot.press("p", "c", "greater_than_sign")  # not pause, cancel or sort
        await settle(pilot)
        still = app.screen
        await pilot.press("question_mark")
        await pilot.pause()
        closed = app.screen
        await pilot.press("question_mark", "escape")
        await pilot.pause()
        escaped = app.screen
        order = app.processes.order
    assert isinstance(opened, HelpScreen) and still is opened
    assert "keys everywhere" in shown and "recent runs columns" in shown
    assert not isinstance(closed, HelpScreen) and not isinstance(escaped, HelpScreen)
    assert order.column is None
    with Store(seeded_db, readonly=True) as store:
        assert list(store.db.query("SELECT * FROM control")) == []


def test_help_80x24(snap_compare: SnapCompare, seeded_db: Path) -> None:
    async def open_help(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(seeded_db), terminal_size=(80, 24), run_before=open_help)
