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
from agentos.tui.timeline_data import PAGE_EVENTS, Timeline

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

STEP_WIDTH = 5
"""The step column (the event's ``seq``): 99,999 events fit; more widen their page."""


class TimelineScreen(Screen[None]):
    """One run's timeline, scrollable; escape goes back to the dashboard.

    Read in a thread worker with its own read-only connection, a page of
    :data:`~agentos.tui.timeline_data.PAGE_EVENTS` events at a time: the first on opening,
    the next when the user scrolls within a screen of the end or presses ``m``, so a run
    of any length opens at once. Each page is added below the others as its own widget
    (nothing already shown is rendered again). While the run is running, every
    ``refresh_s`` the head is read again, and so are new events once all the earlier ones
    are shown, so a live run's timeline grows.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "more", "More"),
    ]
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
        """The last page read (its head figures are the run's latest)."""
        self.shown = 0
        """How many of the run's events are shown so far."""
        self.pages = 0
        """How many pages with entries are shown."""
        self._reading = threading.Event()
        self._timer: Timer | None = None
        self._asked_at = -1
        """The height of what was shown when scrolling last asked for a page."""

    def compose(self) -> ComposeResult:
        yield Static(Text(f"run {self.run_id} — reading …", style="dim"), id="timeline-head")
        with VerticalScroll(id="timeline-scroll"):
            yield Static(id="timeline-body")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        if self.refresh_s:
            self._timer = self.set_interval(self.refresh_s, self._tick)
        self.watch(self.query_one("#timeline-scroll"), "scroll_y", self._near_end, init=False)

    def on_unmount(self) -> None:
        self.reader.close()

    def load(self, limit: int = PAGE_EVENTS) -> None:
        """Read the next page (``limit`` 0: only the head), unless a read is running."""
        if self._reading.is_set():
            return
        self._reading.set()
        self._read(self.timeline, limit)

    def reload(self) -> None:
        """What the refresh timer does (see :meth:`_tick`); kept for callers and tests."""
        self._tick()

    def _tick(self) -> None:
        timeline = self.timeline
        if timeline is None:
            self.load()  # not read yet, or no such run yet
        elif timeline.run.status == "running":
            self.load(0 if timeline.more else PAGE_EVENTS)

    def action_more(self) -> None:
        """The next page, if there is one."""
        if self.timeline is not None and self.timeline.more:
            self.load()
        elif self.timeline is not None:
            self.notify(f"all {count(self.timeline.events)} events are shown", markup=False)

    def _near_end(self) -> None:
        """Within a screen of the end of what is shown: read the next page, once the last
        one asked for this way has been laid out (a scroll that goes on meanwhile, such as
        ``end``'s animation, still sees the old end and would ask again and again)."""
        scroll = self.query_one("#timeline-scroll", VerticalScroll)
        if self.timeline is None or not self.timeline.more:
            return
        height = scroll.virtual_size.height
        if height <= self._asked_at:
            return
        if scroll.max_scroll_y - scroll.scroll_y <= scroll.size.height:
            self._asked_at = height
            self.load()

    @work(thread=True, group="timeline")
    def _read(self, after: Timeline | None, limit: int) -> None:
        try:
            timeline = self.reader.timeline(self.run_id, after=after, limit=limit)
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
        first = self.timeline is None
        self.timeline = timeline
        if timeline.run.status != "running" and self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.shown += sum(e.step is not None for e in timeline.entries)
        head.update(self.render_head(timeline))
        if first:
            self.query_one("#timeline-body", Static).update(self.render_entries(timeline))
        elif timeline.entries:
            page = Static(self.render_entries(timeline), classes="timeline-page")
            self.query_one("#timeline-scroll", VerticalScroll).mount(page)
        self.pages += bool(timeline.entries)
        self.call_after_refresh(self._short)

    def _short(self) -> None:
        """What is shown does not fill the screen (nothing to scroll): read the next page.
        Otherwise the next page waits for the user to scroll or ask."""
        if self.query_one("#timeline-scroll", VerticalScroll).max_scroll_y == 0:
            self._near_end()

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
        if timeline.more:
            parts.append(
                Text.assemble(
                    ("events ", "dim"),
                    f"{count(self.shown)} of {count(timeline.events)} shown",
                    (" · scroll down or m for more", "dim"),
                )
            )
        if run.error:
            parts.append(Text(f"error: {run.error}", style="red"))
        return Group(*parts)

    @staticmethod
    def render_entries(timeline: Timeline) -> Table:
        """A page's entries; the columns have fixed widths, so that pages line up."""
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(justify="right", style="dim", no_wrap=True, min_width=STEP_WIDTH)
        grid.add_column(justify="right", style="dim", no_wrap=True, min_width=7)
        grid.add_column(style="cyan", no_wrap=True, min_width=4)
        grid.add_column(ratio=1)
        for entry in timeline.entries:
            content = Text()
            content.append(entry.headline, style=KIND_STYLES.get(entry.kind, "bold"))
            if entry.body:
                content.append("\n")
                style = "dim italic" if entry.body.startswith("same prompt as step") else ""
                content.append(entry.body, style=style)
            step = str(entry.step) if entry.step is not None else ""
            grid.add_row(step, f"+{entry.offset_s:.2f}s", entry.attempt, content)
        if not timeline.entries:
            grid.add_row("", "", "", Text("no events recorded for this run", style="dim"))
        return grid
