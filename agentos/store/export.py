"""``agentos export``: what agentos recorded, out of the database as CSV or JSON Lines.

Streaming: rows go from one cursor to ``out`` :data:`CHUNK_ROWS` at a time, so memory does
not grow with the table (a million events need a chunk of memory, not a million rows). The
cursor holds one read transaction for the whole export, so the output is one consistent
snapshot even while ``agentos run`` writes; in WAL mode that never blocks the writer, it
only postpones checkpoints until the export ends.

Formats:

- ``jsonl``: one JSON object per row. The JSON columns (:data:`JSON_COLUMNS`) become real
  JSON values, not strings holding JSON; a value in them that is not valid JSON (written
  by hand) stays a string.
- ``csv``: a header with the column names, then one line per row. JSON columns stay JSON
  text; NULL is an empty field (CSV has no other way to write it).

Columns are the table's own, in schema order, so columns added by later migrations are
exported without a change here.

``results`` holds what runs produced (one row per parsed answer, its ``data`` the JSON
value), in the order they were recorded.

Filters select runs and everything that belongs to them: ``agent`` is the run's agent,
``since`` is compared with the run's ``started_at``. Model and tool calls that belong to no
run (embeddings, for example) have no agent, so ``agent`` leaves them out, and ``since``
compares their own ``started_at``.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, get_args

from agentos.errors import SpecError
from agentos.router.cache import parse_duration
from agentos.store.db import Store

ExportTable = Literal["runs", "events", "llm_calls", "tool_calls", "results"]
ExportFormat = Literal["csv", "jsonl"]
EXPORT_TABLES: Final[tuple[str, ...]] = get_args(ExportTable)
EXPORT_FORMATS: Final[tuple[str, ...]] = get_args(ExportFormat)

JSON_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "runs": ("spec",),
    "events": ("payload",),
    "llm_calls": ("request", "response"),
    "tool_calls": ("arguments", "output"),
    "results": ("data",),
}
"""The columns of each table that hold JSON text."""

CHUNK_ROWS = 1000
"""Rows fetched from the cursor at a time."""

_ORDER: Final[dict[str, str]] = {
    "runs": "t.id",
    "events": "t.run_id, t.seq",
    "llm_calls": "t.id",
    "tool_calls": "t.id",
    "results": "t.id",
}
"""Orders that follow an index (ids sort by creation time), so SQLite streams rows
without sorting the table first."""


class TextSink(Protocol):
    """Where an export goes: anything with ``write(str)`` (a file, ``sys.stdout``)."""

    def write(self, text: str, /) -> object: ...


_RELATIVE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[a-zA-Z]\s*$")


def export_table(
    store_or_path: Store | str | Path,
    *,
    table: ExportTable,
    fmt: ExportFormat,
    out: TextSink,
    agent: str | None = None,
    since: float | None = None,
) -> int:
    """Write ``table`` to ``out`` as ``fmt``, filtered by run ``agent`` and ``since`` (unix
    seconds); returns the number of rows written.

    ``store_or_path`` is an open store, or a database file that is opened read-only for
    the export (it must exist and be up to date). Raises SpecError naming the value for an
    unknown table or format, before anything is written.
    """
    if table not in EXPORT_TABLES:
        raise SpecError(f"cannot export table {table!r}; choose one of {', '.join(EXPORT_TABLES)}")
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    with _opened(store_or_path) as store:
        conn: sqlite3.Connection = store.db.conn
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info([{table}])").fetchall()]
        sql, params = _select(table, columns, agent=agent, since=since)
        cursor = conn.execute(sql, params)
        try:
            if fmt == "csv":
                return _write_csv(cursor, columns, out)
            return _write_jsonl(cursor, columns, set(JSON_COLUMNS[table]), out)
        finally:
            cursor.close()


@contextmanager
def _opened(store_or_path: Store | str | Path) -> Iterator[Store]:
    if isinstance(store_or_path, Store):
        yield store_or_path
        return
    with Store(store_or_path, readonly=True) as store:
        yield store


def _select(
    table: str,
    columns: list[str],
    *,
    agent: str | Sequence[str] | None,
    since: float | None,
    run_ids: Sequence[str] | None = None,
    conditions: Sequence[tuple[str, Sequence[Any]]] = (),
) -> tuple[str, list[Any]]:
    """The streaming SELECT of ``table`` with the export's filters: ``agent`` (one name or
    several), ``since``, ``run_ids`` (whole ids), and ``conditions`` (SQL on ``t`` with
    their parameters) for a caller's own narrowing (``agentos dataset export``)."""
    selected = ", ".join(f't."{c}"' for c in columns)
    sql = f"SELECT {selected} FROM [{table}] AS t"
    where: list[str] = []
    params: list[Any] = []
    if table == "runs":
        run = "t"
    else:
        run = "r"
        if agent is not None or since is not None:
            sql += " LEFT JOIN runs AS r ON r.id = t.run_id"
    if isinstance(agent, str):
        where.append(f"{run}.agent = ?")
        params.append(agent)
    elif agent is not None:
        where.append(f"{run}.agent IN ({', '.join('?' for _ in agent)})")
        params.extend(agent)
    if run_ids is not None:
        where.append(
            f"{'t.id' if table == 'runs' else 't.run_id'} IN ({', '.join('?' for _ in run_ids)})"
        )
        params.extend(run_ids)
    for condition, values in conditions:
        where.append(condition)
        params.extend(values)
    if since is not None:
        started = f"{run}.started_at"
        if table in ("llm_calls", "tool_calls"):
            started = "coalesce(r.started_at, t.started_at)"
        where.append(f"{started} >= ?")
        params.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY {_ORDER[table]}", params


def _write_csv(cursor: sqlite3.Cursor, columns: list[str], out: TextSink) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    while rows := cursor.fetchmany(CHUNK_ROWS):
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        count += len(rows)
    return count


def _write_jsonl(
    cursor: sqlite3.Cursor, columns: list[str], json_columns: set[str], out: TextSink
) -> int:
    decode = [c in json_columns for c in columns]
    count = 0
    while rows := cursor.fetchmany(CHUNK_ROWS):
        lines = []
        for row in rows:
            record = {
                column: _json_value(value) if is_json else value
                for column, value, is_json in zip(columns, row, decode, strict=True)
            }
            lines.append(json.dumps(record, ensure_ascii=False))
        out.write("\n".join(lines) + "\n")
        count += len(rows)
    return count


def _json_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_since(text: str, *, now: float | None = None) -> float:
    """Unix seconds for ``--since``: a date (``2026-11-01``, midnight local time), a date
    and time (``2026-11-01T14:30``, local time unless it carries an offset or ``Z``), or an
    age back from now (``7d``, ``12h``, ``30m``; see
    :func:`agentos.router.cache.parse_duration`).

    Raises SpecError naming the value for anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"--since {text!r} is empty; {_SINCE_FORMS}")
    if _RELATIVE.match(text):
        try:
            age = parse_duration(text)
        except SpecError as exc:
            raise SpecError(f"--since {text!r}: {exc.reason}") from None
        return (time.time() if now is None else now) - age
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SpecError(f"--since {text!r} is not a date or an age; {_SINCE_FORMS}") from None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise SpecError(f"--since {text!r} is out of range") from None


_SINCE_FORMS = "write a date (2026-11-01), a date and time (2026-11-01T14:30) or an age (7d, 12h)"
