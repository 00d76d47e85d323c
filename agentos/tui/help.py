"""The help screen (``?``): every key, and every figure and column explained.

The explanations are not written here: each table's columns are explained in its
``EXPLAIN`` (next to its ``COLUMNS``), the header's figures in
:data:`agentos.tui.summary.EXPLAIN`, so the help cannot drift from what the tables show.
Only the keys, and the two header lines that are not figures, are listed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from agentos.tui import summary
from agentos.tui.engines import EnginesTable
from agentos.tui.nodes import NodesTable
from agentos.tui.processes import ProcessesTable
from agentos.tui.runs import RunsTable
from agentos.tui.table import StoreTable

KEYS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "everywhere",
        (
            ("?", "this help (? or escape closes it)"),
            ("tab", "the next table (shift+tab: the previous one)"),
            ("q", "quit"),
        ),
    ),
    (
        "in a table",
        (
            ("↑ ↓ pgup pgdn", "move the cursor (home: the top, end: the bottom)"),
            ("enter", "open the run's timeline (on a process: its latest run)"),
            ("p / r", "pause / resume the agent of the row (a process, or a run's agent)"),
            ("c", "cancel the run (asks first, naming it)"),
            ("< / >", "sort by the previous / next column (the header shows ▲ or ▼)"),
            ("I", "reverse the sort"),
            ("click a header", "sort by that column; again: reverse it"),
            ("/", "filter the table by name or status as you type (enter keeps it)"),
            ("escape", "clear the table's filter"),
        ),
    ),
    (
        "in the recent runs",
        (
            ("home", "back to the newest runs"),
            ("space", "show a group's runs, or fold them into one row again"),
            (
                "g",
                "group consecutive runs of one agent that ended alike, or stop (sorted by "
                "start, agent or status; sorted by a figure, each run is a row)",
            ),
        ),
    ),
    (
        "in a run's timeline",
        (
            ("m", "read more events"),
            ("escape", "back to the dashboard"),
        ),
    ),
)
"""The keys, by where they work."""

HEADER_LINES = (
    ("attached", "Which runtimes (agentos run processes) the figures come from; 'not "
     "attached — last seen …' once none writes its snapshot (the figures are its last)."),
    ("jobs/s", "Jobs done per second between the last two reads, and its line over the "
     "last minutes (one column per read, newest on the right)."),
    ("nodes", "On a Ray cluster (agentos run --cluster), at 24 rows: the nodes Ray sees "
     "alive of all, their CPUs, the runs in flight and on which node; from 30 rows the "
     "nodes table shows them instead."),
)  # fmt: skip
"""The header's lines that are not figures of :data:`agentos.tui.summary.LABELS`."""

TABLES: tuple[type[StoreTable], ...] = (EnginesTable, NodesTable, ProcessesTable, RunsTable)
"""Every table, in the order the dashboard stacks them; each one's columns are all listed,
those a narrow terminal leaves out (:attr:`~agentos.tui.table.StoreTable.DROP_ORDER`) too."""


def column_help(table: type[StoreTable]) -> list[tuple[str, str]]:
    """``(label, sentence)`` for every column ``table`` can show (the runs table's node
    column too)."""
    columns = list(table.COLUMNS)
    if table is RunsTable:
        columns.insert(-1, RunsTable.NODE_COLUMN)
    return [(label, table.EXPLAIN[key]) for key, label in columns]


def _section(title: str, rows: Iterable[tuple[str, str]]) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True, min_width=14)
    grid.add_column(ratio=1)
    for name, text in rows:
        grid.add_row(Text(name), Text(text))  # literally: "background[embeddings]"
    return Group(Text(title, style="bold underline"), grid, Text(""))


def help_text() -> RenderableType:
    """Everything the help screen shows."""
    parts = [_section(f"keys {where}", rows) for where, rows in KEYS]
    header = [*HEADER_LINES, *((label, summary.EXPLAIN[label]) for label in summary.LABELS)]
    parts.append(_section("the header", header))
    for table in TABLES:
        parts.append(_section(f"{table.TITLE} columns", column_help(table)))
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    """The keys and the meaning of every figure, scrollable; ``?`` or ``escape`` closes
    it (``q`` quits, as everywhere)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,escape", "app.pop_screen", "Close", key_display="?"),
    ]
    AUTO_FOCUS = "#help-dialog"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "agentos top — help (? or escape closes it)"
            yield Static(help_text(), id="help-text")
