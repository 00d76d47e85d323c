"""What the model calls used and cost: ``agentos usage``, ``top``'s cost, budgets.

The source is ``llm_calls`` (one row per job's request; since m012 its ``process`` names
who asked: the agent, ``background[embeddings]``, ``client[NAME]``; older rows fall back
to their run's agent). Rows are grouped by agent, engine, model or day (the local date of
the call's start).

- ``calls`` are requests an engine answered or failed; answers from the response cache
  are ``cached`` and cost nothing (their tokens are not counted either: no engine spent
  them).
- Tokens are the engine's usage per job (a batched request's usage shared by its jobs).
- Cost follows :mod:`agentos.usage.pricing`. An engine priced by the hour is charged for
  its *busy time* (wall time with at least one call in flight, as ``top`` counts it),
  never for the sum of overlapping calls: every stretch of time is split equally among the
  calls in flight then (a batch of 8 jobs is 8 calls sharing it). So the shares of an
  engine's calls add up to its busy time, whatever the grouping.

Streaming: one cursor ordered by engine and start, a chunk at a time; memory holds the
groups and the calls in flight at one moment, not the table.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, get_args

from agentos.errors import SpecError
from agentos.store.db import Store
from agentos.store.export import CHUNK_ROWS
from agentos.usage.pricing import Pricing, money

UsageBy = Literal["agent", "engine", "model", "day"]
USAGE_BY: Final[tuple[str, ...]] = get_args(UsageBy)


@dataclass
class UsageRow:
    """One group's usage."""

    key: str
    calls: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0
    """Busy time charged to the group on engines priced by the hour."""
    priced_cost: Decimal = Decimal(0)
    """The cost of the calls that have a price."""
    priced: int = 0
    unpriced: int = 0
    """Calls with no price (a model without a price on a remote engine)."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> Decimal | None:
        """The cost, or None ("no price") when none of its calls has a price."""
        if self.unpriced and not self.priced:
            return None
        return self.priced_cost

    def to_json(self) -> dict[str, Any]:
        cost = self.cost
        return {
            "key": self.key,
            "calls": self.calls,
            "cached": self.cached,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "busy_s": round(self.busy_s, 3),
            "cost": None if cost is None else money(cost),
            "unpriced_calls": self.unpriced,
        }


@dataclass
class Usage:
    """Rows by group, sorted by key, and their total."""

    by: str
    rows: list[UsageRow]
    total: UsageRow
    currency: str


def day_of(ts: float) -> str:
    """The local date of unix time ``ts`` (the budgets' day, too)."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def day_start(ts: float | None = None) -> float:
    """Unix time of the local midnight that began the day of ``ts`` (default now)."""
    now = time.localtime(time.time() if ts is None else ts)
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


def next_day_start(ts: float | None = None) -> float:
    """Unix time of the next local midnight after ``ts`` (default now)."""
    start = time.localtime(day_start(ts))
    # mktime normalises day 32 and the like, and DST changes, by itself
    return time.mktime((start.tm_year, start.tm_mon, start.tm_mday + 1, 0, 0, 0, 0, 0, -1))


_SELECT = (
    "SELECT coalesce(c.process, r.agent, '?') AS who, coalesce(c.engine, '?'), "
    "coalesce(c.model, '?'), c.started_at, c.finished_at, coalesce(c.prompt_tokens, 0), "
    "coalesce(c.completion_tokens, 0), coalesce(c.cache_hit, 0), coalesce(c.status, '') "
    "FROM llm_calls AS c LEFT JOIN runs AS r ON r.id = c.run_id "
    "WHERE c.started_at >= ? AND c.started_at < ?"
)
_ORDER = " ORDER BY c.engine, c.started_at"


def usage(
    store: Store,
    pricing: Pricing,
    *,
    by: str = "agent",
    since: float | None = None,
    until: float | None = None,
    who: str | None = None,
) -> Usage:
    """Usage of the calls started in [``since``, ``until``), grouped ``by``; ``who``
    keeps one process's calls (the others still share hourly engines' busy time)."""
    if by not in USAGE_BY:
        raise SpecError(f"--by {by!r} is not one of {', '.join(USAGE_BY)}")
    groups: dict[str, UsageRow] = {}
    total = UsageRow("total")
    conn: sqlite3.Connection = store.db.conn
    sql = _SELECT
    params: list[Any] = [since if since is not None else 0.0, until or 1e18]
    if who is not None and not pricing.hourly:
        # no busy time to share: the other processes' calls need not be read at all
        sql += " AND coalesce(c.process, r.agent, '?') = ?"
        params.append(who)
    cursor = conn.execute(sql + _ORDER, params)
    try:
        for call, busy in _priced(_rows(cursor), pricing):
            name, engine, model, started, _, prompt, completion, cache_hit, status = call
            if who is not None and name != who:
                continue
            key = {"agent": name, "engine": engine, "model": model}.get(by) or day_of(started)
            row = groups.get(key)
            if row is None:
                row = groups[key] = UsageRow(key)
            for target in (row, total):
                _add(target, pricing, engine, model, prompt, completion, cache_hit, status, busy)
    finally:
        cursor.close()
    rows = [groups[k] for k in sorted(groups)]
    return Usage(by=by, rows=rows, total=total, currency=pricing.currency)


def spent(
    store: Store, pricing: Pricing, who: str, *, since: float, until: float | None = None
) -> UsageRow:
    """What ``who`` used between ``since`` and ``until`` (a budget's day)."""
    result = usage(store, pricing, by="agent", since=since, until=until, who=who)
    return result.rows[0] if result.rows else UsageRow(who)


Call = tuple[str, str, str, float, float | None, int, int, int, str]


def _rows(cursor: sqlite3.Cursor) -> Iterator[Call]:
    while rows := cursor.fetchmany(CHUNK_ROWS):
        yield from rows


def _priced(calls: Iterable[Call], pricing: Pricing) -> Iterator[tuple[Call, float]]:
    """Each call with its share of busy time (0 unless its engine is priced hourly)."""
    for engine, block in itertools.groupby(calls, key=lambda call: call[1]):
        if engine not in pricing.hourly:
            for call in block:
                yield call, 0.0
            continue
        yield from busy_shares(block)


def busy_shares(calls: Iterable[Call]) -> Iterator[tuple[Call, float]]:
    """Each call (ordered by start) with its share of the engine's busy time: every
    stretch of time is split equally among the calls in flight during it. Cache hits take
    no share; a call without an end (still in flight) takes none yet."""
    active: list[tuple[float, int, Call, list[float]]] = []
    clock = 0.0
    order = itertools.count()

    def spread(until: float) -> None:
        nonlocal clock
        if active and until > clock:
            each = (until - clock) / len(active)
            for entry in active:
                entry[3][0] += each
        clock = max(clock, until)

    def finish(until: float) -> Iterator[tuple[Call, float]]:
        while active and active[0][0] <= until:
            end = active[0][0]
            spread(end)
            _, _, call, share = heapq.heappop(active)
            yield call, share[0]

    for call in calls:
        started, finished, cache_hit = call[3], call[4], call[7]
        if cache_hit or finished is None:
            yield call, 0.0
            continue
        yield from finish(started)
        spread(started)
        clock = max(clock, started)
        heapq.heappush(active, (max(finished, started), next(order), call, [0.0]))
    yield from finish(float("inf"))


def _add(
    row: UsageRow,
    pricing: Pricing,
    engine: str,
    model: str,
    prompt: int,
    completion: int,
    cache_hit: int,
    status: str,
    busy: float,
) -> None:
    if cache_hit:
        row.cached += 1
        return
    row.calls += 1
    row.failed += status != "ok"
    row.prompt_tokens += prompt
    row.completion_tokens += completion
    rule = pricing.rule(engine, model)
    if rule == "none":
        row.unpriced += 1
        return
    row.priced += 1
    if rule == "hourly":
        row.busy_s += busy
        row.priced_cost += pricing.busy_cost(engine, busy)
    elif rule == "tokens":
        row.priced_cost += pricing.token_cost(model, prompt, completion)


def cost_today(
    db_path: str | Path, pricing: Pricing, *, now: float | None = None
) -> dict[str, Any]:
    """Today's cost on the database at ``db_path`` (local day), in total and by process,
    as a running agentos puts it in its snapshot for ``top``; opens its own read-only
    connection, so it may run in any thread."""
    since = day_start(now)
    with Store(db_path, readonly=True) as reader:
        result = usage(reader, pricing, by="agent", since=since)
    total = result.total.cost
    return {
        "currency": pricing.currency,
        "day": day_of(since),
        "total": None if total is None else money(total),
        "unpriced_calls": result.total.unpriced,
        "by_process": {
            row.key: (None if row.cost is None else money(row.cost)) for row in result.rows
        },
    }
