"""What gets embedded: the source tables, their rows not yet embedded, and their text.

Three sources, each a table of the store:

- ``results``: every run output (the parsed result as recorded).
- ``llm_calls``: every model answer of a run, only successful chat and completions calls
  that reached an engine. Cache hits are left out (their answer is the one of the original
  call, embedded already), and so are embeddings calls (the indexer's own requests) and
  calls of no run: those of ``agentos serve``'s clients are their business, not the
  agents' memory, and embedding them would double the engines' work for every client.
- ``sink_items``: every item published to a sink. ``produced_by`` is read as a run id when
  a run has that id (the agent is then the run's), else as the producing agent's name.

Which rows are done is in ``embedded_sources`` (migrations m006, m007), keyed by (source,
row id, model); a row is pending while it has no mark for the model, or is marked
``embedded`` into another vector store than the one in use (``store``: the store was
switched, and the new one must get every record). Rows are walked in ``rowid`` order from
a cursor, so one pass reads each row once whatever the table's size.

:class:`SourceReader` does the reading on a connection of its own (blocking calls, meant
for ``asyncio.to_thread``; one call at a time).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agentos.store import Store
from agentos.store.codec import nested_deeper_than

SOURCES = ("results", "llm_calls", "sink_items")
"""The source tables, in the order a pass walks them."""


@dataclass(frozen=True, slots=True)
class _SourceSql:
    """How to read one source table (SQL fragments; ``x`` is the table's alias)."""

    table: str
    key: str
    """The row id as TEXT: the type of ``embedded_sources.source_id`` (comparing it with
    an INTEGER id would apply numeric affinity and lose the index)."""
    run_id: str
    agent: str
    created_at: str
    body: str
    joins: str
    where: str


_SQL: dict[str, _SourceSql] = {
    "results": _SourceSql(
        table="results",
        key="CAST(x.id AS TEXT)",
        run_id="x.run_id",
        agent="runs.agent",
        created_at="x.created_at",
        body="x.data",
        joins="LEFT JOIN runs ON runs.id = x.run_id",
        where="1",
    ),
    "llm_calls": _SourceSql(
        table="llm_calls",
        key="x.id",
        run_id="x.run_id",
        agent="runs.agent",
        created_at="COALESCE(x.finished_at, x.started_at)",
        body="x.response",
        joins="LEFT JOIN runs ON runs.id = x.run_id",
        where=(
            "x.status = 'ok' AND COALESCE(x.cache_hit, 0) = 0 AND x.run_id IS NOT NULL "
            "AND x.kind IN ('chat', 'completions') AND x.response IS NOT NULL"
        ),
    ),
    "sink_items": _SourceSql(
        table="sink_items",
        key="CAST(x.id AS TEXT)",
        run_id="runs.id",
        agent="COALESCE(runs.agent, x.produced_by)",
        created_at="x.created_at",
        body="x.data",
        joins="LEFT JOIN runs ON runs.id = x.produced_by",
        where="1",
    ),
}

_NOT_MARKED = (
    "NOT EXISTS (SELECT 1 FROM embedded_sources m "
    "WHERE m.source = :source AND m.source_id = {key} AND m.model = :model "
    "AND (m.status != 'embedded' OR m.store IS :store))"
)

_SQLITE_VECTOR = (
    "(SELECT e.vector FROM embedded_sources m JOIN embeddings e ON e.model = m.model "
    "AND e.dim = m.dim AND e.source = m.source AND e.source_id = m.source_id "
    "WHERE m.source = :source AND m.source_id = {key} AND m.model = :model "
    "AND m.status = 'embedded')"
)
"""The row's vector in the SQLite store when it was embedded there (primary-key lookups
through its mark's dimension): switching to another store copies it instead of asking
the engine again."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row waiting to be embedded."""

    source: str
    source_id: str
    cursor: int
    """Its ``rowid``: where the next read of the same table starts."""
    run_id: str | None
    agent: str | None
    created_at: float | None
    text: str
    stored: bytes | None = None
    """Its unit vector as the SQLite vector store holds it, if it was embedded there."""


@dataclass(frozen=True, slots=True)
class SourceCounts:
    """Rows of the source tables for one model: done (by mark status) and pending."""

    embedded: int = 0
    empty: int = 0
    failed: int = 0
    pending: int = 0


def readable(value: Any) -> str:
    """A JSON value as text to embed: strings as they are, objects as ``key: value`` lines,
    lists one item per line; empty parts are left out."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return "\n".join(part for part in map(readable, value) if part)
    if isinstance(value, dict):
        lines = ((key, readable(item)) for key, item in value.items())
        return "\n".join(f"{key}: {text}" for key, text in lines if text)
    return str(value)


_MAX_DEPTH = 64
"""Deeper JSON (a model's garbage) is embedded as its text: ``readable`` recurses."""


def _json(body: str | bytes | None) -> Any:
    if body is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return body if isinstance(body, str) else None
    if nested_deeper_than(value, _MAX_DEPTH):
        return body if isinstance(body, str) else None
    return value


def answer_text(response: Any) -> str:
    """The text of a stored chat or completions answer (its first choice)."""
    if not isinstance(response, dict):
        return ""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else choice.get("text")
    if not isinstance(content, str):
        return ""
    parsed = _json(content)
    return readable(parsed) if isinstance(parsed, dict | list) else content.strip()


def text_of(source: str, body: str | bytes | None) -> str:
    """What is embedded for a row of ``source`` whose body column holds ``body``."""
    value = _json(body)
    if source == "llm_calls":
        return answer_text(value)
    return readable(value)


class SourceReader:
    """Reads pending rows and progress counts from the database at ``store.path``."""

    def __init__(self, store: Store) -> None:
        uri = store.path.resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)

    def close(self) -> None:
        self._conn.close()

    def pending(
        self, source: str, model: str, *, store: str, after: int, limit: int
    ) -> list[SourceRow]:
        """Up to ``limit`` rows of ``source`` not done for ``model`` in the vector store
        ``store`` (its key) with a cursor above ``after``, in cursor order."""
        sql = _SQL[source]
        query = (
            f"SELECT x.rowid, {sql.key}, {sql.run_id}, {sql.agent}, {sql.created_at}, "
            f"{sql.body}, {_SQLITE_VECTOR.format(key=sql.key)} FROM {sql.table} x {sql.joins} "
            f"WHERE x.rowid > :after AND ({sql.where}) AND {_NOT_MARKED.format(key=sql.key)} "
            "ORDER BY x.rowid LIMIT :limit"
        )
        params = {
            "after": after,
            "limit": limit,
            "source": source,
            "model": model,
            "store": store,
        }
        rows = self._conn.execute(query, params).fetchall()
        return [
            SourceRow(
                source=source,
                source_id=key,
                cursor=rowid,
                run_id=run_id,
                agent=agent,
                created_at=created_at,
                text=text_of(source, body),
                stored=stored,
            )
            for rowid, key, run_id, agent, created_at, body, stored in rows
        ]

    def counts(self, model: str, store: str) -> SourceCounts:
        """How many source rows are done (per mark status) and pending, for ``model`` in
        the vector store ``store`` (its key).

        Marks of rows that no longer exist (pruned runs) are not counted.
        """
        found = {"embedded": 0, "empty": 0, "failed": 0, None: 0}
        for source, sql in _SQL.items():
            # Driven from the source table with one index lookup per row: a join driven
            # from the marks would scan the source table once per mark.
            rows = self._conn.execute(
                "SELECT (SELECT CASE WHEN m.status = 'embedded' AND m.store IS NOT :store "
                "THEN NULL ELSE m.status END FROM embedded_sources m WHERE m.source = :source "
                f"AND m.source_id = {sql.key} AND m.model = :model) AS status, count(*) "
                f"FROM {sql.table} x WHERE {sql.where} GROUP BY status",
                {"source": source, "model": model, "store": store},
            ).fetchall()
            for status, count in rows:
                found[status] = found.get(status, 0) + count
        return SourceCounts(
            embedded=found["embedded"],
            empty=found["empty"],
            failed=found["failed"],
            pending=found[None],
        )
