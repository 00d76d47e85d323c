"""``agentos top``: the live dashboard of everything that runs against one database.

The app never blocks its UI thread on SQLite: a timer fires every ``refresh_s`` and starts
a thread worker that reads the store (:class:`~agentos.tui.data.StoreReader`) and posts one
:class:`~agentos.tui.messages.ViewRead` with the whole view; a tick that finds the
previous read still running is skipped, so a slow disk never piles up reads. Commands
(pause, resume, cancel) are written the same way, from a worker, as rows of ``control``
that the runtimes carry out (:mod:`agentos.tui.commands`); the next reads report when one
was done.

For tests and screenshots, the clock, the time zone and the refresh timer are injectable:
with ``refresh_s=None`` the app reads once on start and then only when :meth:`reload` is
called, so a picture depends on the data alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Footer, Input

from agentos.errors import StoreError
from agentos.tui.commands import send_command
from agentos.tui.confirm import ConfirmCancel
from agentos.tui.data import StoreReader, ThroughputMeter
from agentos.tui.engines import EnginesTable
from agentos.tui.filter import FilterBar
from agentos.tui.help import HelpScreen
from agentos.tui.messages import CommandSent, ViewRead
from agentos.tui.nodes import NodesTable
from agentos.tui.nodes_line import NodesLine
from agentos.tui.processes import ProcessesTable
from agentos.tui.rows import RunRow, TopView
from agentos.tui.runs import RunsTable
from agentos.tui.runs_query import RunsQuery
from agentos.tui.sorting import clicked, cycle, first_order
from agentos.tui.status import AttachStatus
from agentos.tui.summary import Summary
from agentos.tui.table import StoreTable
from agentos.tui.throughput import Throughput
from agentos.tui.timeline import TimelineScreen

REFRESH_S = 1.0
"""How often the dashboard reads the store (runtimes write their snapshots every 0.5 s)."""

NOT_DONE_AFTER_S = 10.0
"""A command no runtime has marked done this long after it was sent is reported as such
(runtimes poll twice a second, and leave commands for agents they do not run)."""

TABLE_ACTIONS = frozenset({"sort", "reverse_sort", "filter", "clear_filter"})
"""Actions on the dashboard's tables, which do nothing over a timeline or a dialog."""


class TopApp(App[None]):
    """The dashboard for the database at ``db_path``.

    ``clock`` gives the current unix time (it decides whether a runtime is attached and
    how long a running run has taken), ``tz`` the zone times are shown in (None: local).
    """

    CSS_PATH = "top.tcss"
    TITLE = "agentos top"
    ENABLE_COMMAND_PALETTE = False
    # Textual annotates these as instance variables, so mypy refuses a ClassVar here.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]  # noqa: RUF012
    AUTO_FOCUS = "#processes"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "command('pause')", "Pause"),
        Binding("r", "command('resume')", "Resume"),
        Binding("c", "cancel_run", "Cancel"),
        # priority: taken when the key arrives, so the keys typed right after it (a paste,
        # a fast typist) already go to the filter line, not to the table (c, p, r act there)
        Binding("slash", "filter", "Filter", key_display="/", priority=True),
        Binding("greater_than_sign", "sort(1)", "Sort", key_display=">"),
        Binding("less_than_sign", "sort(-1)", "Sort back", show=False, key_display="<"),
        Binding("I", "reverse_sort", "Reverse sort", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(
        self,
        db_path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
        refresh_s: float | None = REFRESH_S,
    ) -> None:
        super().__init__()
        self.db_path = Path(db_path).expanduser()
        self.clock = clock
        self.tz = tz
        self.refresh_s = refresh_s
        self.reader = StoreReader(self.db_path)
        self.meter = ThroughputMeter()
        self.view: TopView | None = None
        """The latest view read (None before the first read completes)."""
        self.pending: dict[int, tuple[CommandSent, float]] = {}
        """Commands sent and not yet reported done, by control row id, with when sent."""
        self._reading = threading.Event()
        self._read_again = False

    def compose(self) -> ComposeResult:
        # The dashboard's widgets are kept rather than queried: once a timeline or a
        # confirmation is on top, a query on the app searches that screen instead.
        self.status = AttachStatus(tz=self.tz, id="status")
        self.summary = Summary(id="summary")
        self.throughput = Throughput(self.meter, id="throughput")
        self.engines = EnginesTable(id="engines")
        self.processes = ProcessesTable(id="processes")
        self.runs = RunsTable(tz=self.tz, id="runs")
        self.nodes = NodesTable(id="nodes")
        self.nodes_line = NodesLine(id="nodes-line")
        with Container(id="top"):  # a grid, laid out by top.tcss for the terminal's size
            yield self.status
            yield self.throughput
            yield self.summary
        yield self.nodes_line
        yield self.engines
        yield self.nodes
        yield self.processes
        yield self.runs
        self.filter_bar = FilterBar(id="filter")
        yield self.filter_bar
        yield Footer()

    def on_mount(self) -> None:
        for table in (self.engines, self.nodes, self.processes, self.runs):
            table.border_title = table.title()
        self.reload()
        if self.refresh_s:
            self.set_interval(self.refresh_s, self.reload)

    def on_unmount(self) -> None:
        self.reader.close()

    # -- reading ---------------------------------------------------------------------------

    def reload(self, *, again: bool = False) -> None:
        """Start a read of the store, unless one is still running; ``again``: then start
        one as soon as it ends (the runs table's query changed since it started)."""
        if self._reading.is_set():
            self._read_again = self._read_again or again
            return
        self._reading.set()
        self._read(self.clock(), tuple(self.pending), self.runs.store_query())

    @work(thread=True, group="read")
    def _read(self, now: float, watch: tuple[int, ...], runs: RunsQuery) -> None:
        self.post_message(ViewRead(self.reader.read(now, watch, runs)))

    def on_view_read(self, message: ViewRead) -> None:
        self._reading.clear()
        if not self.is_running:  # a read that ended while the app closes: nothing to show
            return
        if self._read_again:
            self._read_again = False
            self.call_later(self.reload)
        view = message.view
        self.view = view
        self.meter.add(view)
        self.status.show(view)
        self.summary.show(view.totals)
        self.throughput.show()
        self.engines.show(view.engines)
        self.nodes.show(view.nodes)
        self.nodes_line.show(view.nodes)
        self.processes.show(view.processes)
        self.runs.show(view.runs, view.now)
        self._report_done(view)

    def _report_done(self, view: TopView) -> None:
        """Say which sent commands a runtime carried out, and give up on those that no
        runtime took within :data:`NOT_DONE_AFTER_S` (none runs that agent or run)."""
        pids = {r.runtime_id: r.pid for r in view.runtimes}
        for done in view.done_commands:
            entry = self.pending.pop(done.id, None)
            if entry is not None:
                by = f" by pid {pids[done.done_by]}" if done.done_by in pids else ""
                self.say(f"{entry[0].command} {entry[0].label}: done{by}")
        for command_id, (sent, sent_at) in list(self.pending.items()):
            if view.now - sent_at > NOT_DONE_AFTER_S:
                del self.pending[command_id]
                self.say(
                    f"{sent.command} {sent.label}: no runtime carried it out", severity="warning"
                )

    def say(self, message: str, severity: SeverityLevel = "information") -> None:
        """Notify with ``message`` taken literally (names may contain ``[``)."""
        self.notify(message, severity=severity, markup=False)

    # -- acting ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No second command while the cancel confirmation is open, nothing but closing
        it (or quitting) while the help is, and sorting or filtering only on the tables."""
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return action in ("help", "pop_screen", "quit")
        if isinstance(screen, ConfirmCancel) and action in ("command", "cancel_run"):
            return False
        return action not in TABLE_ACTIONS or screen is self.screen_stack[0]

    def _timeline_run(self) -> RunRow | None:
        """The run whose timeline is open, if one is."""
        screen = self.screen
        if isinstance(screen, TimelineScreen) and screen.timeline is not None:
            return screen.timeline.run
        return None

    def _selected_run(self) -> RunRow | None:
        """The run the user points at: the open timeline's, the one under the focused runs
        table's cursor, or the focused process's (its run in flight, else its latest: the
        snapshot's ``run_id``); None elsewhere (a ``c`` on an engine, or on a process with
        no run, must not fall through to some other run)."""
        shown = self._timeline_run()
        if shown is not None:
            return shown
        if self.focused is self.runs:
            return self.runs.selected
        process = self.processes.selected
        if self.focused is self.processes and process and process.run_id:
            return self.runs.run(process.run_id)
        return None

    def _selected_agent(self) -> str | None:
        """The agent the user points at: the open timeline's or the focused runs table's
        run's agent, else the process under the processes table's cursor (if an agent)."""
        shown = self._timeline_run()
        if shown is not None:
            return shown.agent
        if self.focused is self.runs:
            run = self.runs.selected
            return run.agent if run else None
        process = self.processes.selected
        if process is None:
            return None
        if process.kind != "agent":
            self.say(f"{process.name} is a {process.kind} process, not an agent")
            return None
        return process.name

    def _runtime_attached(self, doing: str) -> bool:
        if self.view is not None and self.view.attached:
            return True
        self.say(f"not attached: no runtime is running to {doing}", severity="warning")
        return False

    def action_command(self, command: str) -> None:
        """Pause or resume the selected agent."""
        agent = self._selected_agent()
        if agent is None:
            self.say(f"select an agent to {command}", severity="warning")
            return
        if self._runtime_attached(f"{command} {agent}"):
            self._send(command, agent, agent)

    def action_cancel_run(self) -> None:
        """Ask, then cancel the selected run."""
        run = self._selected_run()
        process = self.processes.selected
        if run is None and self.focused is self.processes and process and process.run_id:
            self.say(
                f"{process.name}'s run {process.run_id} is older than the recent runs listed: "
                "enter opens it, and c there cancels it",
                severity="warning",
            )
            return
        if run is None:
            self.say("select a run to cancel", severity="warning")
            return
        if run.status != "running":
            self.say(f"run {run.id} has already {run.status}", severity="warning")
            return
        if not self._runtime_attached(f"cancel run {run.id}"):
            return

        def answered(confirmed: bool | None) -> None:
            if not confirmed:
                return
            now = self.runs.run(run.id) or run
            if now.status != "running":  # it ended while the question was open
                self.say(f"run {run.id} has already {now.status}", severity="warning")
                return
            self._send("cancel", run.id, f"run {run.id} ({run.agent})")

        self.push_screen(ConfirmCancel(run), answered)

    @work(thread=True, group="commands")
    def _send(self, command: str, target: str, label: str) -> None:
        try:
            command_id = send_command(self.db_path, command, target)
        except StoreError as exc:
            self.post_message(CommandSent(command, target, label, problem=exc.message))
            return
        self.post_message(CommandSent(command, target, label, id=command_id))

    def on_command_sent(self, message: CommandSent) -> None:
        if message.id is None:
            self.say(f"{message.command} {message.label}: {message.problem}", severity="error")
            return
        self.pending[message.id] = (message, self.clock())
        self.say(f"{message.command} {message.label}: sent")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a run (or on a process: its latest run) opens the run's timeline."""
        run_id: str | None = None
        if isinstance(event.data_table, RunsTable):
            run = event.data_table.rows_by_key.get(event.row_key.value or "")
            run_id = run.id if run else None  # a group's row: its latest run
        elif isinstance(event.data_table, ProcessesTable):
            process = event.data_table.selected
            run_id = process.run_id if process else None
        if run_id:
            self.push_screen(
                TimelineScreen(
                    self.db_path, run_id, clock=self.clock, tz=self.tz, refresh_s=self.refresh_s
                )
            )

    # -- help, sort and filter -------------------------------------------------------------

    def action_help(self) -> None:
        """Open the help screen (``?`` there closes it)."""
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen())

    def _focused_table(self) -> StoreTable | None:
        focused = self.focused
        if isinstance(focused, StoreTable):
            return focused
        if focused is self.filter_bar:
            return self.filter_bar.target
        return None

    def action_sort(self, step: int) -> None:
        """Sort the focused table by the next (``step`` 1) or previous (-1) column."""
        table = self._focused_table()
        if table is None:
            return
        columns = list(table.shown_columns)
        table.order = cycle(table.order, columns, step, natural=table.NATURAL_ORDER.column is None)
        table.rearrange()

    def action_reverse_sort(self) -> None:
        table = self._focused_table()
        if table is None:
            return
        order = table.order
        if order.column is None:  # reversing the natural order: by its first column
            order = first_order(table.shown_columns[0])
        table.order = order.reversed()
        table.rearrange()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts its table by that column (again: reversed)."""
        table = event.data_table
        if isinstance(table, StoreTable) and event.column_key.value:
            table.order = clicked(table.order, event.column_key.value)
            table.call_later(table.rearrange)

    def action_filter(self) -> None:
        """Open the filter line for the focused table."""
        if self.focused is self.filter_bar:  # a / typed in the filter
            self.filter_bar.insert_text_at_cursor("/")
            return
        table = self._focused_table()
        if table is None:
            self.say("tab to a table to filter it", severity="warning")
            return
        self.filter_bar.open(table)

    def action_clear_filter(self) -> None:
        table = self._focused_table()
        if table is not None and table.filter_text:
            table.filter_text = ""
            table.rearrange()

    def on_input_changed(self, event: Input.Changed) -> None:
        table = self.filter_bar.target
        if event.input is self.filter_bar and table is not None:
            table.filter_text = event.value
            table.rearrange()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input is self.filter_bar:
            self.filter_bar.close()

    def on_runs_table_query_changed(self, message: RunsTable.QueryChanged) -> None:
        self.reload(again=True)


def run_top(db_path: str | Path) -> None:
    """Run the dashboard on ``db_path`` in this terminal until the user quits.

    Works before the database exists (it waits for the first ``agentos run`` to create
    it) and when nothing runs (it shows the last state).
    """
    TopApp(db_path).run()
