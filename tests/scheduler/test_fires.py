"""Fires: cron and interval series, the manual clock, and one run per fire across runtimes.

The races are real: several processes claim the same keys at the same moment; two
runtimes on one database wake on the same fire; a daemon and an ``--once`` process (the
call cron makes) reach the same slot together. Each fire must run exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import io
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.fires import CronSeries, Fire, FireLedger, IntervalSeries, fire_key
from agentos.scheduler.runner import run_agents
from agentos.spec import load_agents, load_config
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine

BERLIN = ZoneInfo("Europe/Berlin")
ROOT = Path(__file__).resolve().parents[2]


def berlin(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


# -- series ------------------------------------------------------------------------------


def test_cron_series_reads_the_expression_in_its_zone() -> None:
    series = CronSeries("0 9 * * mon-fri", BERLIN)
    friday_nine = berlin(2026, 11, 20, 9, 0)
    assert series.latest_at_or_before(friday_nine) == friday_nine
    assert series.latest_at_or_before(friday_nine - 1) == berlin(2026, 11, 19, 9, 0)
    assert series.next_after(friday_nine) == berlin(2026, 11, 23, 9, 0)  # Monday
    assert series.count_between(berlin(2026, 11, 16, 9, 0), friday_nine) == 3
    assert series.label(friday_nine) == "2026-11-20T09:00:00+01:00"
    assert fire_key("daily", series.label(friday_nine)) == "daily@2026-11-20T09:00:00+01:00"


def test_cron_series_across_daylight_saving_changes() -> None:
    daily = CronSeries("30 2 * * *", BERLIN)
    # 29 March 2026: 02:30 does not exist in Berlin (02:00 -> 03:00); it fires once, at 03:00
    spring = [daily.next_after(berlin(2026, 3, 28, 12, 0))]
    spring.append(daily.next_after(spring[0]))
    assert [daily.label(t) for t in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # 25 October 2026: 02:30 happens twice; a daily job runs once, an hourly one twice
    autumn = daily.next_after(berlin(2026, 10, 24, 12, 0))
    assert daily.label(autumn) == "2026-10-25T02:30:00+02:00"
    assert daily.label(daily.next_after(autumn)) == "2026-10-26T02:30:00+01:00"
    assert daily.latest_at_or_before(autumn + 3600) == autumn
    assert daily.count_between(autumn - 1, berlin(2026, 10, 26, 0, 0)) == 1
    hourly = CronSeries("30 * * * *", BERLIN)
    first = hourly.next_after(berlin(2026, 10, 25, 1, 45))
    second = hourly.next_after(first)
    assert (hourly.label(first), hourly.label(second)) == (
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    )
    assert second - first == 3600


def test_interval_series_counts_from_its_start() -> None:
    series = IntervalSeries(1000.0, 30.0)
    assert series.latest_at_or_before(999.0) is None
    assert series.latest_at_or_before(1000.0) == 1000.0
    assert series.latest_at_or_before(1059.9) == 1030.0
    assert series.next_after(999.0) == 1000.0
    assert series.next_after(1030.0) == 1060.0
    assert series.count_between(1000.0, 1090.0) == 2  # 1030, 1060
    assert series.count_between(999.0, 1000.0) == 0
    assert series.count_between(1000.0, 1030.0) == 0


async def test_manual_clock_wakes_sleepers_when_moved() -> None:
    clock = ManualClock(100.0)
    woke: list[float] = []

    async def sleeper(until: float) -> None:
        await clock.sleep_until(until)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(t)) for t in (130.0, 110.0, 90.0)]
    await clock.wait_for_sleepers(2)
    assert woke == [100.0], "a time already past does not wait"
    assert clock.next_wake() == 110.0
    clock.advance(15)
    await asyncio.sleep(0)
    assert woke == [100.0, 115.0]
    clock.set(200.0)
    await asyncio.gather(*tasks)
    assert woke == [100.0, 115.0, 200.0]
    with pytest.raises(ValueError):
        clock.set(150.0)


# -- claims --------------------------------------------------------------------------------

CLAIMER = """
import pathlib, sys, time
from agentos.scheduler.fires import Fire, FireLedger
from agentos.store import Store

db, folder, name, rounds = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with Store(db) as store:
    ledger = FireLedger(store, claimed_by=name)
    print("ready", flush=True)
    for n in range(rounds):
        while not (folder / f"go-{n}").exists():
            time.sleep(0.0002)
        fire = Fire("report", float(n), f"slot-{n}", f"report@slot-{n}")
        print(n, "won" if ledger.claim(fire, source="once") else "lost", flush=True)
"""


def test_a_fire_key_is_won_by_exactly_one_of_several_processes(tmp_path: Path) -> None:
    db = tmp_path / "fires.db"
    with Store(db):
        pass
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    rounds, racers = 8, 5
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(tmp_path), f"racer-{i}", str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(racers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for n in range(rounds):
            (tmp_path / f"go-{n}").touch()
            results = []
            for proc in procs:
                assert proc.stdout is not None
                index, result = proc.stdout.readline().split()
                assert int(index) == n
                results.append(result)
            assert sorted(results) == ["lost"] * (racers - 1) + ["won"], f"round {n}: {results}"
    finally:
        for proc in procs:
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
    conn = sqlite3.connect(db)
    rows = conn.execute("select key, count(*) from schedule_fires group by key").fetchall()
    conn.close()
    assert sorted(rows) == [(f"report@slot-{n}", 1) for n in range(rounds)]


def test_ledger_remembers_the_latest_fire_seen(tmp_path: Path) -> None:
    with Store(tmp_path / "f.db") as store:
        ledger = FireLedger(store, claimed_by="me")
        assert ledger.last_fire_time("report") is None
        fire = Fire("report", 200.0, "b", "report@b")
        assert ledger.claim(fire, source="daemon", status="skipped-missed")
        assert ledger.claim(Fire("report", 100.0, "a", "report@a"), source="daemon")
        assert not ledger.claim(fire, source="once")
        assert ledger.last_fire_time("report") == 200.0
        ledger.finish(fire, status="succeeded", run_id="r1")
        store.flush()
        row = ledger.get("report@b")
        assert row is not None
        assert (row["status"], row["run_id"], row["claimed_by"]) == ("succeeded", "r1", "me")
        assert row["finished_at"] is not None


# -- runtimes racing ---------------------------------------------------------------------

AGENTS = """\
agents:
  - name: daily-report
    prompt: "ANSWER: report for {{ fire_time }}"
    vars: {fire_time: unset}
    cache: false
    life_cycle: {type: scheduled, cron: "0 9 * * *", timezone: Europe/Berlin}
"""

ONCE = """
import asyncio, sys
from pathlib import Path
from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.runner import run_agents
from agentos.spec import load_agents, load_config

agents = load_agents(sys.argv[1])
outcomes = asyncio.run(
    run_agents(
        agents.agents,
        config=load_config(sys.argv[2]),
        db_path=Path(sys.argv[3]),
        display=PlainDisplay(),
        agents_file=sys.argv[1],
        once=True,
        clock=ManualClock(float(sys.argv[4])),
    )
)
print("outcomes", [o.status for o in outcomes], flush=True)
sys.exit(1 if any(o.status != "succeeded" for o in outcomes) else 0)
"""


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def write_files(tmp_path: Path, engine: LoopbackEngine) -> tuple[Path, Path]:
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS)
    config = tmp_path / "config.yaml"
    config.write_text(f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n")
    return agents, config


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def until_equal(read: Callable[[], Any], expected: Any, timeout: float = 15.0) -> None:
    await until(lambda: read() == expected, timeout)


def settled(db: Path) -> tuple[int, int, bool]:
    """Fires recorded, runs recorded, and whether every run has ended."""
    statuses = [s for (s,) in rows(db, "select status from runs")]
    fires = len(rows(db, "select 1 from schedule_fires"))
    return fires, len(statuses), all(s != "running" for s in statuses)


def start_daemon(
    agents_path: Path, config_path: Path, db: Path, clock: ManualClock
) -> tuple[asyncio.Task[Any], asyncio.Event, io.StringIO]:
    stop = asyncio.Event()
    output = io.StringIO()
    agents = load_agents(agents_path)
    task = asyncio.create_task(
        run_agents(
            agents.agents,
            config=load_config(config_path),
            db_path=db,
            display=PlainDisplay(output),
            clock=clock,
            stop=stop,
        )
    )
    return task, stop, output


async def test_two_daemons_on_one_database_run_each_fire_once(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    agents, config = write_files(tmp_path, engine)
    db = tmp_path / "runs.db"
    clock = ManualClock(berlin(2026, 11, 21, 8, 0))
    daemons = [start_daemon(agents, config, db, clock) for _ in range(2)]
    for day in (21, 22, 23):
        await clock.wait_for_sleepers(2)
        clock.set(berlin(2026, 11, day, 9, 0))  # both wake on the same fire
        await until_equal(functools.partial(settled, db), (day - 20, day - 20, True))
    await clock.wait_for_sleepers(2)
    for _, stop, _ in daemons:
        stop.set()
    results = [await asyncio.wait_for(task, 15) for task, _, _ in daemons]
    assert sum(len(r) for r in results) == 3
    assert [s for (s,) in rows(db, "select status from schedule_fires")] == ["succeeded"] * 3
    assert len(rows(db, "select 1 from runs")) == 3
    lost = sum(output.getvalue().count("already claimed") for _, _, output in daemons)
    assert lost == 3, "each fire should be lost by exactly one of the two daemons"


async def run_once_process(
    script: Path, agents: Path, config: Path, db: Path, now: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(agents),
        str(config),
        str(db),
        str(now),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )


async def test_a_daemon_and_a_once_process_that_fire_the_same_slot_run_it_once(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    agents, config = write_files(tmp_path, engine)
    script = tmp_path / "once.py"
    script.write_text(textwrap.dedent(ONCE))
    db = tmp_path / "runs.db"
    clock = ManualClock(berlin(2026, 11, 21, 8, 59, 50))
    task, stop, output = start_daemon(agents, config, db, clock)
    once_lines: list[str] = []
    # The --once process claims a few ms after its engine line; waking the daemon with
    # these head starts lets it win, toss up (about 4 ms), and lose.
    for day, head_start in ((21, 0.0), (22, 0.004), (23, 0.015)):
        await clock.wait_for_sleepers(1)
        fire = berlin(2026, 11, day, 9, 0)
        proc = await run_once_process(script, agents, config, db, fire + 2)
        assert proc.stdout is not None
        # the --once process has its engines up and is about to claim: wake the daemon now
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            once_lines.append(line)
            assert line, "".join(once_lines)
            if "engine loop at" in line:
                break
        await asyncio.sleep(head_start)
        clock.set(fire)
        rest = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
        once_lines.append(rest)
        assert await proc.wait() == 0, "".join(once_lines)
        await until_equal(functools.partial(settled, db), (day - 20, day - 20, True))
    await clock.wait_for_sleepers(1)
    stop.set()
    await asyncio.wait_for(task, 15)
    fires = rows(db, "select key, status, source from schedule_fires order by fire_time")
    assert [(k.split("@")[1][:10], s) for k, s, _ in fires] == [
        ("2026-11-21", "succeeded"),
        ("2026-11-22", "succeeded"),
        ("2026-11-23", "succeeded"),
    ]
    assert len(rows(db, "select 1 from runs")) == 3, "each slot must run exactly once"
    losers = output.getvalue().count("already claimed") + "".join(once_lines).count(
        "already claimed"
    )
    assert losers == 3, output.getvalue() + "".join(once_lines)


async def test_once_after_the_daemon_ran_the_slot_finds_nothing_due(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    agents, config = write_files(tmp_path, engine)
    script = tmp_path / "once.py"
    script.write_text(textwrap.dedent(ONCE))
    db = tmp_path / "runs.db"
    clock = ManualClock(berlin(2026, 11, 21, 8, 59, 50))
    task, stop, _ = start_daemon(agents, config, db, clock)
    await clock.wait_for_sleepers(1)
    clock.set(berlin(2026, 11, 21, 9, 0))
    await until(lambda: [s for (s,) in rows(db, "select status from runs")] == ["succeeded"])
    await clock.wait_for_sleepers(1)
    proc = await run_once_process(script, agents, config, db, berlin(2026, 11, 21, 9, 0, 20))
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "nothing due" in out.decode() and "outcomes []" in out.decode()
    stop.set()
    await asyncio.wait_for(task, 15)
    assert len(rows(db, "select 1 from runs")) == 1
