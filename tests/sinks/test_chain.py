"""Agents chained over sinks, with real prompt-agent runs publishing through the result
hook and a small pump in the role of the scheduler: claim an item, run the reading agent
with the item's fields as variables, ack (or nack) it.

The loopback test scripts every answer (``ANSWER:``), so what flows down the chain is
known exactly; the model test runs examples/daisy_chain.yaml on the bundled model.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentos.agents.base import RunContext
from agentos.agents.registry import make_run
from agentos.router.client import EngineClient
from agentos.router.engines import open_engines, router_settings
from agentos.router.handle import RouterSettings
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.scheduler.display import PlainDisplay
from agentos.sinks import SinkStore, publisher, sink_readers, sink_stats
from agentos.spec.agents import AgentsFile, load_agents
from agentos.spec.config import Config
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "daisy_chain.yaml"

CHAIN = """
agents:
  - name: question-writer
    input_sink: topics
    prompt: 'Ask about {{ topic }}. ANSWER: {"question": "why {{ topic }}?"}'
    response_format: {question: a question}
    life_cycle: {type: perpetual}
    output_sink: questions
  - name: answerer
    input_sink: questions
    prompt: 'Answer {{ question }} ANSWER: {"answer": "because of {{ question }}"}'
    response_format: {answer: the answer}
    life_cycle: {type: perpetual}
    output_sink: answers
  - name: flashcard-maker
    input_sink: answers
    prompt: 'Card for {{ answer }} ANSWER: {"title": "card", "fact": "{{ answer }}"}'
    response_format: {title: a title, fact: the fact}
    life_cycle: {type: perpetual}
    output_sink: cards
"""


async def pump(agents: AgentsFile, context: RunContext, sinks: SinkStore) -> list[str]:
    """Run the reading agents on their sinks' items until no sink has work; the run ids."""
    run_ids: list[str] = []
    readers = [a for a in agents if a.input_sink]
    while True:
        busy = False
        for spec in readers:
            assert spec.input_sink is not None
            for item in await sinks.aclaim(spec.input_sink, spec.name, limit=4):
                busy = True
                run = make_run(spec, context, variables=item.data)
                outcome = await run.run()
                run_ids.append(outcome.run_id)
                if outcome.status == "succeeded":
                    assert await sinks.aack(item.id, spec.name, run_id=outcome.run_id)
                else:
                    await sinks.anack(item.id, spec.name)
        if not busy:
            return run_ids


@pytest.fixture
async def loopback_router(tmp_path: Path) -> AsyncIterator[tuple[Router, Store]]:
    async with LoopbackEngine() as engine:
        client = EngineClient("loop", engine.url, timeout=5.0)
        info = await client.detect(None)
        handle = EngineHandle(name="loop", client=client, info=info, max_requests=4)
        with Store(tmp_path / "agentos.db") as store:
            settings = RouterSettings(batch_window_s=0)
            async with Router([handle], StoreCallRecorder(store), settings=settings) as router:
                yield router, store
        await client.aclose()


async def test_three_agents_chained_over_sinks(
    tmp_path: Path, loopback_router: tuple[Router, Store]
) -> None:
    router, store = loopback_router
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN)
    agents = load_agents(path)
    with SinkStore(store, owner="test-runtime") as sinks:
        context = RunContext(
            router=router,
            store=store,
            display=PlainDisplay(io.StringIO()),
            agents_file=str(path),
            agents=agents,
            sinks=sinks,
        )
        context.on_result.append(publisher(sinks))
        for topic in ("bees", "ants", "bees"):  # the repeat is one item
            sinks.publish("topics", {"topic": topic}, produced_by=None)

        run_ids = await pump(agents, context, sinks)
        store.flush()

        assert len(run_ids) == 6
        cards = sinks.claim("cards", "reader", limit=10)
        assert [c.data for c in cards] == [
            {"title": "card", "fact": "because of why bees?"},
            {"title": "card", "fact": "because of why ants?"},
        ]
        producers = {c.produced_by for c in cards}
        rows = store.db.execute(
            "SELECT agent FROM runs WHERE id IN (?, ?)", sorted(p for p in producers if p)
        ).fetchall()
        assert rows == [("flashcard-maker",), ("flashcard-maker",)]

        stats = {s["sink"]: s for s in sink_stats(store, readers=sink_readers(agents))}
        assert [(s["items"], s["pending"], s["done"]) for s in stats.values()] == [
            (2, 0, 2),  # answers
            (2, 2, 0),  # cards: only the test's reader claimed, nothing acked
            (2, 0, 2),  # questions
            (2, 0, 2),  # topics
        ]


@pytest.mark.model
async def test_daisy_chain_example_runs_on_the_bundled_model(tmp_path: Path) -> None:
    agents = load_agents(EXAMPLE)
    config = Config()
    async with open_engines(config, log_dir=tmp_path) as engines:
        with Store(tmp_path / "agentos.db") as store, SinkStore(store, owner="t") as sinks:
            router = Router(engines, StoreCallRecorder(store), settings=router_settings(config))
            async with router:
                context = RunContext(
                    router=router,
                    store=store,
                    display=PlainDisplay(io.StringIO()),
                    agents_file=str(EXAMPLE),
                    agents=agents,
                    sinks=sinks,
                )
                context.on_result.append(publisher(sinks))
                first = await make_run(agents["question-writer"], context).run()
                assert first.status == "succeeded"
                await pump(agents, context, sinks)
            store.flush()
            stats = {s["sink"]: s for s in sink_stats(store, readers=sink_readers(agents))}
            finished: list[Any] = store.db.execute(
                "SELECT agent, status, count(*) FROM runs GROUP BY agent, status"
            ).fetchall()

    assert stats["questions"]["items"] >= 1
    assert stats["questions"]["pending"] == 0
    assert stats["answers"]["items"] >= 1
    assert stats["answers"]["pending"] == 0
    by_agent = {(agent, status): n for agent, status, n in finished}
    assert by_agent.get(("flashcard-maker", "succeeded"), 0) >= 1, json.dumps(finished)
