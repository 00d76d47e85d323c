"""The dashboard's reading of rows into figures, without the UI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos.store import Store, get_run
from agentos.tui.data import StoreReader, ThroughputMeter, build_view
from agentos.tui.format import clock_or_date, duration
from agentos.tui.timeline_data import build_timeline
from tests.tui.seed import (
    NOW,
    R1,
    RUNTIME_A,
    RUNTIME_B,
    SNAPSHOT_A,
    SNAPSHOT_B,
    snapshot_row,
)


def row_a(updated_at: float, **changes: object) -> dict[str, object]:
    data = {**SNAPSHOT_A, **changes}
    return snapshot_row(RUNTIME_A, 4242, data, updated_at=updated_at, uptime_s=74.6)


def test_attached_means_fresh_and_not_finished() -> None:
    assert build_view(NOW, [row_a(NOW - 2.9)]).attached
    assert not build_view(NOW, [row_a(NOW - 3.1)]).attached
    assert not build_view(NOW, [row_a(NOW - 0.1, finished=True)]).attached


def test_only_attached_runtimes_show_else_the_last_seen() -> None:
    old_b = snapshot_row(RUNTIME_B, 5151, SNAPSHOT_B, updated_at=NOW - 100, uptime_s=12.5)
    view = build_view(NOW, [old_b, row_a(NOW - 1)])
    assert [r.pid for r in view.runtimes] == [4242]
    assert [e.label for e in view.engines] == ["local", "gpu-box"]  # no pid prefix for one

    gone = build_view(NOW, [old_b, row_a(NOW - 50)])
    assert not gone.attached
    assert [r.pid for r in gone.runtimes] == [4242]  # the one seen last
    assert gone.last_seen == NOW - 50
    assert gone.totals is not None and gone.totals.jobs_done == SNAPSHOT_A["jobs_done"]


def test_totals_sum_over_runtimes_and_uptime_is_the_longest() -> None:
    b = snapshot_row(RUNTIME_B, 5151, SNAPSHOT_B, updated_at=NOW - 1, uptime_s=12.5)
    totals = build_view(NOW, [row_a(NOW - 1), b]).totals
    assert totals is not None
    assert totals.requests == SNAPSHOT_A["requests"] + SNAPSHOT_B["requests"]
    assert totals.idle_s == pytest.approx(SNAPSHOT_A["idle_s"] + SNAPSHOT_B["idle_s"])
    assert totals.uptime_s == SNAPSHOT_A["uptime_s"]
    jobs = SNAPSHOT_A["jobs_done"] + SNAPSHOT_B["jobs_done"] - SNAPSHOT_A["cache_hits"]
    assert totals.jobs_per_request == pytest.approx(jobs / totals.requests)


def test_a_snapshot_that_is_not_json_is_skipped() -> None:
    broken = {**row_a(NOW), "runtime_id": "x", "data": "{not json"}
    view = build_view(NOW, [broken])
    assert view.runtimes == () and view.totals is None and view.last_seen is None


def test_throughput_is_jobs_over_snapshot_time_and_pauses_when_detached() -> None:
    meter = ThroughputMeter()
    meter.add(build_view(NOW, [row_a(NOW - 1, jobs_done=10)]))
    assert meter.current is None  # one snapshot is no rate yet
    meter.add(build_view(NOW + 1, [row_a(NOW - 0.5, jobs_done=16)]))
    assert meter.current == pytest.approx(12.0)
    meter.add(build_view(NOW + 2, [row_a(NOW - 0.5, jobs_done=16)]))
    assert meter.current == pytest.approx(12.0)  # same snapshot read again: same rate
    meter.add(build_view(NOW + 60, [row_a(NOW - 0.5, jobs_done=16)]))
    assert list(meter.samples) == pytest.approx([12.0, 12.0])  # detached: no sample


def test_reader_reports_a_missing_database_instead_of_raising(tmp_path: Path) -> None:
    reader = StoreReader(tmp_path / "nothing.db")
    view = reader.read(NOW)
    reader.close()
    assert view.problem is not None and "there is no agentos database" in view.problem
    assert not (tmp_path / "nothing.db").exists()


def test_timeline_places_failed_calls_by_time_and_marks_cache_and_batch(
    seeded_db: Path,
) -> None:
    reader = StoreReader(seeded_db)
    timeline = reader.timeline(R1[:10])  # a prefix, as replay takes it
    reader.close()
    assert timeline is not None and timeline.run.id == R1
    kinds = [e.kind for e in timeline.entries]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    failed = [e for e in timeline.entries if e.kind == "call_failed"]
    assert [(e.attempt, round(e.offset_s, 2)) for e in failed] == [("#3", 3.03), ("#4", 7.47)]
    offsets = [e.offset_s for e in timeline.entries]
    assert offsets == sorted(offsets)
    reask = next(e for e in timeline.entries if e.attempt == "#2.1" and e.kind == "request")
    assert "assistant: The capital of France is Paris." in reask.body
    assert "Name the capital" not in reask.body  # shown with the first request already
    cached = next(e for e in timeline.entries if e.kind == "answer" and "cache hit" in e.headline)
    assert cached.attempt == "#3"
    assert (timeline.calls, timeline.failed_calls, timeline.tokens) == (6, 2, 4 * 121)


def test_unknown_event_types_show_their_payload() -> None:
    run = {"id": "r", "agent": "a", "status": "running", "started_at": NOW, "attempts": 1}
    event = {"type": "tool_call", "time": NOW + 1, "payload": {"tool": "search", "q": "x"}}
    (entry,) = build_timeline(run, [event], []).entries
    assert entry.headline == "tool call"
    assert json.loads(entry.body) == {"tool": "search", "q": "x"}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (0.0007, "0.7ms"), (0.0183, "18ms"), (5.04, "5.0s"), (96.9, "1m36s"),
     (7300, "2h01m"), (None, "-")],
)  # fmt: skip
def test_durations(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_times_of_another_day_show_the_date() -> None:
    from datetime import UTC

    assert clock_or_date(NOW - 10, NOW, UTC) == "08:04:33"
    assert clock_or_date(NOW - 86400, NOW, UTC) == "11-20 08:04"


def test_reader_shows_a_run_of_a_dead_process_as_crashed_without_writing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crashed.db"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with Store(db) as store:
        host = socket.gethostname()
        store.db.table("owners").insert(
            {
                "id": "dead",
                "host": host,
                "pid": int(gone.stdout),
                "started_at": time.time() - 9,
                "heartbeat_at": time.time() - 5,
                "status": "live",
            }
        )
        store.db.table("runs").insert(
            {
                "id": "r1",
                "agent": "a",
                "kind": "prompt",
                "status": "running",
                "started_at": time.time() - 8,
                "owner": "dead",
            }
        )
    reader = StoreReader(db)
    try:
        view = reader.read(time.time())
    finally:
        reader.close()
    assert [(r.id, r.status) for r in view.runs] == [("r1", "crashed")]
    assert view.runs[0].error is not None and "is gone" in view.runs[0].error
    with Store(db) as store:
        run = get_run(store, "r1")
        assert run is not None and run["status"] == "running", "top only reads"
