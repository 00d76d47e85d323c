"""What ``agentos sinks`` shows: each sink's depth, its readers' progress, and its rates.

Read-only: works on a store opened ``readonly`` while a runtime writes (WAL), and from
any process. Rates are counts over a trailing window divided by its minutes (published:
items created; consumed: deliveries marked done), so they read as "per minute, lately".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import JustifyMethod
from rich.table import Table

from agentos.store import Store

if TYPE_CHECKING:
    from agentos.spec.agents import AgentSpec

RATE_WINDOWS_MIN: tuple[int, int] = (5, 60)
"""The trailing windows, in minutes, that rates are given for."""

_ITEMS = """
SELECT sink, count(*), max(created_at),
       sum(created_at >= :since_short), sum(created_at >= :since_long)
FROM sink_items GROUP BY sink
"""

_DELIVERIES = """
SELECT i.sink, d.consumer,
       sum(d.status = 'done'), sum(d.status = 'failed'),
       sum(d.status = 'claimed' AND d.lease_until > :now),
       sum(d.status = 'done' AND d.done_at >= :since_short),
       sum(d.status = 'done' AND d.done_at >= :since_long)
FROM sink_deliveries AS d JOIN sink_items AS i ON i.id = d.item_id
GROUP BY i.sink, d.consumer
"""

_OLDEST_PENDING = """
SELECT min(i.created_at) FROM sink_items AS i
WHERE i.sink = ? AND NOT EXISTS (
  SELECT 1 FROM sink_deliveries AS d
  WHERE d.item_id = i.id AND d.consumer = ? AND d.status IN ('done', 'failed'))
"""


def sink_readers(agents: Iterable[AgentSpec]) -> dict[str, list[str]]:
    """Every sink the agents name (as input or output), with the agents that read it, in
    file order; pass it to :func:`sink_stats` so sinks and readers with no traffic yet
    are shown too."""
    readers: dict[str, list[str]] = {}
    for agent in agents:
        if agent.output_sink:
            readers.setdefault(agent.output_sink, [])
        if agent.input_sink:
            readers.setdefault(agent.input_sink, []).append(agent.name)
    return readers


def sink_stats(
    store: Store,
    *,
    readers: Mapping[str, Iterable[str]] | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """One row per sink, by name: its items, depth, progress per consumer and rates.

    Consumers are those that ever claimed from the sink plus ``readers[sink]``. Per
    consumer: ``pending`` (items it has not finished, ``in_flight`` ones included),
    ``in_flight`` (under a live lease), ``done``, ``failed``, ``oldest_pending_age_s``,
    ``consumed_per_min_5m`` / ``_60m``. Per sink: ``items``, the consumers' sums, the
    oldest pending age among them, ``last_published_at``, ``published_per_min_5m`` /
    ``_60m`` and ``consumed_per_min_5m`` / ``_60m``. A sink nobody reads counts all its
    items as pending.
    """
    now = time.time() if now is None else now
    short, long = RATE_WINDOWS_MIN
    params = {"now": now, "since_short": now - short * 60, "since_long": now - long * 60}
    sinks: dict[str, dict[str, Any]] = {}

    def sink_row(name: str) -> dict[str, Any]:
        return sinks.setdefault(
            name,
            {
                "sink": name,
                "items": 0,
                "last_published_at": None,
                "published_per_min_5m": 0.0,
                "published_per_min_60m": 0.0,
                "_consumers": {},
            },
        )

    def consumer_row(sink: str, consumer: str) -> dict[str, Any]:
        consumers: dict[str, dict[str, Any]] = sink_row(sink)["_consumers"]
        return consumers.setdefault(
            consumer,
            {
                "consumer": consumer,
                "done": 0,
                "failed": 0,
                "in_flight": 0,
                "consumed_per_min_5m": 0.0,
                "consumed_per_min_60m": 0.0,
            },
        )

    for sink, items, last, recent_short, recent_long in store.db.execute(_ITEMS, params):
        row = sink_row(sink)
        row.update(
            items=items,
            last_published_at=last,
            published_per_min_5m=(recent_short or 0) / short,
            published_per_min_60m=(recent_long or 0) / long,
        )
    for sink, consumer, done, failed, in_flight, done_short, done_long in store.db.execute(
        _DELIVERIES, params
    ):
        consumer_row(sink, consumer).update(
            done=done or 0,
            failed=failed or 0,
            in_flight=in_flight or 0,
            consumed_per_min_5m=(done_short or 0) / short,
            consumed_per_min_60m=(done_long or 0) / long,
        )
    for sink, names in (readers or {}).items():
        sink_row(sink)
        for name in names:
            consumer_row(sink, name)

    out: list[dict[str, Any]] = []
    for name in sorted(sinks):
        row = sinks[name]
        by_name: dict[str, dict[str, Any]] = row.pop("_consumers")
        consumers = [by_name[c] for c in sorted(by_name)]
        for c in consumers:
            c["pending"] = row["items"] - c["done"] - c["failed"]
            c["oldest_pending_age_s"] = _oldest_pending_age(store, name, c["consumer"], now)
        if consumers:
            ages = [
                c["oldest_pending_age_s"]
                for c in consumers
                if c["oldest_pending_age_s"] is not None
            ]
            row["oldest_pending_age_s"] = max(ages, default=None)
        else:
            oldest = store.db.execute(
                "SELECT min(created_at) FROM sink_items WHERE sink = ?", [name]
            ).fetchone()[0]
            row["oldest_pending_age_s"] = None if oldest is None else max(0.0, now - oldest)
        row["pending"] = sum(c["pending"] for c in consumers) if consumers else row["items"]
        for key in ("in_flight", "done", "failed", "consumed_per_min_5m", "consumed_per_min_60m"):
            row[key] = sum(c[key] for c in consumers)
        row["consumers"] = consumers
        out.append(row)
    return out


def _oldest_pending_age(store: Store, sink: str, consumer: str, now: float) -> float | None:
    oldest = store.db.execute(_OLDEST_PENDING, [sink, consumer]).fetchone()[0]
    return None if oldest is None else max(0.0, now - oldest)


def _age(seconds: float | None) -> str:
    from agentos.tui.format import duration

    return duration(seconds)


def _rates(short: float, long: float) -> str:
    return f"{short:.1f} · {long:.1f}"


def sinks_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """:func:`sink_stats` rows as a table: one line per reader of each sink, the sink's own
    figures on its first line; rates per minute over the last 5 · 60 minutes."""
    table = Table(box=None, header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("sink", "left"),
        ("items", "right"),
        ("published/min", "right"),
        ("reader", "left"),
        ("pending", "right"),
        ("in flight", "right"),
        ("done", "right"),
        ("failed", "right"),
        ("oldest pending", "right"),
        ("done/min", "right"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row in rows:
        sink_cells = [
            str(row["sink"]),
            str(row["items"]),
            _rates(row["published_per_min_5m"], row["published_per_min_60m"]),
        ]
        blank = ["", "", ""]
        consumers = list(row["consumers"])
        if not consumers:
            table.add_row(
                *sink_cells,
                "[dim](no reader)[/]",
                str(row["pending"]),
                "0",
                "0",
                "0",
                _age(row["oldest_pending_age_s"]),
                "-",
            )
            continue
        for index, c in enumerate(consumers):
            failed = str(c["failed"]) if not c["failed"] else f"[red]{c['failed']}[/]"
            table.add_row(
                *(sink_cells if index == 0 else blank),
                str(c["consumer"]),
                str(c["pending"]),
                str(c["in_flight"]),
                str(c["done"]),
                failed,
                _age(c["oldest_pending_age_s"]),
                _rates(c["consumed_per_min_5m"], c["consumed_per_min_60m"]),
            )
    return table
