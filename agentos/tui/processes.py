"""The processes table: every agent and system process of the runtimes shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from agentos.tui.format import STATE_STYLES, count, duration, rate
from agentos.tui.rows import ProcessRow
from agentos.tui.sorting import arrange, present
from agentos.tui.table import Cell, StoreTable, number


class ProcessesTable(StoreTable):
    """One row per process: its state, runs, good / failed attempts and what it asked of
    the engines (requests, jobs, tokens and tokens per second over the last ten seconds,
    ``p50``/``p99`` of a job's time from submission to answer), ``wait``: how long its
    oldest job still queued in the router has waited (``0s``: none waits; yellow from
    5 s, and growing under load means the process is starved), and the average wait of
    its jobs.

    At 80 columns it shows what a glance needs: each process's state and progress (runs,
    good/failed attempts, jobs), whether it is starved (``wait``) and how fast it goes
    (``tok/s``); the other columns come back as the terminal widens.

    A system process has no runs; its run columns show ``-``.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Timeline")]

    COLUMNS = (
        ("name", "name"),
        ("kind", "kind"),
        ("state", "state"),
        ("runs", "runs"),
        ("results", "ok/failed"),
        ("requests", "reqs"),
        ("jobs", "jobs"),
        ("tokens", "tokens"),
        ("wait", "wait"),
        ("avg_wait", "avg wait"),
        ("tokens_per_s", "tok/s"),
        ("p50", "p50"),
        ("p99", "p99"),
        ("cost", "cost today"),
    )
    DROP_ORDER = (
        "avg_wait", "p99", "p50", "cost", "tokens", "requests", "kind", "tokens_per_s",
        "jobs", "wait", "runs",
    )  # fmt: skip
    EXPLAIN: ClassVar[dict[str, str]] = {
        "name": "The agent's name, or a system process such as background[embeddings] (with "
        "its runtime's pid in front when several runtimes show).",
        "kind": "agent, or system for agentos's own work (embeddings and the like).",
        "state": "An agent: running (a run in flight), paused (p, or 'paused (budget)' once "
        "its budget is spent), idle (waiting for its next fire), 'failing N' (its last N "
        "runs failed), or how its last run ended once it is done. A system process: running "
        "while it has jobs in the router, else idle.",
        "runs": "Runs of it this runtime started (finished and in flight); - for a system process.",
        "results": "Good results / failed attempts over those runs.",
        "requests": "Requests to engines that carried its jobs (a batch shared with other "
        "processes counts for each).",
        "jobs": "Its jobs answered (by an engine or from the cache).",
        "tokens": "Prompt and completion tokens of its answered jobs.",
        "wait": "How long its oldest job still in the router's queue has waited (0s: none "
        "waits; yellow from 5s; growing under load means it is starved).",
        "avg_wait": "The average time its jobs waited in the queue before their first request.",
        "tokens_per_s": "Its tokens answered per second, over the last ten seconds.",
        "p50": "Median time from a job's submission to its answer (queue wait included, "
        "cache hits not).",
        "p99": "99th percentile of the same times: the slow tail.",
        "cost": "Its cost today (local day) from the record at the runtime's prices, counted "
        "every 5s; 'no price' when none of its calls has a price, - when the runtime has no "
        "pricing.",
    }
    SORT_KEYS: ClassVar[dict[str, Callable[[ProcessRow], Any]]] = {
        "name": lambda p: p.label,
        "kind": lambda p: p.kind,
        "state": lambda p: p.state,
        "runs": lambda p: present(p.runs),
        "results": lambda p: (present(p.successes), present(p.failures)),
        "requests": lambda p: p.requests,
        "jobs": lambda p: p.jobs,
        "tokens": lambda p: p.tokens,
        "wait": lambda p: p.wait_s,
        "avg_wait": lambda p: p.avg_wait_s,
        "tokens_per_s": lambda p: p.tokens_per_s,
        "p50": lambda p: present(p.p50_s),
        "p99": lambda p: present(p.p99_s),
        "cost": lambda p: _cost_value(p.cost),
    }
    """What each column sorts by (the figure, not its text)."""
    TITLE = "processes"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows_by_key: dict[str, ProcessRow] = {}
        self.processes: Sequence[ProcessRow] = ()

    @property
    def selected(self) -> ProcessRow | None:
        key = self.selected_key
        return self.rows_by_key.get(key) if key is not None else None

    def show(self, processes: Sequence[ProcessRow]) -> None:
        """Show ``processes`` (filtered by name, kind or state, in the order picked)."""
        self.processes = processes
        shown = arrange(
            processes,
            self.order,
            self.SORT_KEYS,
            self.filter_text,
            lambda p: (p.label, p.kind, p.state),
        )
        self.rows_by_key = {p.key: p for p in shown}
        self.replace_rows([(p.key, self._cells(p)) for p in shown])
        self.border_title = self.title()

    def rearrange(self) -> None:
        self.show(self.processes)

    @staticmethod
    def _cells(p: ProcessRow) -> list[Cell]:
        results = (
            f"{count(p.successes)}/{count(p.failures)}"
            if p.successes is not None or p.failures is not None
            else "-"
        )
        return [
            p.label,
            p.kind,
            Text(p.state, style=STATE_STYLES.get(p.state.split(" ", 1)[0], "")),
            number(count(p.runs)),
            number(results),
            number(count(p.requests)),
            number(count(p.jobs)),
            number(count(p.tokens)),
            Text(duration(p.wait_s), justify="right", style="yellow" if p.wait_s >= 5 else ""),
            number(duration(p.avg_wait_s)),
            number(rate(p.tokens_per_s) if p.tokens_per_s else "0"),
            number(duration(p.p50_s)),
            number(duration(p.p99_s)),
            number(p.cost),
        ]


def _cost_value(shown: str) -> tuple[int, float]:
    """A cost cell's sort value: amounts by amount, above ``no price`` and ``-``."""
    try:
        return (2, float(shown))
    except ValueError:
        return (1 if shown == "no price" else 0, 0.0)
