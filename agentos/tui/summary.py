"""The global figures: jobs, requests, where the time went, what waits."""

from __future__ import annotations

from rich.text import Text
from textual.events import Resize
from textual.widgets import Static

from agentos.tui.format import count, duration
from agentos.tui.rows import Totals

LABELS = (
    "jobs done",
    "jobs failed",
    "waiting",
    "requests",
    "cost today",
    "uptime",
    "engines idle",
    "cache hits",
    "in requests",
    "planning",
)
"""The figures, most wanted first: a header too small for all keeps the first ones."""

GAP = "  "
"""Between one label / value pair and the next on a row."""


class Summary(Static):
    """The figures over the runtimes shown (see :class:`Totals`), as label / value pairs
    in aligned columns, filling the rows the widget is given (its CSS height) and its
    width: as many of :data:`LABELS` as fit, in that order, the rest left out (at 80×24,
    two rows: jobs done and failed, the queue, requests and batching, cost, uptime). The
    cost is today's, from the freshest snapshot that carries one.

    ``waiting X(+Y)`` is jobs in the router's prioritized queue plus the intake not yet
    sorted into it; ``requests`` carries jobs per request, which shows the batching.
    """

    def __init__(self, *, id: str | None = None) -> None:
        self.totals: Totals | None = None
        super().__init__(self.render_totals(None), id=id)

    def show(self, totals: Totals | None) -> None:
        self.totals = totals
        self.update(self.render_totals(totals, self.size.width, self.size.height))

    def on_resize(self, event: Resize) -> None:
        self.update(self.render_totals(self.totals, event.size.width, event.size.height))

    @staticmethod
    def values(t: Totals | None) -> list[str]:
        """The value of each of :data:`LABELS`; ``-`` before the first read."""
        if t is None:
            return ["-"] * len(LABELS)
        failed = count(t.jobs_failed)
        if t.retrying:
            failed += f" ({count(t.retrying)} retrying)"
        return [
            count(t.jobs_done),
            failed,
            f"{count(t.waiting)}(+{count(t.intake)})",
            f"{count(t.requests)} ({t.jobs_per_request:.2f} jobs/req)",
            t.cost_today,
            duration(t.uptime_s),
            duration(t.idle_s),
            count(t.cache_hits),
            duration(t.request_time_s),
            duration(t.planning_s),
        ]

    @classmethod
    def render_totals(cls, t: Totals | None, width: int = 0, rows: int = 0) -> Text:
        """The figures laid out in ``rows`` rows of ``width`` cells (0: not known yet, all
        figures three to a row)."""
        pairs = list(zip(LABELS, cls.values(t), strict=True))
        if width <= 0 or rows <= 0:
            return _grid(pairs, 3)
        for n in range(len(pairs), 0, -1):
            per_row = -(-n // rows)
            if _grid_width(pairs[:n], per_row) <= width:
                return _grid(pairs[:n], per_row)
        return _grid(pairs[:1], 1)


def _columns(pairs: list[tuple[str, str]], per_row: int) -> list[tuple[int, int]]:
    """Per column of the grid, the widest label and the widest value in it."""
    return [
        (
            max(len(label) for label, _ in pairs[c::per_row]),
            max(len(value) for _, value in pairs[c::per_row]),
        )
        for c in range(min(per_row, len(pairs)))
    ]


def _grid_width(pairs: list[tuple[str, str]], per_row: int) -> int:
    columns = _columns(pairs, per_row)
    return sum(label + 1 + value for label, value in columns) + len(GAP) * (len(columns) - 1)


def _grid(pairs: list[tuple[str, str]], per_row: int) -> Text:
    """``pairs`` row by row, ``per_row`` to a row, labels dim and values bold, each column
    as wide as its widest label and value."""
    columns = _columns(pairs, per_row)
    text = Text(no_wrap=True, overflow="crop")
    for start in range(0, len(pairs), per_row):
        if start:
            text.append("\n")
        row = pairs[start : start + per_row]
        for c, ((label, value), (label_width, value_width)) in enumerate(
            zip(row, columns, strict=False)
        ):
            last = c == len(row) - 1
            text.append(label.ljust(label_width) + " ", style="dim")
            text.append(value if last else value.ljust(value_width), style="bold")
            if not last:
                text.append(GAP)
    return text
