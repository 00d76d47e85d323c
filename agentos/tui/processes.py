"""The processes table: every agent and system process of the runtimes shown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from agentos.tui.format import STATE_STYLES, count, duration, rate
from agentos.tui.rows import ProcessRow
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

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows_by_key: dict[str, ProcessRow] = {}

    @property
    def selected(self) -> ProcessRow | None:
        key = self.selected_key
        return self.rows_by_key.get(key) if key is not None else None

    def show(self, processes: Sequence[ProcessRow]) -> None:
        self.rows_by_key = {p.key: p for p in processes}
        self.replace_rows([(p.key, self._cells(p)) for p in processes])

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
