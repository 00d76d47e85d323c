"""The global figures: jobs, requests, where the time went, what waits."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from agentos.tui.format import count, duration
from agentos.tui.rows import Totals

LABELS = (
    "jobs done",
    "requests",
    "in requests",
    "waiting",
    "planning",
    "engines idle",
    "uptime",
    "jobs failed",
    "cache hits",
    "cost today",
)
"""The figures, in reading order (three to a row)."""
PER_ROW = 3

EXPLAIN = {
    "jobs done": "Jobs answered (by an engine or from the cache) since the runtimes shown "
    "started, summed over them.",
    "requests": "Requests sent to engines; (N jobs/req) is jobs answered by an engine per "
    "request, above 1 when prompts were batched.",
    "in requests": "Summed over the engines, the wall time each had a request in flight "
    "(their busy column).",
    "waiting": "X(+Y): jobs in the router's prioritized queue, plus the intake not yet "
    "sorted into it.",
    "planning": "Time the router spent planning batches (choosing which jobs go together "
    "to which engine).",
    "engines idle": "Summed over the engines, the time with no request in flight.",
    "uptime": "How long the longest-running runtime shown has been up.",
    "jobs failed": "Jobs that ended failed; (N retrying): jobs waiting for a retry after a "
    "failed request.",
    "cache hits": "Jobs answered from the cache, without an engine.",
    "cost today": "Today's cost (local day) at the runtime's prices, from the freshest "
    "snapshot that counts it; * when some calls have no price, - when no runtime shown "
    "has pricing.",
}
"""One sentence per figure, for the help screen (:mod:`agentos.tui.help`)."""


class Summary(Static):
    """Four rows of figures over the runtimes shown (see :class:`Totals`); the cost is
    today's, from the freshest snapshot that carries one.

    ``waiting X(+Y)`` is jobs in the router's prioritized queue plus the intake not yet
    sorted into it; ``requests`` carries jobs per request, which shows the batching.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.render_totals(None), id=id)

    def show(self, totals: Totals | None) -> None:
        self.update(self.render_totals(totals))

    @staticmethod
    def render_totals(t: Totals | None) -> Table:
        """A grid of label / value pairs, three to a row; ``-`` before the first read."""
        if t is None:
            values = ["-"] * len(LABELS)
        else:
            failed = count(t.jobs_failed)
            if t.retrying:
                failed += f" ({count(t.retrying)} retrying)"
            values = [
                count(t.jobs_done),
                f"{count(t.requests)} ({t.jobs_per_request:.2f} jobs/req)",
                duration(t.request_time_s),
                f"{count(t.waiting)}(+{count(t.intake)})",
                duration(t.planning_s),
                duration(t.idle_s),
                duration(t.uptime_s),
                failed,
                count(t.cache_hits),
                t.cost_today,
            ]
        grid = Table.grid(padding=(0, 1))
        for n in range(PER_ROW):
            grid.add_column(style="dim", no_wrap=True)
            grid.add_column(style="bold", no_wrap=True, min_width=6)
            if n < PER_ROW - 1:
                grid.add_column(width=1)
        for start in range(0, len(LABELS), PER_ROW):
            row: list[str] = []
            for label, value in zip(
                LABELS[start : start + PER_ROW], values[start : start + PER_ROW], strict=True
            ):
                row += [label, value, ""]
            grid.add_row(*row[:-1])
        return grid
