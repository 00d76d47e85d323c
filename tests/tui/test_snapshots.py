"""SVG snapshots of the dashboard at the sizes it must work at: 80×24, where only the
essentials show (a three-row header, the columns that fit), and wide (160×48, 160×40),
where every column does; on a cluster, its nodes as a header line at 80×24 and as a table
when tall.

The app runs with a fixed clock, UTC and no refresh timer, on a database seeded with fixed
times, so a picture depends on the data alone; the throughput line is fed by writing
successive snapshots and reloading, as a running runtime and the timer would.
Update with ``pytest tests/tui --snapshot-update`` and look at the SVGs before committing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from tests.tui.conftest import FakeClock, make_app, reload, settle
from tests.tui.seed import (
    NOW,
    R1,
    RUNTIME_B,
    SNAPSHOT_A,
    SNAPSHOT_B,
    SNAPSHOT_CLUSTER,
    seed,
    with_more_jobs,
    write_snapshot,
)

SnapCompare = Callable[..., bool]

JOBS_PER_HALF_SECOND = (3, 5, 9, 14, 12, 16, 8, 11, 15, 18, 13, 17)
"""What the runtime did between its snapshots, for a throughput line with a shape."""


def feeding_snapshots(
    db_path: Path, clock: FakeClock, *, two_runtimes: bool = False, cluster: bool = False
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        a, b = SNAPSHOT_CLUSTER if cluster else SNAPSHOT_A, SNAPSHOT_B
        for i, jobs in enumerate(JOBS_PER_HALF_SECOND, start=1):
            a = with_more_jobs(a, jobs, 0.5)
            write_snapshot(db_path, a, updated_at=NOW - 0.4 + 0.5 * i)
            if two_runtimes:
                b = with_more_jobs(b, i % 3, 0.5)
                write_snapshot(
                    db_path, b, runtime_id=RUNTIME_B, pid=5151, updated_at=NOW - 0.2 + 0.5 * i
                )
            clock.now = NOW + 0.5 * i
            await reload(pilot)

    return run_before


def test_dashboard_80x24(snap_compare: SnapCompare, db_path: Path, clock: FakeClock) -> None:
    seed(db_path)
    app = make_app(db_path, clock)
    assert snap_compare(app, terminal_size=(80, 24), run_before=feeding_snapshots(db_path, clock))


def test_dashboard_160x48(snap_compare: SnapCompare, db_path: Path, clock: FakeClock) -> None:
    seed(db_path, two_runtimes=True)
    app = make_app(db_path, clock)
    run_before = feeding_snapshots(db_path, clock, two_runtimes=True)
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


def test_cluster_80x24(snap_compare: SnapCompare, db_path: Path, clock: FakeClock) -> None:
    seed(db_path, cluster=True)
    app = make_app(db_path, clock)
    run_before = feeding_snapshots(db_path, clock, cluster=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_cluster_160x40(snap_compare: SnapCompare, db_path: Path, clock: FakeClock) -> None:
    seed(db_path, cluster=True)
    app = make_app(db_path, clock)
    run_before = feeding_snapshots(db_path, clock, cluster=True)
    assert snap_compare(app, terminal_size=(160, 40), run_before=run_before)


def test_not_attached_80x24(snap_compare: SnapCompare, db_path: Path) -> None:
    seed(db_path, snapshot_age_s=60)
    assert snap_compare(make_app(db_path), terminal_size=(80, 24), run_before=settle)


def test_timeline_80x24(snap_compare: SnapCompare, db_path: Path) -> None:
    seed(db_path)
    app = make_app(db_path)

    async def open_r1(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app.runs.focus()
        app.runs.move_cursor(row=app.runs.get_row_index(R1))
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_r1)
