"""The recent runs table, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from agentos.tui.format import STATE_STYLES, clock_or_date, count, duration
from agentos.tui.rows import RunRow
from agentos.tui.table import Cell, StoreTable, number


class RunsTable(StoreTable):
    """One row per recent run: ``good/wanted`` results, attempts made, when it started
    and how long it took (so far, while it runs). The id comes last, in full, because it
    is long and what ``agentos replay`` takes; it is the first column to go when the
    terminal is narrow (80 columns), then the tries and the start time (the timeline,
    ``enter``, shows them all).

    Two ways to show new runs, chosen by where the user is. While the focus is elsewhere
    the table follows the newest runs, like htop's list before a process is picked: the
    top is shown and the cursor stays on the first line, whatever run comes there. Once
    the user is in the table (tab), the run they are on is theirs: it stays highlighted on
    the same screen line while newer runs come in above the top edge (the title says how
    many; ``home`` goes to them), so a ``c`` pressed a moment after a refresh still means
    the run that was under the eye, and the confirmation names it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Timeline"),
        Binding("home", "scroll_top", "Newest", show=False),
    ]

    COLUMNS = (
        ("agent", "agent"),
        ("status", "status"),
        ("good", "good/wanted"),
        ("attempts", "tries"),
        ("started", "started"),
        ("took", "took"),
        ("id", "id"),
    )
    DROP_ORDER = ("id", "attempts", "started")

    def __init__(
        self, *, tz: tzinfo | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.tz = tz
        self.rows_by_key: dict[str, RunRow] = {}

    @property
    def selected(self) -> RunRow | None:
        key = self.selected_key
        return self.rows_by_key.get(key) if key is not None else None

    def follows_top(self) -> bool:
        return self.screen.focused is not self

    def show(self, runs: Sequence[RunRow], now: float) -> None:
        self.rows_by_key = {r.id: r for r in runs}
        self.replace_rows([(r.id, self._cells(r, now)) for r in runs])
        self.call_after_refresh(self._say_newer)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._say_newer()

    def _say_newer(self) -> None:
        """Say in the title how many runs are above the top edge."""
        above = round(self.scroll_y)
        self.border_title = "recent runs" + (f" · ↑ {above} newer (home)" if above else "")

    def _cells(self, r: RunRow, now: float) -> list[Cell]:
        wanted = count(r.wanted) if r.wanted is not None else "-"
        return [
            r.agent,
            Text(r.status, style=STATE_STYLES.get(r.status, "")),
            number(f"{count(r.successes)}/{wanted}"),
            number(count(r.attempts)),
            clock_or_date(r.started_at, now, self.tz),
            number(duration(r.took_s(now))),
            Text(r.id, style="dim"),
        ]
