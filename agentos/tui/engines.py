"""The engines table: where the requests went and how each engine spent its time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text

from agentos.tui.format import count, duration, percent, rate, size
from agentos.tui.rows import EngineRow
from agentos.tui.sorting import arrange, present
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
    EXPLAIN: ClassVar[dict[str, str]] = {
        "engine": "The engine's name in the config (with its runtime's pid in front when "
        "several runtimes show).",
        "state": "idle, or busy - N: N requests to it are in flight right now.",
        "max": "The most requests the router keeps in flight on it / the most prompts it "
        "batches into one request (max_requests / max_batch_size); 'L of M' when a 429 made "
        "the router lower the limit to L (each L answers since win one back).",
        "done": "Requests sent to it (answered or failed) / jobs it answered (one batched "
        "request answers several jobs).",
        "busy": "Wall time with at least one request in flight since it came up (never a sum "
        "of overlapping requests).",
        "idle": "Time since it came up with no request in flight (busy + idle = its uptime).",
        "wasted": "The summed durations of its failed requests (each was paid for).",
        "failed": "Failed requests / jobs that ended failed with their last attempt here; "
        "then the circuit breaker when it is not closed (open: no traffic for a cooldown, "
        "probing: a test request decides).",
        "p50": "Median latency of its answered requests since the runtime started (a batch "
        "counts once; within 12%, from a histogram).",
        "p99": "99th percentile of the same latencies: the slow tail.",
        "tokens_per_s": "Prompt and completion tokens it answered per second, over the last "
        "ten seconds.",
        "cpu": "CPU of the model server agentos started for it (100% = one core); - for an "
        "engine agentos did not start.",
        "mem": "Resident memory of that model server; - for an engine agentos did not start.",
        "endpoint": "Where its requests go.",
    }
    SORT_KEYS: ClassVar[dict[str, Callable[[EngineRow], Any]]] = {
        "engine": lambda e: e.label,
        "state": lambda e: e.state,
        "max": lambda e: (e.max_requests, e.max_batch_size),
        "done": lambda e: (e.requests, e.jobs),
        "busy": lambda e: e.busy_s,
        "idle": lambda e: e.idle_s,
        "wasted": lambda e: e.wasted_s,
        "failed": lambda e: (e.failed_requests, e.failed_jobs),
        "p50": lambda e: present(e.p50_s),
        "p99": lambda e: present(e.p99_s),
        "tokens_per_s": lambda e: e.tokens_per_s,
        "cpu": lambda e: present(e.cpu_pct),
        "mem": lambda e: present(e.rss_bytes),
        "endpoint": lambda e: e.endpoint,
    }
    """What each column sorts by (the figure, not its text)."""
    TITLE = "engines"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.engines: Sequence[EngineRow] = ()

    def show(self, engines: Sequence[EngineRow]) -> None:
        """Show ``engines`` (filtered by name or state, in the order picked)."""
        self.engines = engines
        shown = arrange(
            engines, self.order, self.SORT_KEYS, self.filter_text, lambda e: (e.label, e.state)
        )
        self.replace_rows([(e.key, self._cells(e)) for e in shown])
        self.border_title = self.title()

    def rearrange(self) -> None:
        self.show(self.engines)

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
