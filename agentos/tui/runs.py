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
    is long and what ``agentos replay`` takes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Timeline")]

    COLUMNS = (
        ("agent", "agent"),
        ("status", "status"),
        ("good", "good/wanted"),
        ("attempts", "tries"),
        ("started", "started"),
        ("took", "took"),
        ("id", "id"),
    )

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

    def show(self, runs: Sequence[RunRow], now: float) -> None:
        self.rows_by_key = {r.id: r for r in runs}
        self.replace_rows([(r.id, self._cells(r, now)) for r in runs])

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
