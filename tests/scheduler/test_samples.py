"""Sample indices across runs: fresh samples per tick and fire, the same ones for a re-run
single-shot agent and for a replay (:mod:`agentos.scheduler.samples`).

The loopback engine answers a sampled request as a function of its ``seed``, so equal
answers mean equal samples; the cache is on unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentos.replay.reexec import replay_exact, replay_live
from agentos.router.client import EngineClient
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import NullDisplay
from agentos.store import Store
from tests.scheduler.test_lifecycles import Bench, bench, berlin, until, until_equal

__all__ = ["bench"]

IDEAS = """\
agents:
  - name: ideas
    prompt: "Give one idea."
    temperature: 1.0
    output_sink: ideas
    life_cycle: %s
"""


def answers(bench: Bench, agent: str = "ideas") -> list[Any]:
    return [
        json.loads(data)
        for (data,) in bench.query(
            "select data from results join runs on runs.id = results.run_id "
            "where runs.agent = ? order by results.id",
            agent,
        )
    ]


def seeds(bench: Bench) -> list[Any]:
    return [body.get("seed") for _, body in bench.engine.stats.recorded if "seed" in body]


async def three_ticks(bench: Bench, agents: Any) -> None:
    clock = ManualClock(berlin(2026, 11, 21, 12, 0))
    running = bench.start(agents, clock)
    await until(lambda: bench.finished_runs() == 1)
    for expected in (2, 3):
        await clock.wait_for_sleepers(1)
        clock.advance(10)
        await until_equal(bench.finished_runs, expected)
    await clock.wait_for_sleepers(1)
    outcomes = await running.finish()
    assert [o.status for o in outcomes] == ["succeeded"] * 3


@pytest.mark.parametrize("cache", ["true", "false"])
async def test_each_perpetual_tick_gets_a_fresh_sample(bench: Bench, cache: str) -> None:
    agents = bench.agents(IDEAS % "{type: perpetual, every: 10s}" + f"    cache: {cache}\n")
    await three_ticks(bench, agents)
    got = answers(bench)
    assert len(got) == 3 and len(set(got)) == 3, got
    assert len(set(seeds(bench))) == 3, "every tick asks the engine for a sample of its own"
    hits = bench.query("select count(*) from llm_calls where cache_hit = 1 and kind = 'chat'")
    assert hits == [(0,)]
    assert bench.query("select count(*) from sink_items where sink = 'ideas'") == [(3,)]


async def test_a_restarted_agent_does_not_repeat_its_samples(bench: Bench) -> None:
    agents = bench.agents(IDEAS % "{type: perpetual, every: 1h}")
    for _ in range(3):  # cron calling `agentos run --once`, or a daemon restarted
        outcomes, _ = await bench.once(agents, ManualClock())
        assert [o.status for o in outcomes] == ["succeeded"]
    got = answers(bench)
    assert len(set(got)) == 3, got
    bases = bench.query("select sample_base from runs order by started_at")
    assert len({b for (b,) in bases}) == 3


async def test_each_fire_of_a_scheduled_agent_gets_a_fresh_sample(bench: Bench) -> None:
    agents = bench.agents(IDEAS % '{type: scheduled, cron: "0 9 * * *", timezone: Europe/Berlin}')
    for day in (21, 22):
        outcomes, _ = await bench.once(agents, ManualClock(berlin(2026, 11, day, 9, 0, 5)))
        assert [o.status for o in outcomes] == ["succeeded"]
    got = answers(bench)
    assert len(got) == 2 and got[0] != got[1]


async def test_a_single_shot_agent_run_again_gets_the_same_samples_from_the_cache(
    bench: Bench,
) -> None:
    agents = bench.agents(IDEAS % "{type: single-shot, length: 2, concurrency: 1}")
    for _ in range(2):
        running = bench.start(agents, ManualClock())
        outcomes = await asyncio.wait_for(running.task, 15)
        assert [o.status for o in outcomes] == ["succeeded"]
    got = answers(bench)
    assert len(got) == 4 and got[:2] == got[2:] and got[0] != got[1]
    assert bench.query("select count(*) from llm_calls where cache_hit = 1 and kind = 'chat'") == [
        (2,)
    ]
    assert bench.query("select sample_base from runs") == [(None,), (None,)]


async def test_a_replay_of_a_tick_asks_for_the_samples_the_tick_asked_for(bench: Bench) -> None:
    agents = bench.agents(IDEAS % "{type: perpetual, every: 10s}" + "    cache: false\n")
    await three_ticks(bench, agents)
    (run_id, recorded) = bench.query(
        "select runs.id, results.data from runs join results on results.run_id = runs.id "
        "order by runs.started_at desc limit 1"
    )[0]
    client = EngineClient("loop", bench.engine.url, timeout=5)
    handle = EngineHandle(name="loop", client=client, info=await client.detect(), max_requests=2)
    try:
        with Store(bench.db) as store:
            exact = await replay_exact(store, run_id, NullDisplay())
            async with Router([handle], StoreCallRecorder(store)) as router:
                live = await replay_live(store, run_id, NullDisplay(), router, from_step=1)
    finally:
        await client.aclose()
    assert exact.reproduced, exact.to_json()
    assert [s.source for s in live.steps] == ["live"]
    assert live.steps[0].new_result == json.loads(recorded), "the live replay got another sample"
    assert live.reproduced
    new_base = bench.query("select sample_base from runs where id = ?", live.new_run_id)
    old_base = bench.query("select sample_base from runs where id = ?", run_id)
    assert new_base == old_base and old_base[0][0]
