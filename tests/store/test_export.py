"""Export: every table in both formats, parsed back and compared with the stored rows."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentos.errors import SpecError, StoreError
from agentos.store import (
    Insert,
    RunEvents,
    Store,
    Update,
    create_run,
    finish_run,
    new_id,
    record_llm_call,
    record_result,
)
from agentos.store.export import EXPORT_TABLES, JSON_COLUMNS, export_table, parse_since

DAY = 86_400.0
ORDER = {
    "runs": "id",
    "events": "run_id, seq",
    "llm_calls": "id",
    "tool_calls": "id",
    "results": "id",
}
TRICKY = 'a "quoted", comma\nnew line, ünïcode ✓, tab\t, and a backslash \\'


@dataclass
class Recorded:
    alpha: str
    beta: str
    now: float


def record_run(store: Store, agent: str, started_at: float) -> str:
    run_id = create_run(
        store,
        agent=agent,
        kind="single-shot",
        spec={"name": agent, "prompt": TRICKY, "vars": {"n": 1.5}},
        wanted=1,
        agents_file="agents.yaml",
    )
    store.submit(Update("runs", run_id, {"started_at": started_at}))
    events = RunEvents(store, run_id)
    events.add("prompt", {"messages": [{"role": "user", "content": TRICKY}]})
    events.add("response", {"text": "{}", "tokens": 3, "score": 0.1 + 0.2, "none": None})
    events.add("empty")
    for attempt in (1, 2):
        record_llm_call(
            store,
            run_id=run_id,
            job_id=f"{run_id}-job",
            attempt=attempt,
            engine="loop",
            model="smollm2",
            kind="chat",
            request={"messages": [{"role": "user", "content": TRICKY}], "temperature": 0.0},
            response={"choices": [{"message": {"content": "hi"}}]} if attempt == 2 else None,
            status="ok" if attempt == 2 else "error",
            error=None if attempt == 2 else "HTTP 503",
            latency_ms=12.345,
            cache_hit=False,
            started_at=started_at + attempt,
        )
    store.submit(
        Insert(
            "tool_calls",
            {
                "id": new_id(),
                "run_id": run_id,
                "step": 1,
                "tool": "search",
                "arguments": json.dumps({"query": TRICKY, "limit": 3}),
                "output": json.dumps([{"title": "x", "score": 0.5}]),
                "error": None,
                "duration_ms": 1.25,
                "started_at": started_at + 1,
            },
        )
    )
    record_result(store, run_id, f"{run_id}:1", {"summary": TRICKY, "score": 0.1 + 0.2})
    record_result(store, run_id, f"{run_id}:2", ["a list", None, 3])
    finish_run(store, run_id, status="succeeded", successes=1, attempts=2)
    return run_id


@pytest.fixture
def recorded(store: Store) -> Recorded:
    now = time.time()
    alpha = record_run(store, "alpha", now - 10 * DAY)
    beta = record_run(store, "beta", now - 60)
    record_llm_call(store, run_id=None, kind="embeddings", request={"input": ["x"]}, started_at=now)
    store.flush()
    return Recorded(alpha, beta, now)


def stored_rows(store: Store, table: str, where: str = "1", params: tuple[Any, ...] = ()) -> list:
    sql = f"SELECT * FROM [{table}] WHERE {where} ORDER BY {ORDER[table]}"
    return list(store.db.query(sql, params))


def export(store: Store | Path, **options: Any) -> tuple[int, str]:
    out = io.StringIO()
    count = export_table(store, out=out, **options)
    return count, out.getvalue()


@pytest.mark.parametrize("table", EXPORT_TABLES)
def test_jsonl_round_trip(store: Store, recorded: Recorded, table: str) -> None:
    count, text = export(store, table=table, fmt="jsonl")
    parsed = [json.loads(line) for line in text.splitlines()]
    expected = stored_rows(store, table)
    for row in expected:
        for column in JSON_COLUMNS[table]:
            if row[column] is not None:
                row[column] = json.loads(row[column])
    assert count == len(expected) == len(parsed) > 0
    assert parsed == expected
    json_values = [row[c] for row in parsed for c in JSON_COLUMNS[table]]
    assert any(isinstance(value, dict | list) for value in json_values)


@pytest.mark.parametrize("table", EXPORT_TABLES)
def test_csv_round_trip(store: Store, recorded: Recorded, table: str) -> None:
    count, text = export(store, table=table, fmt="csv")
    reader = csv.reader(io.StringIO(text, newline=""))
    header, *lines = list(reader)
    expected = stored_rows(store, table)
    assert count == len(expected) == len(lines) > 0
    assert header == list(expected[0])
    assert [dict(zip(header, line, strict=True)) for line in lines] == [
        {k: "" if v is None else str(v) for k, v in row.items()} for row in expected
    ]
    for line, row in zip(lines, expected, strict=True):
        for column, value in zip(header, line, strict=True):
            if isinstance(row[column], float):
                assert float(value) == row[column]  # reals come back exactly
            if column in JSON_COLUMNS[table] and value:
                assert json.loads(value) == json.loads(row[column])


def test_filters_select_runs_and_what_belongs_to_them(
    store: Store, recorded: Recorded, db_path: Path
) -> None:
    runs_of = {
        "runs": lambda rows: {r["id"] for r in rows},
        "events": lambda rows: {r["run_id"] for r in rows},
        "llm_calls": lambda rows: {r["run_id"] for r in rows},
        "tool_calls": lambda rows: {r["run_id"] for r in rows},
        "results": lambda rows: {r["run_id"] for r in rows},
    }
    for table in EXPORT_TABLES:
        _, text = export(store, table=table, fmt="jsonl", agent="alpha")
        assert runs_of[table](map(json.loads, text.splitlines())) == {recorded.alpha}
        _, text = export(store, table=table, fmt="jsonl", since=recorded.now - DAY)
        rows = [json.loads(line) for line in text.splitlines()]
        expected = {recorded.beta, None} if table == "llm_calls" else {recorded.beta}
        assert runs_of[table](rows) == expected  # a run-less call counts its own start
    count, text = export(
        db_path, table="events", fmt="csv", agent="beta", since=recorded.now - 11 * DAY
    )
    assert count == 3
    assert count == len(stored_rows(store, "events", "run_id = ?", (recorded.beta,)))
    count, text = export(store, table="runs", fmt="csv", agent="nobody")
    assert (count, text.strip()) == (0, text.splitlines()[0])


def test_bad_table_or_format_is_refused_before_writing(store: Store, recorded: Recorded) -> None:
    out = io.StringIO()
    with pytest.raises(SpecError, match=r"'cache'.*runs, events, llm_calls, tool_calls, results"):
        export_table(store, table="cache", fmt="csv", out=out)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="'xml'"):
        export_table(store, table="runs", fmt="xml", out=out)  # type: ignore[arg-type]
    assert out.getvalue() == ""
    with pytest.raises(StoreError, match="no agentos database"):
        export_table(Path("/nonexistent/agentos.db"), table="runs", fmt="csv", out=out)


def test_results_are_exported_with_their_data_as_json(store: Store, recorded: Recorded) -> None:
    count, text = export(store, table="results", fmt="jsonl", agent="beta")
    rows = [json.loads(line) for line in text.splitlines()]
    assert count == 2
    assert [row["job_id"] for row in rows] == [f"{recorded.beta}:1", f"{recorded.beta}:2"]
    assert rows[0]["data"] == {"summary": TRICKY, "score": 0.1 + 0.2}
    assert rows[1]["data"] == ["a list", None, 3]


def test_cli_exports_results(store: Store, recorded: Recorded, db_path: Path) -> None:
    store.close()
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("AGENTOS_DB", None)
    for fmt in ("csv", "jsonl"):
        out = db_path.parent / f"results.{fmt}"
        done = subprocess.run(
            [
                *(sys.executable, "-m", "agentos", "export", "--table", "results"),
                *("--format", fmt, "--agent", "alpha", "--db", str(db_path), "-o", str(out)),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "wrote 2 rows" in done.stderr
        text = out.read_text(encoding="utf-8")
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            assert [json.loads(row["data"]) for row in rows][1] == ["a list", None, 3]
        else:
            rows = [json.loads(line) for line in text.splitlines()]
            assert rows[0]["data"]["summary"] == TRICKY
        assert {row["run_id"] for row in rows} == {recorded.alpha}
    done = subprocess.run(
        [sys.executable, "-m", "agentos", "export", "--table", "result", "--db", str(db_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "'result'" in done.stderr and "results" in done.stderr


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("7d", now=now) == now - 7 * DAY
    assert parse_since("12h", now=now) == now - 12 * 3600
    assert parse_since("2026-11-01T00:00:00+00:00") == 1_793_491_200.0
    assert parse_since("2026-11-01T14:30Z") == 1_793_491_200.0 + 14.5 * 3600
    local_midnight = time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-11-01") == local_midnight
    for bad in ("", "yesterday", "7x", "0d", "2026-13-01"):
        with pytest.raises(SpecError, match="--since") as info:
            parse_since(bad)
        assert repr(bad) in str(info.value)


class CountingSink(io.TextIOBase):
    """A text stream that keeps nothing, only counts what it was given."""

    def __init__(self) -> None:
        self.chars = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


@pytest.mark.parametrize(("table", "fmt"), [("events", "csv"), ("results", "jsonl")])
def test_export_streams_in_constant_memory(
    store: Store, db_path: Path, table: str, fmt: str
) -> None:
    run_id = create_run(store, agent="big", kind="single-shot", spec={}, wanted=1, agents_file=None)
    rows = 100_000  # as Python tuples about 35 MB; tracemalloc makes it slow to go higher
    conn = sqlite3.connect(db_path)
    with conn:
        if table == "events":
            conn.executemany(
                "INSERT INTO events (run_id, seq, type, time, payload) VALUES (?, ?, 'step', ?, ?)",
                ((run_id, i, 1.7e9 + i, f'{{"i": {i}, "text": "row {i}"}}') for i in range(rows)),
            )
        else:
            conn.executemany(
                "INSERT INTO results (run_id, job_id, data, created_at) VALUES (?, ?, ?, ?)",
                (
                    (run_id, f"j{i}", f'{{"i": {i}, "text": "row {i}"}}', 1.7e9 + i)
                    for i in range(rows)
                ),
            )
    conn.close()
    sink = CountingSink()
    tracemalloc.start()
    try:
        written = export_table(store, table=table, fmt=fmt, out=sink)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written == rows
    assert sink.chars > 7_500_000
    assert peak < 2_000_000, f"peak {peak} bytes for {sink.chars} characters exported"
