"""The timeline of one run, inside the dashboard: prompts, answers, parses, errors, and the
engine and latency of every call, in the order they happened."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from agentos.errors import StoreError
from agentos.tui.data import StoreReader
from agentos.tui.format import STATE_STYLES, count, duration, when
from agentos.tui.messages import TimelineRead
from agentos.tui.timeline_data import Timeline

KIND_STYLES = {
    "run_started": "bold magenta",
    "run_finished": "bold magenta",
    "request": "bold blue",
    "answer": "bold cyan",
    "parsed": "bold green",
    "parse_error": "bold red",
    "error": "bold red",
    "call_failed": "bold red",
}
"""How an entry's headline is coloured, by its kind; other kinds are bold."""


class TimelineScreen(Screen[None]):
    """One run's timeline, scrollable; escape goes back to the dashboard.

    Read in a thread worker with its own read-only connection, and read again every
    ``refresh_s`` while the run is still running, so a live run's timeline grows.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]
    AUTO_FOCUS = "#timeline-scroll"

    def __init__(
        self,
        db_path: str | Path,
        run_id: str,
        *,
        clock: Callable[[], float],
        tz: tzinfo | None = None,
        refresh_s: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.clock = clock
        self.tz = tz
        self.refresh_s = refresh_s
        self.reader = StoreReader(db_path)
        self.timeline: Timeline | None = None
        self._reading = threading.Event()
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"run {self.run_id} — reading …", style="dim"), id="timeline-head")
        with VerticalScroll(id="timeline-scroll"):
            yield Static(id="timeline-body")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        if self.refresh_s:
            self._timer = self.set_interval(self.refresh_s, self.reload)

    def on_unmount(self) -> None:
        self.reader.close()

    def reload(self) -> None:
        if self._reading.is_set():
            return
        self._reading.set()
        self._read()

    @work(thread=True, group="timeline")
    def _read(self) -> None:
        try:
            timeline = self.reader.timeline(self.run_id)
        except StoreError as exc:
            self.post_message(TimelineRead(None, exc.message))
            return
        problem = None if timeline is not None else f"there is no run {self.run_id}"
        self.post_message(TimelineRead(timeline, problem))

    def on_timeline_read(self, message: TimelineRead) -> None:
        self._reading.clear()
        head = self.query_one("#timeline-head", Static)
        if message.timeline is None:
            head.update(Text(message.problem or "", style="yellow"))
            return
        timeline = message.timeline
        if timeline.run.status != "running" and self._timer is not None:
            self._timer.stop()
            self._timer = None
        if timeline == self.timeline:
            return
        self.timeline = timeline
        head.update(self.render_head(timeline))
        self.query_one("#timeline-body", Static).update(self.render_entries(timeline))

    def render_head(self, timeline: Timeline) -> Group:
        """Two lines that fit 80 columns: what the run is, then its timing and calls."""
        run = timeline.run
        wanted = count(run.wanted) if run.wanted is not None else "-"
        what = Text.assemble(
            ("run ", "dim"),
            (run.id, "bold"),
            "  ",
            (run.agent, "bold"),
            "  ",
            (run.status, f"bold {STATE_STYLES.get(run.status, '')}"),
            ("  good ", "dim"),
            f"{count(run.successes)}/{wanted}",
            ("  attempts ", "dim"),
            count(run.attempts),
        )
        failed_style = "red" if timeline.failed_calls else "dim"
        timing = Text.assemble(
            ("started ", "dim"),
            when(run.started_at, self.tz),
            ("  took ", "dim"),
            duration(run.took_s(self.clock())),
            ("  calls ", "dim"),
            count(timeline.calls),
            (f" ({count(timeline.failed_calls)} failed)", failed_style),
            ("  tokens ", "dim"),
            count(timeline.tokens),
        )
        parts = [what, timing]
        if run.error:
            parts.append(Text(f"error: {run.error}", style="red"))
        return Group(*parts)

    @staticmethod
    def render_entries(timeline: Timeline) -> Table:
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(justify="right", style="dim", no_wrap=True)
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column(ratio=1)
        for entry in timeline.entries:
            content = Text()
            content.append(entry.headline, style=KIND_STYLES.get(entry.kind, "bold"))
            if entry.body:
                content.append("\n")
                content.append(entry.body)
            grid.add_row(f"+{entry.offset_s:.2f}s", entry.attempt, content)
        if not timeline.entries:
            grid.add_row("", "", Text("no events recorded for this run", style="dim"))
        return grid
