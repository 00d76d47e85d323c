"""Retention: whole runs deleted with everything that belongs to them, then the space back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentos.errors import SpecError
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
from agentos.store.retention import prune_runs

DAY = 86_400.0
CHILD_TABLES = ("events", "llm_calls", "results", "tool_calls")


def record_run(
    store: Store,
    agent: str,
    age_days: float,
    *,
    finished: bool = True,
    events: int = 3,
    text: str = "short",
) -> str:
    """A run that started ``age_days`` ago, with rows in every table that belongs to it."""
    run_id = create_run(
        store, agent=agent, kind="single-shot", spec={"name": agent}, wanted=1, agents_file=None
    )
    started = time.time() - age_days * DAY
    store.submit(Update("runs", run_id, {"started_at": started}))
    log = RunEvents(store, run_id)
    for i in range(events):
        log.add("step", {"i": i, "text": text})
    record_llm_call(store, run_id=run_id, kind="chat", request={"text": text}, started_at=started)
    record_result(store, run_id, None, {"answer": text})
    store.submit(
        Insert(
            "tool_calls",
            {"id": new_id(), "run_id": run_id, "tool": "t", "arguments": json.dumps({"q": text})},
        )
    )
    if finished:
        finish_run(store, run_id, status="succeeded", successes=1, attempts=1)
    return run_id


def counts(store: Store) -> dict[str, int]:
    store.flush()
    tables = ("runs", *CHILD_TABLES)
    return {t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def run_ids(store: Store) -> set[str]:
    return {row[0] for row in store.db.execute("SELECT id FROM runs").fetchall()}


def assert_no_orphans(store: Store) -> None:
    for table in CHILD_TABLES:
        orphans = store.db.execute(
            f"SELECT count(*) FROM {table} "
            "WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT id FROM runs)"
        ).fetchone()[0]
        assert orphans == 0, f"{orphans} orphan rows in {table}"
    assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_prune_deletes_whole_runs_and_leaves_no_orphans(store: Store) -> None:
    old = [record_run(store, "a", 40 + i) for i in range(3)]
    young = record_run(store, "a", 1)
    stuck = record_run(store, "b", 50, finished=False)
    embedding = record_llm_call(store, run_id=None, kind="embeddings", request={"input": "x"})

    report = prune_runs(store, older_than_s=30 * DAY, keep_last=None, agent=None, dry_run=False)

    assert report.run_ids == list(reversed(old))  # oldest first
    assert report.rows == {
        "events": 9,
        "llm_calls": 3,
        "results": 3,
        "tool_calls": 3,
        "embeddings": 0,
        "runs": 3,
    }
    assert report.running_kept == 1
    assert run_ids(store) == {young, stuck}
    assert counts(store) == {"runs": 2, "events": 6, "llm_calls": 3, "results": 2, "tool_calls": 2}
    assert store.db.table("llm_calls").get(embedding)["run_id"] is None
    assert_no_orphans(store)


def test_keep_last_keeps_the_newest_finished_runs(store: Store) -> None:
    a_runs = [record_run(store, "a", age) for age in (1, 2, 3, 4, 5)]  # newest first
    b_runs = [record_run(store, "b", age) for age in (1.5, 2.5, 6)]
    running = record_run(store, "a", 0.5, finished=False)

    report = prune_runs(store, older_than_s=None, keep_last=2, agent="a", dry_run=False)
    assert set(report.run_ids) == set(a_runs[2:])
    assert run_ids(store) == {*a_runs[:2], *b_runs, running}

    report = prune_runs(store, older_than_s=None, keep_last=3, agent=None, dry_run=False)
    assert report.run_ids == [b_runs[2], b_runs[1]]  # the newest 3: a 1d, b 1.5d, a 2d
    assert run_ids(store) == {a_runs[0], a_runs[1], b_runs[0], running}
    assert_no_orphans(store)


def test_keep_last_and_older_than_together(store: Store) -> None:
    runs = [record_run(store, "a", age) for age in (40, 50, 60, 5)]
    report = prune_runs(store, older_than_s=30 * DAY, keep_last=2, agent=None, dry_run=False)
    assert report.run_ids == [runs[2], runs[1]]  # run 40d old survives as one of the newest 2
    assert run_ids(store) == {runs[0], runs[3]}


def test_dry_run_says_what_would_go_and_changes_nothing(store: Store, db_path: Path) -> None:
    for age in (40, 41, 2):
        record_run(store, "a", age)
    before = counts(store)
    dry = prune_runs(store, older_than_s=30 * DAY, keep_last=None, agent=None, dry_run=True)
    assert dry.dry_run
    assert counts(store) == before
    assert dry.bytes_after is None

    real = prune_runs(store, older_than_s=30 * DAY, keep_last=None, agent=None, dry_run=False)
    assert (dry.run_ids, dry.rows) == (real.run_ids, real.rows)
    assert len(real.run_ids) == 2


def test_the_file_gets_smaller_after_a_big_prune(store: Store, db_path: Path) -> None:
    for i in range(40):
        record_run(store, "a", 100 + i, events=20, text="x" * 2000)
    keep = record_run(store, "a", 1)
    store.flush()

    report = prune_runs(store, older_than_s=30 * DAY, keep_last=None, agent=None, dry_run=False)

    assert len(report.run_ids) == 40
    assert report.warnings == []
    assert report.bytes_before is not None and report.bytes_after is not None
    assert report.bytes_after < report.bytes_before / 4
    assert db_path.stat().st_size == report.bytes_after  # the WAL was truncated
    assert run_ids(store) == {keep}
    record_run(store, "a", 0)  # the store goes on working after the vacuum
    assert len(run_ids(store)) == 2


def test_nothing_to_prune(store: Store) -> None:
    record_run(store, "a", 1)
    report = prune_runs(store, older_than_s=30 * DAY, keep_last=None, agent=None, dry_run=False)
    assert report.run_ids == []
    assert report.rows == {
        "events": 0,
        "llm_calls": 0,
        "results": 0,
        "tool_calls": 0,
        "embeddings": 0,
        "runs": 0,
    }


@pytest.mark.parametrize(
    ("older_than_s", "keep_last", "message"),
    [
        (None, None, "--older-than AGE"),
        (-1.0, None, "-1.0"),
        (float("nan"), None, "nan"),
        (None, -3, "-3"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(
    store: Store, older_than_s: float | None, keep_last: int | None, message: str
) -> None:
    record_run(store, "a", 40)
    before = counts(store)
    with pytest.raises(SpecError, match=message):
        prune_runs(store, older_than_s=older_than_s, keep_last=keep_last, agent=None, dry_run=False)
    assert counts(store) == before
