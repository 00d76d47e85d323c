"""Saves the README's screenshot of ``agentos top`` (docs/top.svg), taken by Textual from the
same seeded database and fixed clock as the snapshot tests.

Run from the repository root: ``python -m tests.tui.screenshot [PATH] [WIDTH HEIGHT]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tests.tui.conftest import FakeClock, make_app, reload, settle
from tests.tui.seed import (
    NOW,
    RUNTIME_B,
    SNAPSHOT_A,
    SNAPSHOT_B,
    seed,
    with_more_jobs,
    write_snapshot,
)
from tests.tui.test_snapshots import JOBS_PER_HALF_SECOND


async def save(path: Path, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "agentos.db"
        seed(db_path, two_runtimes=True)
        clock = FakeClock()
        app = make_app(db_path, clock)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            a, b = SNAPSHOT_A, SNAPSHOT_B
            for i, jobs in enumerate(JOBS_PER_HALF_SECOND * 3, start=1):
                a = with_more_jobs(a, jobs, 0.5)
                b = with_more_jobs(b, i % 3, 0.5)
                write_snapshot(db_path, a, updated_at=NOW - 0.4 + 0.5 * i)
                write_snapshot(
                    db_path, b, runtime_id=RUNTIME_B, pid=5151, updated_at=NOW - 0.2 + 0.5 * i
                )
                clock.now = NOW + 0.5 * i
                await reload(pilot)
            app.save_screenshot(path.name, str(path.parent))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/top.svg")
    width, height = (int(v) for v in sys.argv[2:4]) if len(sys.argv) > 3 else (120, 32)
    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(save(target, (width, height)))
    print(f"saved {target}")
