"""The engines table: where the requests went and how each engine spent its time."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from agentos.tui.format import count, duration, percent, rate, size
from agentos.tui.rows import EngineRow
from agentos.tui.table import Cell, StoreTable, number


class EnginesTable(StoreTable):
    """One row per engine of every runtime shown.

    ``max r/b`` is the engine's max requests in flight / max prompts per request (with the
    lower limit the router applies after rate limiting, when there is one); ``failed r/j``
    is failed requests / jobs that ended failed there, plus the circuit breaker's state
    when it is not closed. ``p50``/``p99`` are request latencies since the runtime
    started, ``tok/s`` the tokens answered per second over the last ten seconds, ``cpu``
    and ``mem`` the model server's when agentos started it (``-`` for other engines).
    The endpoint comes last: it is long and rarely what one scans.

    At 80 columns it shows whether each engine is busy, its limits, what it served, its
    failures and circuit, its median latency and rate; the other columns come back as
    the terminal widens, the endpoint last.
    """

    COLUMNS = (
        ("engine", "engine"),
        ("state", "state"),
        ("max", "max r/b"),
        ("done", "req/jobs"),
        ("busy", "busy"),
        ("idle", "idle"),
        ("wasted", "wasted"),
        ("failed", "failed r/j"),
        ("p50", "p50"),
        ("p99", "p99"),
        ("tokens_per_s", "tok/s"),
        ("cpu", "cpu"),
        ("mem", "mem"),
        ("endpoint", "endpoint"),
    )
    DROP_ORDER = (
        "endpoint", "wasted", "idle", "mem", "cpu", "p99", "p50", "busy", "max",
        "tokens_per_s", "done",
    )  # fmt: skip

    def show(self, engines: Sequence[EngineRow]) -> None:
        self.replace_rows([(e.key, self._cells(e)) for e in engines])

    @staticmethod
    def _cells(e: EngineRow) -> list[Cell]:
        limit = f"{e.limit} of " if e.limit < e.max_requests else ""
        failed = Text(f"{count(e.failed_requests)}/{count(e.failed_jobs)}", justify="right")
        if e.circuit != "closed":
            failed.append(f" {e.circuit}", style="bold red")
        elif e.failed_requests:
            failed.stylize("yellow")
        state = Text(e.state, style="green" if e.state.startswith("busy") else "")
        return [
            e.label,
            state,
            number(f"{limit}{e.max_requests}/{e.max_batch_size}"),
            number(f"{count(e.requests)}/{count(e.jobs)}"),
            number(duration(e.busy_s)),
            number(duration(e.idle_s)),
            number(duration(e.wasted_s)),
            failed,
            number(duration(e.p50_s)),
            number(duration(e.p99_s)),
            number(rate(e.tokens_per_s) if e.tokens_per_s else "0"),
            number(percent(e.cpu_pct)),
            number(size(e.rss_bytes)),
            e.endpoint,
        ]
