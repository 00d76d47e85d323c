"""A producer and its readers in one ``agentos run``: a single-shot reader of a sink takes
the items its upstream agents write in the same run, until they are done.

Real loopback engine, real SQLite file, ``run_agents`` as the CLI calls it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import RunOutcome
from tests.scheduler.test_lifecycles import Bench, bench, publish

__all__ = ["bench"]

CHAIN = """\
agents:
  - name: producer
    prompt: 'ANSWER: {"n": %s}'
    response_format: {n: 1}
    output_sink: numbers
    life_cycle: {type: single-shot, length: %d, concurrency: 1}
    temperature: 0
    cache: false
  - name: squarer
    prompt: "ANSWER: squared {{ n }}"
    input_sink: numbers
"""


async def run_all(bench: Bench, agents: Any, **kwargs: Any) -> tuple[list[RunOutcome], str]:
    running = bench.start(agents, ManualClock(), **kwargs)
    outcomes = await asyncio.wait_for(running.task, 15)
    return outcomes, running.output.getvalue()


def results_of(bench: Bench, agent: str) -> list[Any]:
    return [
        json.loads(data)
        for (data,) in bench.query(
            "select data from results join runs on runs.id = results.run_id "
            "where runs.agent = ? order by results.id",
            agent,
        )
    ]


async def test_a_single_shot_reader_takes_the_items_its_producer_writes_in_the_same_run(
    bench: Bench,
) -> None:
    outcomes, output = await run_all(bench, bench.agents(CHAIN % ("7", 1)))
    assert "nothing to do" not in output
    assert sorted((o.agent, o.status) for o in outcomes) == [
        ("producer", "succeeded"),
        ("squarer", "succeeded"),
    ]
    assert results_of(bench, "squarer") == ["squared 7"]
    deliveries = bench.query("select status from sink_deliveries where consumer = 'squarer'")
    assert deliveries == [("done",)]


async def test_a_three_stage_chain_runs_through_in_one_run(bench: Bench) -> None:
    text = (CHAIN % ("7", 1)).replace(
        "    input_sink: numbers\n", "    input_sink: numbers\n    output_sink: squares\n"
    )
    text += '  - name: shouter\n    prompt: "ANSWER: {{ value }}!"\n    input_sink: squares\n'
    outcomes, output = await run_all(bench, bench.agents(text))
    assert "nothing to do" not in output
    assert [o.agent for o in outcomes if o.status == "succeeded"] == [
        "producer",
        "squarer",
        "shouter",
    ]
    assert results_of(bench, "shouter") == ["squared 7!"]


async def test_items_pending_from_before_and_from_the_producer_are_all_taken(
    bench: Bench,
) -> None:
    agents = bench.agents(CHAIN % ("3", 1))
    publish(bench.db, 2)
    outcomes, _ = await run_all(bench, agents)
    assert sorted(results_of(bench, "squarer")) == ["squared 2", "squared 3"]
    assert sum(o.agent == "squarer" for o in outcomes) == 2


async def test_a_reader_whose_producer_failed_says_it_got_nothing(bench: Bench) -> None:
    text = (CHAIN % ("7", 1)).replace("'ANSWER: {\"n\": 7}'", "'ANSWER: not json'")
    outcomes, output = await run_all(bench, bench.agents(text))
    assert [(o.agent, o.status) for o in outcomes] == [("producer", "failed")]
    assert "squarer: nothing to do: sink 'numbers' got no items from 'producer'" in output


async def test_agents_that_feed_each_other_do_not_wait_for_each_other(bench: Bench) -> None:
    agents = bench.agents(
        "agents:\n"
        "  - name: ping\n    prompt: 'ANSWER: ping {{ n }}'\n"
        "    input_sink: numbers\n    output_sink: pongs\n"
        "  - name: pong\n    prompt: 'ANSWER: pong {{ value }}'\n"
        "    input_sink: pongs\n    output_sink: numbers\n"
    )
    publish(bench.db, 1)
    outcomes, _ = await run_all(bench, agents)
    assert ("ping", "succeeded") in [(o.agent, o.status) for o in outcomes]
    assert results_of(bench, "ping") == ["ping 1"]
