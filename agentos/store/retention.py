"""``agentos prune``: deleting old runs, whole, and giving the space back.

A run is deleted with everything that belongs to it, never in part: its row in ``runs``
and every row that points at it through a foreign key (``events``, ``llm_calls``,
``results``, ``tool_calls``, and any table a later migration adds with a foreign key to
``runs``). The tables are found from the schema, so a new table is pruned without a change
here. Rows that point at a deleted run without a foreign key (``runs.parent_id``,
``runs.forked_from``) keep the id as history; readers must expect it to name no run.

Invariants:

- Runs that are still ``running`` are never deleted, whatever their age; the delete
  statements repeat the condition, so a run that is resumed meanwhile is safe too.
- One batch of runs (:data:`BATCH_RUNS`) is one :class:`~agentos.store.writer.Atomic`
  write, committed before the next batch starts: an interrupted prune leaves whole runs,
  never part of one, and never holds the write lock for long, so a running agentos keeps
  writing meanwhile.
- A dry run reads only: it reports exactly what a real prune would delete now.

Reclaiming space: SQLite keeps freed pages inside the file, so after the deletes the file
is rewritten with ``VACUUM`` and the WAL is truncated with ``PRAGMA
wal_checkpoint(TRUNCATE)``. VACUUM cannot run inside a transaction, so it runs on a
connection of its own after the writer has flushed, not through the writer. It needs a
moment of exclusive access: it takes the write lock for as long as rewriting the file
takes (waiting the busy timeout for another writer first), and the checkpoint can only
truncate the WAL when no reader is in the middle of a read. When it cannot, the runs are
deleted all the same and the report says why the file did not shrink.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentos.errors import SpecError
from agentos.store.db import Store
from agentos.store.writer import BUSY_TIMEOUT_MS, Atomic, Execute

BATCH_RUNS = 200
"""Runs deleted per transaction."""


@dataclass(slots=True)
class PruneReport:
    """What :func:`prune_runs` deleted, or would delete on a dry run."""

    dry_run: bool
    run_ids: list[str] = field(default_factory=list)
    """The runs deleted (or that would be), oldest first."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows deleted per table, ``runs`` included; every table that was looked at appears,
    with 0 where nothing went."""
    running_kept: int = 0
    """Runs that matched but are still running, so were kept."""
    bytes_before: int | None = None
    """Size of the database file and its WAL before the prune."""
    bytes_after: int | None = None
    """Size after reclaiming space; None on a dry run or when space was not reclaimed."""
    warnings: list[str] = field(default_factory=list)
    """Why space was not reclaimed, when it was not."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prune_runs(
    store: Store,
    *,
    older_than_s: float | None = None,
    keep_last: int | None = None,
    agent: str | None = None,
    dry_run: bool = False,
    reclaim_space: bool = True,
    now: float | None = None,
) -> PruneReport:
    """Delete finished runs that started more than ``older_than_s`` seconds ago, except the
    newest ``keep_last`` finished runs, each with everything that belongs to it.

    With ``agent``, only that agent's runs are considered, and ``keep_last`` keeps that
    agent's newest N; without it, ``keep_last`` keeps the newest N runs overall, whatever
    their agent. Runs still ``running`` are never deleted and do not count towards
    ``keep_last``. Either limit alone is allowed (``keep_last`` alone deletes every older
    finished run); at least one is required, so a bare prune cannot empty the database.

    ``dry_run`` changes nothing. Otherwise the space is reclaimed afterwards (see the
    module docstring) unless ``reclaim_space`` is False. Flushes the store's writer.
    Raises SpecError naming the value for a negative or non-finite limit.
    """
    _check_limits(older_than_s, keep_last)
    now = time.time() if now is None else now
    store.flush()
    report = PruneReport(dry_run=dry_run, bytes_before=_file_bytes(store.path))
    report.run_ids = _runs_to_delete(store, older_than_s, keep_last, agent, now)
    report.running_kept = _running_matching(store, older_than_s, agent, now)
    children = _child_tables(store)
    report.rows = {table: 0 for table, _ in children} | {"runs": 0}
    for start in range(0, len(report.run_ids), BATCH_RUNS):
        batch = report.run_ids[start : start + BATCH_RUNS]
        for table, count in _count_rows(store, children, batch).items():
            report.rows[table] += count
        if not dry_run:
            store.submit(_delete_batch(children, batch))
            store.flush()
    if not dry_run and report.run_ids and reclaim_space:
        warning = _reclaim_space(store.path)
        if warning is None:
            report.bytes_after = _file_bytes(store.path)
        else:
            report.warnings.append(warning)
    return report


def _check_limits(older_than_s: float | None, keep_last: int | None) -> None:
    if older_than_s is None and keep_last is None:
        raise SpecError(
            "say which runs to prune: --older-than AGE (e.g. 30d), --keep-last N, or both"
        )
    if older_than_s is not None and not (math.isfinite(older_than_s) and older_than_s >= 0):
        raise SpecError(f"--older-than must be a duration of zero or more, not {older_than_s!r}")
    if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 0):
        raise SpecError(f"--keep-last must be a whole number of zero or more, not {keep_last!r}")


def _runs_to_delete(
    store: Store,
    older_than_s: float | None,
    keep_last: int | None,
    agent: str | None,
    now: float,
) -> list[str]:
    """Ids of the finished runs to delete, oldest first.

    The newest ``keep_last`` finished runs (of ``agent``, when given) are skipped with
    OFFSET before the age filter, so "keep the last 5" holds however old they are.
    """
    where = ["status != 'running'"]
    params: list[Any] = []
    if agent is not None:
        where.append("agent = ?")
        params.append(agent)
    sql = (
        f"SELECT id, started_at FROM runs WHERE {' AND '.join(where)} "
        "ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?"
    )
    params.append(keep_last or 0)
    sql = f"SELECT id FROM ({sql})"
    if older_than_s is not None:
        sql += " WHERE started_at < ?"
        params.append(now - older_than_s)
    sql += " ORDER BY started_at, id"
    return [row[0] for row in store.db.conn.execute(sql, params).fetchall()]


def _running_matching(
    store: Store, older_than_s: float | None, agent: str | None, now: float
) -> int:
    sql = "SELECT count(*) FROM runs WHERE status = 'running'"
    params: list[Any] = []
    if agent is not None:
        sql += " AND agent = ?"
        params.append(agent)
    if older_than_s is not None:
        sql += " AND started_at < ?"
        params.append(now - older_than_s)
    count: int = store.db.conn.execute(sql, params).fetchall()[0][0]
    return count


def _child_tables(store: Store) -> list[tuple[str, str]]:
    """(table, column) for every foreign key that points at ``runs``."""
    children = []
    for table in store.db.table_names():
        if table == "runs":
            continue
        for key in store.db.table(table).foreign_keys:
            if key.other_table == "runs" and key.column:
                children.append((table, key.column))
    return sorted(children)


def _placeholders(ids: Sequence[str]) -> str:
    return ", ".join("?" * len(ids))


def _count_rows(store: Store, children: list[tuple[str, str]], batch: list[str]) -> dict[str, int]:
    marks = _placeholders(batch)
    counts: dict[str, int] = {}
    for table, column in children:
        sql = f'SELECT count(*) FROM [{table}] WHERE "{column}" IN ({marks})'
        counts[table] = counts.get(table, 0) + store.db.conn.execute(sql, batch).fetchall()[0][0]
    sql = f"SELECT count(*) FROM runs WHERE id IN ({marks}) AND status != 'running'"
    counts["runs"] = store.db.conn.execute(sql, batch).fetchall()[0][0]
    return counts


def _delete_batch(children: list[tuple[str, str]], batch: list[str]) -> Atomic:
    """One transaction: the rows of every child table, then the runs themselves."""
    marks = _placeholders(batch)
    finished = f"SELECT id FROM runs WHERE id IN ({marks}) AND status != 'running'"
    ops = [
        Execute(f'DELETE FROM [{table}] WHERE "{column}" IN ({finished})', tuple(batch))
        for table, column in children
    ]
    ops.append(
        Execute(f"DELETE FROM runs WHERE id IN ({marks}) AND status != 'running'", tuple(batch))
    )
    return Atomic(tuple(ops))


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total


def _reclaim_space(path: Path) -> str | None:
    """VACUUM and truncate the WAL on a connection of our own; a warning when it could not.

    The caller has flushed its writer, so no write of ours is pending; another process may
    still hold the lock longer than the busy timeout, which is reported, not raised,
    because the runs are deleted either way.
    """
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
    except sqlite3.OperationalError as exc:
        return (
            f"the runs were deleted, but the file could not be compacted ({exc}); run the "
            "prune again when no agentos is using the database"
        )
    finally:
        conn.close()
    if busy:
        return (
            "the runs were deleted and the file compacted, but a reader kept the write-ahead "
            "log from being truncated; it shrinks at the next checkpoint"
        )
    return None
