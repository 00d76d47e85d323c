"""The runs table's query: one page of ``runs`` in the order and under the filter the user
picked, with a perpetual agent's runs grouped.

The table lists a table that grows without bound (a perpetual agent adds a run every few
seconds), so its order and filter are SQL, not a sort of the rows already shown: a table
filtered to ``failed`` shows the failed runs however old, not those among the latest page.

Grouping folds *consecutive* runs (in the order shown, after the filter) of one agent that
ended with one status into one :class:`~agentos.tui.rows.RunGroup` (``ticker ×1,160
succeeded``), so that one busy agent does not bury everything else. Running runs are never
grouped (nor those shown crashed): they are the ones a user pauses or cancels, and there
are few at a time; nor are fewer than :data:`MIN_GROUP` runs, nor any when the table is
sorted by a figure (:data:`GROUPING_ORDERS`). The page is
:data:`~agentos.tui.data.RECENT_RUNS` lines; the rows are read in order and folded as they
come, stopping once the page is full, so a read costs the runs its groups cover, at most
:data:`SCAN_LIMIT`.

A ``running`` row whose process is gone is shown ``crashed`` (as
:func:`agentos.store.owners.crashed_view` would leave it), and the filter applies to the
status shown: the SQL lets running rows through when ``crashed`` matches the filter, and
the rows read are matched again once their status is known.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from agentos.store import owners
from agentos.store.db import Store
from agentos.tui.rows import RunEntry, RunGroup, RunRow, run_row
from agentos.tui.sorting import SortOrder, matches

DEFAULT_ORDER: Final = SortOrder("started", descending=True)
"""Newest first: the only order under which the table follows the newest runs."""

ORDER_SQL: Final = {
    "agent": "agent",
    "status": "status",
    "good": "successes",
    "attempts": "attempts",
    "started": "started_at",
    "took": "COALESCE(finished_at, :now) - started_at",
    "id": "id",
    "node": "node",
}
"""The SQL each column of the runs table sorts by (ties: newest first)."""

SCAN_LIMIT: Final = 5_000
"""The most rows one read folds into groups; a group cut there shows its count with a +
(``ticker ×5,000+``). Reading and folding costs about 10 µs a row on a small machine
(mostly SQLite's lookups by the started_at index), and the dashboard reads every second:
5,000 rows is 50 ms at worst, when one agent's streak is that long."""

GROUPING_ORDERS: Final = frozenset({"started", "agent", "status", "node"})
"""The orders that group: those where an agent's runs come in the order they ran. Sorted
by a figure (took, tries, good) or the id, neighbours are alike by chance, and each run
is a row."""

MIN_GROUP: Final = 3
"""The fewest runs folded into a group: two alike in a row stay two rows (folding them
would save one line and hide one run)."""

CHUNK: Final = 512

COLUMNS: Final = (
    "id, agent, status, started_at, finished_at, error, wanted, successes, attempts, owner"
)
"""What a row of the table needs (``owner``: to tell a crashed run)."""


@dataclass(frozen=True, slots=True)
class RunsQuery:
    """What the runs table asks of the store."""

    order: SortOrder = DEFAULT_ORDER
    text: str = ""
    """The filter: runs whose agent or status contains it (any case); empty: all."""
    grouped: bool = True
    expanded: frozenset[str] = field(default_factory=frozenset)
    """Keys of the groups shown run by run (:attr:`RunGroup.key`)."""


def has_node_column(conn: sqlite3.Connection) -> bool:
    """Whether ``runs`` records the cluster node a run ran on (issue 15's migration)."""
    return any(row[1] == "node" for row in conn.execute("PRAGMA table_info(runs)"))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _select(query: RunsQuery, now: float, node: bool) -> tuple[str, dict[str, Any]]:
    columns = COLUMNS + (", node" if node else "")
    params: dict[str, Any] = {"now": now}
    sql = f"SELECT {columns} FROM runs"
    text = query.text.strip()
    if text:
        params["like"] = _like(text)
        alternatives = ["agent LIKE :like ESCAPE '\\'", "status LIKE :like ESCAPE '\\'"]
        if matches(text, ["crashed"]):
            alternatives.append("status = 'running'")
        sql += " WHERE " + " OR ".join(alternatives)
    column = query.order.column or DEFAULT_ORDER.column
    if column == "node" and not node:
        column = DEFAULT_ORDER.column
    expression = ORDER_SQL[column or "started"]
    direction = "DESC" if query.order.descending else "ASC"
    sql += f" ORDER BY {expression} {direction}, started_at DESC, id DESC"
    return sql, params


Row = tuple[Any, ...]
"""A ``runs`` row as read, in the order of :data:`COLUMNS` (then ``node``, if any)."""

ID, AGENT, STATUS, STARTED, FINISHED = 0, 1, 2, 3, 4
WANTED, SUCCESSES, ATTEMPTS, NODE = 6, 7, 8, 10


def _rows(store: Store, query: RunsQuery, now: float) -> Iterator[tuple[list[str], Row | RunRow]]:
    """The runs the query selects, in its order: a running run as a :class:`RunRow` as
    shown (``crashed`` when its process is gone), filtered again by that status; any
    other as the row read (the SQL filter was exact for it). Only running rows are
    turned into dicts and values here, so that folding a long streak costs little."""
    conn: sqlite3.Connection = store.db.conn
    sql, params = _select(query, now, has_node_column(conn))
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    while chunk := cursor.fetchmany(CHUNK):
        running = [dict(zip(names, r, strict=True)) for r in chunk if r[STATUS] == "running"]
        shown = {row["id"]: row for row in owners.crashed_view(store, running, now=now)}
        for values in chunk:
            row = shown.get(values[ID])
            if row is None:
                yield names, values
            elif matches(query.text, (row["agent"], row["status"])):
                yield names, run_row(row)


def _run(names: list[str], values: Row) -> RunRow:
    return run_row(dict(zip(names, values, strict=True)))


class _Streak:
    """Consecutive finished runs of one agent with one status, being read."""

    __slots__ = ("names", "rows")

    def __init__(self, names: list[str], row: Row) -> None:
        self.names = names
        self.rows = [row]

    def takes(self, row: Row) -> bool:
        first = self.rows[0]
        return row[STATUS] == first[STATUS] and row[AGENT] == first[AGENT]

    def entries(self, query: RunsQuery, complete: bool = True) -> list[RunEntry]:
        rows, names = self.rows, self.names
        if len(rows) < MIN_GROUP and complete:
            return [_run(names, row) for row in rows]
        oldest = min(rows, key=lambda r: (r[STARTED], r[ID]))
        latest = max(rows, key=lambda r: (r[STARTED], r[ID]))
        key = f"group:{oldest[ID]}"
        finished = [r[FINISHED] for r in rows if r[FINISHED] is not None]
        wanted = [r[WANTED] for r in rows if r[WANTED] is not None]
        node = len(names) > NODE
        expanded = key in query.expanded
        group = RunGroup(
            key=key,
            agent=rows[0][AGENT],
            status=rows[0][STATUS],
            count=len(rows),
            first_started_at=oldest[STARTED],
            last_started_at=latest[STARTED],
            last_finished_at=max(finished) if len(finished) == len(rows) else None,
            successes=sum(r[SUCCESSES] or 0 for r in rows),
            wanted=sum(wanted) if wanted else None,
            attempts=sum(r[ATTEMPTS] or 0 for r in rows),
            nodes=tuple(sorted({str(r[NODE]) for r in rows if r[NODE]})) if node else (),
            latest=_run(names, latest),
            expanded=expanded,
            members=tuple(_run(names, r) for r in rows) if expanded else (),
            complete=complete,
        )
        return [group]


def lines(entry: RunEntry) -> int:
    """How many lines of the table ``entry`` takes."""
    return 1 + len(entry.members) if isinstance(entry, RunGroup) else 1


def read_runs(
    store: Store, query: RunsQuery, now: float, *, limit: int, scan_limit: int = SCAN_LIMIT
) -> tuple[RunEntry, ...]:
    """The page of the runs table: about ``limit`` lines (an expanded group that starts
    on the page is shown whole), newest first unless the query orders otherwise."""
    grouping = query.grouped and query.order.column in GROUPING_ORDERS
    entries: list[RunEntry] = []
    shown = 0
    streak: _Streak | None = None
    scanned = 0
    for names, row in _rows(store, query, now):
        scanned += 1
        if scanned > scan_limit:
            break
        if streak is not None and grouping and isinstance(row, tuple) and streak.takes(row):
            streak.rows.append(row)
            continue
        if streak is not None:
            done = streak.entries(query)
            entries += done
            shown += sum(lines(e) for e in done)
            streak = None
            if shown >= limit:
                return tuple(entries)
        if isinstance(row, RunRow):  # running (or crashed): never grouped
            entries.append(row)
            shown += 1
            if shown >= limit:
                return tuple(entries)
            continue
        streak = _Streak(names, row)
    else:
        if streak is not None:
            entries += streak.entries(query)
        return tuple(entries)
    if streak is not None:  # the scan stopped inside it
        entries += streak.entries(query, complete=len(streak.rows) == 1)
    return tuple(entries)
