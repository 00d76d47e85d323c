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
from textual.widgets import DataTable, Footer

from agentos.errors import StoreError
from agentos.tui.commands import send_command
from agentos.tui.confirm import ConfirmCancel
from agentos.tui.data import StoreReader, ThroughputMeter
from agentos.tui.engines import EnginesTable
from agentos.tui.messages import CommandSent, ViewRead
from agentos.tui.nodes import NodesTable
from agentos.tui.nodes_line import NodesLine
from agentos.tui.processes import ProcessesTable
from agentos.tui.rows import RunRow, TopView
from agentos.tui.runs import RunsTable
from agentos.tui.status import AttachStatus
from agentos.tui.summary import Summary
from agentos.tui.throughput import Throughput
from agentos.tui.timeline import TimelineScreen

REFRESH_S = 1.0
"""How often the dashboard reads the store (runtimes write their snapshots every 0.5 s)."""

NOT_DONE_AFTER_S = 10.0
"""A command no runtime has marked done this long after it was sent is reported as such
(runtimes poll twice a second, and leave commands for agents they do not run)."""


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
        Binding("p", "command('pause')", "Pause"),
        Binding("r", "command('resume')", "Resume"),
        Binding("c", "cancel_run", "Cancel run"),
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
        yield Footer()

    def on_mount(self) -> None:
        self.engines.border_title = "engines"
        self.nodes.border_title = "nodes"
        self.processes.border_title = "processes"
        self.runs.border_title = "recent runs"
        self.reload()
        if self.refresh_s:
            self.set_interval(self.refresh_s, self.reload)

    def on_unmount(self) -> None:
        self.reader.close()

    # -- reading ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Start a read of the store, unless one is still running."""
        if self._reading.is_set():
            return
        self._reading.set()
        self._read(self.clock(), tuple(self.pending))

    @work(thread=True, group="read")
    def _read(self, now: float, watch: tuple[int, ...]) -> None:
        self.post_message(ViewRead(self.reader.read(now, watch)))

    def on_view_read(self, message: ViewRead) -> None:
        self._reading.clear()
        if not self.is_running:  # a read that ended while the app closes: nothing to show
            return
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
        """No second command while the cancel confirmation is open."""
        confirming = isinstance(self.screen, ConfirmCancel)
        return not (confirming and action in ("command", "cancel_run"))

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
            return self.runs.rows_by_key.get(process.run_id)
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
            now = self.runs.rows_by_key.get(run.id, run)
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
            run_id = event.row_key.value
        elif isinstance(event.data_table, ProcessesTable):
            process = event.data_table.selected
            run_id = process.run_id if process else None
        if run_id:
            self.push_screen(
                TimelineScreen(
                    self.db_path, run_id, clock=self.clock, tz=self.tz, refresh_s=self.refresh_s
                )
            )


def run_top(db_path: str | Path) -> None:
    """Run the dashboard on ``db_path`` in this terminal until the user quits.

    Works before the database exists (it waits for the first ``agentos run`` to create
    it) and when nothing runs (it shows the last state).
    """
    TopApp(db_path).run()
