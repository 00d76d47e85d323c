"""Checking what a run produced (``results``, ``llm_calls``, ``tool_calls``) against the
digests and the seal recorded with it (see :mod:`agentos.store.digests`); the outputs part
of :func:`agentos.replay.audit.audit_run`.

What it finds: an output row whose covered field was **edited** (named: table, row, field),
a row whose digest is missing or not one agentos writes, rows **deleted** or **inserted**
after the run finished (the seal's counts; deleted model and tool calls that an event
refers to are named), a seal that was removed or rewritten. Model calls recorded after
the run finished are expected (calls in flight when a run is cancelled) and noted; results
and tool calls after it are not. Rows are read one at a time,
so a run with millions of model calls is checked in constant memory.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agentos.replay.chain import AuditProblem, ChainEvent
from agentos.store import digests

_LABELS = {"results": "result", "llm_calls": "model call", "tool_calls": "tool call"}
_REFERENCES = {"answer": "llm_calls", "tool_call": "tool_calls"}
"""Event types whose ``call_id`` names a row of an output table."""
_NAMED_AT_MOST = 5


@dataclass(slots=True)
class OutputsCheck:
    """What :func:`check_outputs` found."""

    rows: dict[str, int] = field(default_factory=dict)
    """Rows checked per table."""
    problems: list[AuditProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _rows(conn: sqlite3.Connection, table: str, run_id: str) -> Iterator[dict[str, Any]]:
    cursor = conn.execute(
        f"SELECT rowid AS _rowid, * FROM [{table}] WHERE run_id = ? ORDER BY rowid", (run_id,)
    )
    names = [d[0] for d in cursor.description]
    try:
        for values in cursor:
            yield dict(zip(names, values, strict=True))
    finally:
        cursor.close()


def row_label(table: str, row: dict[str, Any]) -> str:
    """How a user finds the row: its table and id, and what it was for."""
    if table == "results":
        return f"results row {row['id']} (job {row.get('job_id')})"
    if table == "llm_calls":
        return f"llm_calls row {row['id']} (job {row.get('job_id')}, attempt {row.get('attempt')})"
    return f"tool_calls row {row['id']} ({row.get('tool')}, step {row.get('step')})"


def check_outputs(
    conn: sqlite3.Connection,
    run: dict[str, Any],
    events: list[ChainEvent],
    key: bytes | None,
) -> OutputsCheck:
    """Check every output row of ``run`` against its digest, and their set against the
    run's seal once it finished."""
    check = OutputsCheck()
    run_id = run["id"]
    seal_text = run.get("outputs_seal")
    sealed = digests.parse_seal(seal_text) if isinstance(seal_text, str) else None
    summaries: dict[str, str] = {}
    for table in digests.OUTPUT_TABLES:
        upto = sealed[0][table][1] if sealed is not None else None
        hashed = hashlib.sha256()
        count = last = late = 0
        for row in _rows(conn, table, run_id):
            check.rows[table] = check.rows.get(table, 0) + 1
            _check_row(check, key, table, row)
            if upto is not None and row["_rowid"] > upto:
                late += 1
                continue
            digest = row.get("digest")
            hashed.update((digest if isinstance(digest, str) else "-").encode() + b"\n")
            count += 1
            last = row["_rowid"]
        summaries[table] = f"{count}:{last}:{hashed.hexdigest()}"
        if late and table == "llm_calls":
            check.notes.append(
                f"{late} llm_calls row(s) were recorded after the run finished (model calls "
                "still in flight when it ended): their digests are checked, the run's seal "
                "does not count them"
            )
        elif late:
            check.problems.append(
                AuditProblem(
                    None,
                    "output_inserted",
                    f"{late} {table} row(s) were added to the run after it finished",
                    table,
                )
            )
    if run["status"] == "running":
        check.notes.append(
            "the run is still running: its outputs are checked row by row; deleted ones can "
            "be detected once it finishes"
        )
    elif run["status"] == "crashed":
        check.notes.append(
            "the run crashed (its process died) before it sealed its outputs: they are "
            "checked row by row; deleted ones cannot be detected"
        )
    elif not isinstance(seal_text, str):
        check.problems.append(
            AuditProblem(
                None,
                "output_unsealed",
                "the run finished but its outputs seal (runs.outputs_seal) is missing, so "
                "deleted results, model or tool calls cannot be ruled out",
            )
        )
    elif sealed is None:
        check.problems.append(
            AuditProblem(
                None,
                "output_unsealed",
                "the run's outputs seal (runs.outputs_seal) is not one agentos writes: it "
                "was rewritten",
            )
        )
    else:
        _check_seal(check, conn, run, events, key, sealed, summaries)
    return check


def _check_row(check: OutputsCheck, key: bytes | None, table: str, row: dict[str, Any]) -> None:
    found = digests.check_row(key, table, row)
    if found.intact:
        return
    label = row_label(table, row)
    row_id = str(row["id"])
    if found.malformed:
        if row.get("digest") is None:
            detail = f"{label} has no digest: it was inserted by hand, or its digest removed"
            check.problems.append(AuditProblem(None, "output_unhashed", detail, table, row_id))
        else:
            detail = f"{label} has a digest agentos did not write: it was rewritten"
            check.problems.append(AuditProblem(None, "output_edited", detail, table, row_id))
        return
    if not found.fields:
        detail = (
            f"{label} no longer matches its digest: it was moved or copied from another "
            "row, or a field and its digest were both rewritten"
        )
        check.problems.append(AuditProblem(None, "output_edited", detail, table, row_id))
        return
    names = " and ".join(found.fields)
    verb = "was" if len(found.fields) == 1 else "were"
    detail = f"{label}: its {names} {verb} edited (no longer what was recorded)"
    check.problems.append(AuditProblem(None, "output_edited", detail, table, row_id, found.fields))


def _check_seal(
    check: OutputsCheck,
    conn: sqlite3.Connection,
    run: dict[str, Any],
    events: list[ChainEvent],
    key: bytes | None,
    sealed: tuple[dict[str, tuple[int, int, str]], str, str],
    summaries: dict[str, str],
) -> None:
    tables, body, seal_mac = sealed
    # the chain's own end is tried too: a removed or changed final_hash is reported by the
    # chain check, and the seal still tells whether outputs went missing
    ends = {run.get("final_hash"), events[-1].hash if events else None}
    if seal_mac not in {digests.seal_mac(key, run["id"], end, body) for end in ends}:
        check.problems.append(
            AuditProblem(
                None,
                "output_unsealed",
                "the run's outputs seal does not match its content or the run's final hash: "
                "the seal or the end of the run's chain was rewritten, so deleted outputs "
                "cannot be ruled out",
            )
        )
        return
    missing_refs = _missing_references(conn, events)
    for table in digests.OUTPUT_TABLES:
        count, _, digest = tables[table]
        now_count, _, now_digest = summaries[table].split(":")
        left = int(now_count)
        if left < count:
            named = missing_refs.get(table, [])
            detail = (
                f"{count - left} {table} row(s) of the run are missing: it finished with "
                f"{count}, {left} are left"
            )
            if named:
                detail += "; among them " + ", ".join(named[:_NAMED_AT_MOST])
                if len(named) > _NAMED_AT_MOST:
                    detail += f" and {len(named) - _NAMED_AT_MOST} more"
            check.problems.append(AuditProblem(None, "output_deleted", detail, table))
        elif left > count:
            check.problems.append(
                AuditProblem(
                    None,
                    "output_inserted",
                    f"{left - count} {table} row(s) were added to the run after it finished "
                    f"(it finished with {count}, {left} are there now)",
                    table,
                )
            )
        elif now_digest != digest and not any(p.table == table for p in check.problems):
            check.problems.append(
                AuditProblem(
                    None,
                    "output_edited",
                    f"the run's {table} rows are not the ones it finished with: a row was "
                    "replaced, or a digest changed",
                    table,
                )
            )


def _missing_references(conn: sqlite3.Connection, events: list[ChainEvent]) -> dict[str, list[str]]:
    """Rows that events refer to (an answer's model call, a tool call) and that are gone."""
    wanted: dict[str, dict[str, int]] = {}
    for event in events:
        table = _REFERENCES.get(event.type)
        if table is None or not isinstance(event.payload, dict):
            continue
        call_id = event.payload.get("call_id")
        if isinstance(call_id, str):
            wanted.setdefault(table, {})[call_id] = event.seq
    missing: dict[str, list[str]] = {}
    for table, ids in wanted.items():
        present: set[str] = set()
        items = list(ids)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id FROM [{table}] WHERE id IN ({marks})", chunk)
            present.update(row[0] for row in rows)
        missing[table] = [
            f"{table} row {call_id} ({_LABELS[table]} of event {seq})"
            for call_id, seq in ids.items()
            if call_id not in present
        ]
    return missing
