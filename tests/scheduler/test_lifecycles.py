"""Life-cycles end to end: real engine on loopback, real SQLite file, a clock the test moves.

Each test starts ``run_agents`` as the CLI does, with a :class:`ManualClock` instead of the
wall clock, so a daily cron schedule, three days of downtime or a fire that lands while
the previous run still goes take milliseconds. The clock only moves once the runtime is
parked on it (``wait_for_sleepers``), so "advance, then look" never races the scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import PlainDisplay, RunOutcome
from agentos.scheduler.runner import run_agents
from agentos.sinks import SinkStore
from agentos.spec import load_agents, load_config
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


@dataclass
class Running:
    """A runtime started in the background."""

    task: asyncio.Task[list[RunOutcome]]
    stop: asyncio.Event
    output: io.StringIO

    async def finish(self, timeout: float = 15.0) -> list[RunOutcome]:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout)


@dataclass
class Bench:
    """A loopback engine, an agents file, a config and a database in one folder."""

    folder: Path
    engine: LoopbackEngine
    config_extra: str = ""
    """More of config.yaml, after its engines (``alerts:``, say)."""

    @property
    def db(self) -> Path:
        return self.folder / "runs.db"

    def agents(self, text: str) -> Any:
        (self.folder / "agents.yaml").write_text(text)
        return load_agents(self.folder / "agents.yaml")

    def config(self) -> Any:
        path = self.folder / "config.yaml"
        path.write_text(
            f"engines:\n  - name: loop\n    type: openai\n    base_url: {self.engine.url}\n"
            + self.config_extra
        )
        return load_config(path)

    def start(
        self,
        agents: Any,
        clock: ManualClock,
        *,
        once: bool = False,
        variables: dict[str, Any] | None = None,
    ) -> Running:
        stop = asyncio.Event()
        output = io.StringIO()
        task = asyncio.create_task(
            run_agents(
                agents.agents,
                config=self.config(),
                db_path=self.db,
                display=PlainDisplay(output),
                agents_file=str(agents.path),
                all_agents=agents,
                variables=variables,
                once=once,
                clock=clock,
                stop=stop,
            )
        )
        return Running(task, stop, output)

    async def once(
        self, agents: Any, clock: ManualClock, variables: dict[str, Any] | None = None
    ) -> tuple[list[RunOutcome], str]:
        running = self.start(agents, clock, once=True, variables=variables)
        outcomes = await asyncio.wait_for(running.task, 15)
        return outcomes, running.output.getvalue()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the database as another process sees them ([] before it exists)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def runs(self) -> list[tuple[Any, ...]]:
        return self.query("select id, status, started_at, finished_at from runs order by rowid")

    def finished_runs(self) -> int:
        return sum(1 for run in self.runs() if run[1] != "running")

    def fires(self) -> list[tuple[Any, ...]]:
        return self.query("select key, status, source, run_id from schedule_fires order by id")

    def requests(self) -> int:
        return sum(1 for path, _ in self.engine.stats.recorded if path == "/v1/chat/completions")


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    with LoopbackEngine().run_in_thread() as engine:
        yield Bench(tmp_path, engine)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def until_equal(read: Callable[[], Any], expected: Any, timeout: float = 15.0) -> None:
    await until(lambda: read() == expected, timeout)


def send_control(db: Path, command: str, target: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "insert into control (created_at, command, target, args) values (?, ?, ?, 'null')",
            (time.time(), command, target),
        )
    conn.close()


DAILY = """\
agents:
  - name: daily-report
    prompt: "ANSWER: report for {{ fire_time }}"
    vars: {fire_time: unset}
    life_cycle: {type: scheduled, cron: "0 9 * * *", timezone: Europe/Berlin%s}
"""


# -- single-shot -------------------------------------------------------------------------


async def test_single_shot_runs_once_and_claims_no_fire(bench: Bench) -> None:
    agents = bench.agents(
        "agents:\n  - name: one\n    prompt: 'ANSWER: {\"n\": 1}'\n    response_format: {n: 1}\n"
    )
    running = bench.start(agents, ManualClock())
    (outcome,) = await asyncio.wait_for(running.task, 15)
    assert (outcome.agent, outcome.status, outcome.successes) == ("one", "succeeded", 1)
    assert [r[1] for r in bench.runs()] == ["succeeded"]
    assert bench.fires() == []


# -- perpetual ---------------------------------------------------------------------------


async def test_perpetual_every_fires_on_each_interval_and_coalesces_a_late_wake(
    bench: Bench,
) -> None:
    agents = bench.agents(
        "agents:\n  - name: ticker\n    prompt: 'ANSWER: tick'\n    cache: false\n"
        "    life_cycle: {type: perpetual, every: 10s}\n"
    )
    clock = ManualClock(berlin(2026, 11, 21, 12, 0))
    running = bench.start(agents, clock)
    await until(lambda: bench.finished_runs() == 1)  # the first fire is the start itself
    for expected in (2, 3):
        await clock.wait_for_sleepers(1)
        clock.advance(10)
        await until_equal(bench.finished_runs, expected)
    await clock.wait_for_sleepers(1)
    clock.advance(25)  # slept through the fires at +30 s and +40 s: one run for both
    await until(lambda: bench.finished_runs() == 4)
    await clock.wait_for_sleepers(1)
    outcomes = await running.finish()
    assert [o.status for o in outcomes] == ["succeeded"] * 4
    assert len(bench.runs()) == 4
    assert "1 missed fire(s) coalesced" in running.output.getvalue()
    assert bench.fires() == [], "interval fires are not recorded"


async def test_top_reaches_runs_a_daemon_starts_later(bench: Bench) -> None:
    bench.engine.cost.per_request_ms = 40
    agents = bench.agents(
        "agents:\n  - name: worker\n    prompt: 'ANSWER: {\"n\": 1}'\n    response_format: {n: 1}\n"
        "    cache: false\n"
        "    life_cycle: {type: perpetual, every: 1m, length: 200, concurrency: 1}\n"
    )
    clock = ManualClock()
    running = bench.start(agents, clock)
    for count in (1, 2):
        await until_equal(lambda: len(bench.runs()), count)
        run_id = bench.runs()[-1][0]
        send_control(bench.db, "cancel", run_id)
        status = functools.partial(bench.query, "select status from runs where id=?", run_id)
        await until_equal(status, [("cancelled",)])
        await clock.wait_for_sleepers(1)
        if count == 1:
            clock.advance(60)
    outcomes = await running.finish()
    assert [o.status for o in outcomes] == ["cancelled", "cancelled"]
    errors = bench.query("select error from runs")
    assert errors == [("cancelled from agentos top",)] * 2
    (data,) = bench.query("select data from runtime_snapshots")[0]
    (worker,) = [p for p in json.loads(data)["processes"] if p["name"] == "worker"]
    assert (worker["runs"], worker["runs_failed"], worker["life_cycle"]) == (2, 2, "perpetual")


async def test_perpetual_once_runs_one_and_returns(bench: Bench) -> None:
    agents = bench.agents(
        "agents:\n  - name: ticker\n    prompt: 'ANSWER: tick'\n"
        "    life_cycle: {type: perpetual, every: 1h}\n"
    )
    outcomes, _ = await bench.once(agents, ManualClock())
    assert [o.status for o in outcomes] == ["succeeded"]
    assert len(bench.runs()) == 1


# -- scheduled ---------------------------------------------------------------------------


async def test_scheduled_fires_at_the_cron_times_of_its_zone(bench: Bench) -> None:
    agents = bench.agents(DAILY % "")
    clock = ManualClock(berlin(2026, 11, 21, 8, 0))
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    assert clock.next_wake() == berlin(2026, 11, 21, 9, 0)
    clock.set(berlin(2026, 11, 21, 8, 59, 59))
    await clock.wait_for_sleepers(1)
    assert bench.runs() == []
    clock.set(berlin(2026, 11, 21, 9, 0))
    await until(lambda: bench.finished_runs() == 1)
    await clock.wait_for_sleepers(1)
    assert clock.next_wake() == berlin(2026, 11, 22, 9, 0)
    clock.set(berlin(2026, 11, 22, 9, 0, 5))
    await until(lambda: bench.finished_runs() == 2)
    await clock.wait_for_sleepers(1)
    await running.finish()
    keys = ["daily-report@2026-11-21T09:00:00+01:00", "daily-report@2026-11-22T09:00:00+01:00"]
    run_ids = [r[0] for r in bench.runs()]
    assert bench.fires() == [
        (keys[0], "succeeded", "daemon", run_ids[0]),
        (keys[1], "succeeded", "daemon", run_ids[1]),
    ]
    answers = [json.loads(d) for (d,) in bench.query("select data from results order by rowid")]
    assert answers == [
        "report for 2026-11-21T09:00:00+01:00",
        "report for 2026-11-22T09:00:00+01:00",
    ]


# -- overlap -----------------------------------------------------------------------------

EVERY_TEN_MINUTES = """\
agents:
  - name: slow
    prompt: "ANSWER: done"
    cache: false
    life_cycle: {type: scheduled, cron: "*/10 * * * *", timezone: UTC, overlap: %s}
"""


async def overlap_scenario(
    bench: Bench, policy: str, *, extra_fires: int, runs: int
) -> list[RunOutcome]:
    """A fire at 10:00 starts a slow run; ``extra_fires`` more fires come while it goes;
    returns once ``runs`` runs have ended."""
    agents = bench.agents(EVERY_TEN_MINUTES % policy)
    start = datetime(2026, 11, 21, 10, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    clock = ManualClock(start - 5)
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    bench.engine.cost.per_request_ms = 600  # the engines are up: only the runs are slow
    clock.set(start)
    await until(lambda: len(bench.runs()) == 1)
    for n in range(1, extra_fires + 1):
        await clock.wait_for_sleepers(1)
        clock.set(start + 600 * n)
        await until_equal(lambda: len(bench.fires()), n + 1)
    assert bench.runs()[0][1] == "running", "the first run should still go (engine too fast?)"
    await until_equal(bench.finished_runs, runs)
    await clock.wait_for_sleepers(1)
    return await running.finish()


async def test_overlap_skip_records_the_fire_as_skipped(bench: Bench) -> None:
    outcomes = await overlap_scenario(bench, "skip", extra_fires=1, runs=1)
    assert [o.status for o in outcomes] == ["succeeded"]
    assert [(f[1], f[2]) for f in bench.fires()] == [
        ("succeeded", "daemon"),
        ("skipped-overlap", "daemon"),
    ]


async def test_overlap_queue_holds_one_fire_until_the_run_ends(bench: Bench) -> None:
    outcomes = await overlap_scenario(bench, "queue", extra_fires=2, runs=2)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    assert [f[1] for f in bench.fires()] == ["succeeded", "succeeded", "skipped-overlap"]
    (first, second) = bench.runs()
    assert second[2] >= first[3], "the queued fire started before the first run ended"
    assert bench.fires()[1][3] == second[0]


async def test_overlap_allow_runs_side_by_side(bench: Bench) -> None:
    outcomes = await overlap_scenario(bench, "allow", extra_fires=1, runs=2)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    (first, second) = bench.runs()
    assert second[2] < first[3], "the second run should start while the first still goes"
    assert [f[1] for f in bench.fires()] == ["succeeded", "succeeded"]


# -- catch-up ----------------------------------------------------------------------------


async def daemon_fires_once_then_stops(bench: Bench, agents: Any) -> None:
    """A daemon that ran the fire of 21 Nov 09:00 and was then stopped."""
    clock = ManualClock(berlin(2026, 11, 21, 8, 59, 50))
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    clock.set(berlin(2026, 11, 21, 9, 0))
    await until(lambda: bench.finished_runs() == 1)
    await clock.wait_for_sleepers(1)
    await running.finish()


async def test_catch_up_coalesces_missed_fires_into_one_run(bench: Bench) -> None:
    agents = bench.agents(DAILY % "")
    await daemon_fires_once_then_stops(bench, agents)
    # down for three days; back at 10:30 on the 24th: the 22nd, 23rd and 24th were missed
    clock = ManualClock(berlin(2026, 11, 24, 10, 30))
    running = bench.start(agents, clock)
    await until(lambda: bench.finished_runs() == 2)
    await clock.wait_for_sleepers(1)
    assert clock.next_wake() == berlin(2026, 11, 25, 9, 0)
    outcomes = await running.finish()
    assert [o.status for o in outcomes] == ["succeeded"]
    assert [f[0].split("@")[1] for f in bench.fires()] == [
        "2026-11-21T09:00:00+01:00",
        "2026-11-24T09:00:00+01:00",
    ]
    assert "2 missed fire(s) coalesced into the fire of 2026-11-24T09:00" in (
        running.output.getvalue()
    )


async def test_catch_up_false_skips_missed_fires(bench: Bench) -> None:
    agents = bench.agents(DAILY % ", catch_up: false")
    await daemon_fires_once_then_stops(bench, agents)
    clock = ManualClock(berlin(2026, 11, 24, 10, 30))
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    assert bench.fires()[-1][:2] == (
        "daily-report@2026-11-24T09:00:00+01:00",
        "skipped-missed",
    )
    assert len(bench.runs()) == 1
    clock.set(berlin(2026, 11, 25, 9, 0, 10))  # on time again: runs
    await until(lambda: bench.finished_runs() == 2)
    await clock.wait_for_sleepers(1)
    outcomes = await running.finish()
    assert [o.status for o in outcomes] == ["succeeded"]
    assert [f[1] for f in bench.fires()] == ["succeeded", "skipped-missed", "succeeded"]


async def test_a_missed_fire_sets_off_the_missed_alert_once(bench: Bench) -> None:
    alerts = bench.folder / "alerts.jsonl"
    bench.config_extra = (
        f"alerts:\n  - failures: null\n    command: cat >> {alerts}; echo >> {alerts}\n"
    )
    agents = bench.agents(DAILY % ", catch_up: false")
    await daemon_fires_once_then_stops(bench, agents)
    assert not alerts.exists()
    clock = ManualClock(berlin(2026, 11, 24, 10, 30))
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    await running.finish()
    sent = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    assert [(a["agent"], a["kind"]) for a in sent] == [("daily-report", "missed")]
    assert "2026-11-24T09:00:00+01:00" in sent[0]["message"]
    assert "catch_up: false" in sent[0]["message"]
    assert bench.query("select kind, target, status from alerts") == [("missed", "command", "sent")]


# -- --once --------------------------------------------------------------------------------


async def test_once_runs_the_latest_due_fire_once(bench: Bench) -> None:
    agents = bench.agents(DAILY % "")
    await daemon_fires_once_then_stops(bench, agents)
    clock = ManualClock(berlin(2026, 11, 23, 9, 0, 30))  # missed the 22nd: coalesced
    outcomes, output = await bench.once(agents, clock)
    assert [o.status for o in outcomes] == ["succeeded"]
    assert bench.fires()[-1][:3] == (
        "daily-report@2026-11-23T09:00:00+01:00",
        "succeeded",
        "once",
    )
    assert "1 missed fire(s) coalesced" in output
    requests = bench.requests()
    clock.advance(60)
    again, output = await bench.once(agents, clock)
    assert again == []
    assert "nothing due: the latest fire (2026-11-23T09:00:00+01:00) was already claimed" in (
        output
    )
    assert "next fire 2026-11-24T09:00:00+01:00" in output
    assert bench.requests() == requests
    assert len(bench.runs()) == 2


async def test_once_with_catch_up_false_skips_a_late_fire(bench: Bench) -> None:
    agents = bench.agents(DAILY % ", catch_up: false")
    clock = ManualClock(berlin(2026, 11, 23, 11, 0))
    outcomes, output = await bench.once(agents, clock)
    assert outcomes == []
    assert "was missed and catch_up is false" in output
    assert [f[1] for f in bench.fires()] == ["skipped-missed"]
    on_time = ManualClock(berlin(2026, 11, 24, 9, 0, 40))
    outcomes, _ = await bench.once(agents, on_time)
    assert [o.status for o in outcomes] == ["succeeded"]


async def test_once_reports_a_failed_run(bench: Bench) -> None:
    agents = bench.agents(
        "agents:\n  - name: broken\n    prompt: 'ANSWER: no json here'\n"
        "    response_format: {n: 1}\n"
        "    life_cycle: {type: scheduled, cron: '*/5 * * * *', timezone: UTC, max_attempts: 1}\n"
    )
    clock = ManualClock(datetime(2026, 11, 21, 10, 5, 3, tzinfo=ZoneInfo("UTC")).timestamp())
    outcomes, _ = await bench.once(agents, clock)
    assert [o.status for o in outcomes] == ["failed"]
    assert [f[1] for f in bench.fires()] == ["failed"]


# -- sinks ---------------------------------------------------------------------------------

CHAIN = """\
agents:
  - name: producer
    prompt: 'ANSWER: {"n": 7}'
    response_format: {n: 1}
    output_sink: numbers
  - name: squarer
    prompt: "ANSWER: squared {{ n }}"
    input_sink: numbers
    life_cycle: {type: %s}
"""


def publish(db: Path, *values: int) -> None:
    with Store(db) as store, SinkStore(store, owner="test") as sinks:
        for value in values:
            sinks.publish("numbers", {"n": value}, produced_by="test")


async def test_a_perpetual_sink_reader_runs_per_item_as_items_arrive(bench: Bench) -> None:
    agents = bench.agents(CHAIN % "perpetual")
    running = bench.start(agents, ManualClock())
    await until(lambda: len(bench.query("select 1 from runs where agent='squarer'")) == 1)
    publish(bench.db, 8, 9)
    await until(
        lambda: (
            len(bench.query("select 1 from runs where agent='squarer' and status='succeeded'")) == 3
        )
    )
    outcomes = await running.finish()
    assert (
        sorted((o.agent, o.status) for o in outcomes)
        == [("producer", "succeeded")] + [("squarer", "succeeded")] * 3
    )
    answers = sorted(
        json.loads(d)
        for (d,) in bench.query(
            "select data from results join runs on runs.id = results.run_id "
            "where runs.agent = 'squarer'"
        )
    )
    assert answers == ["squared 7", "squared 8", "squared 9"]
    deliveries = bench.query("select status, run_id from sink_deliveries where consumer='squarer'")
    assert len(deliveries) == 3 and all(s == "done" and r for s, r in deliveries)


async def test_a_single_shot_sink_reader_drains_what_is_pending_then_stops(bench: Bench) -> None:
    text = CHAIN % "single-shot"
    agents = bench.agents(text)
    reader = [a for a in agents.agents if a.name == "squarer"]
    agents.agents[:] = reader
    outcomes, output = await bench.once(agents, ManualClock())
    assert outcomes == []
    assert "nothing to do: sink 'numbers' has no items pending for it" in output
    assert bench.engine.stats.requests == 0, "nothing to do starts no engine work"
    publish(bench.db, 2, 3)
    running = bench.start(agents, ManualClock())
    outcomes = await asyncio.wait_for(running.task, 15)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    running = bench.start(agents, ManualClock(), variables={"n": "5"})
    outcomes = await asyncio.wait_for(running.task, 15)
    assert [o.status for o in outcomes] == ["succeeded"], "--var runs it without an item"
    answers = [json.loads(d) for (d,) in bench.query("select data from results order by rowid")]
    assert answers == ["squared 2", "squared 3", "squared 5"]


# -- stopping ------------------------------------------------------------------------------


async def test_a_daemon_cancelled_mid_run_records_the_run_fire_and_item_as_unfinished(
    bench: Bench,
) -> None:
    agents = bench.agents(
        DAILY
        % ""
        + "  - name: squarer\n    prompt: 'ANSWER: squared {{ n }}'\n    input_sink: numbers\n"
        "    life_cycle: {type: perpetual}\n"
    )
    clock = ManualClock(berlin(2026, 11, 21, 8, 59, 50))
    running = bench.start(agents, clock)
    await clock.wait_for_sleepers(1)
    bench.engine.cost.per_request_ms = 5000
    publish(bench.db, 4)
    clock.set(berlin(2026, 11, 21, 9, 0))
    # both runs past their start (a cancel while a run creates its row is another case)
    started = "select count(*) from events where type = 'run_started'"
    await until_equal(lambda: bench.query(started), [(2,)])
    await until_equal(
        lambda: [s for (s,) in bench.query("select status from sink_deliveries")], ["claimed"]
    )
    running.task.cancel()  # Ctrl-C / SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await running.task
    assert bench.query("select status, error from runs") == [("cancelled", "interrupted")] * 2
    assert [f[1] for f in bench.fires()] == ["cancelled"]
    assert bench.query("select status, run_id from sink_deliveries") == [("pending", None)]
