"""What `agentos sinks` shows: depth per reader, ages and rates, as rows and as a table."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from agentos.sinks import SinkStore, sink_readers, sink_stats, sinks_table
from agentos.spec.agents import AgentSpec
from agentos.store import Store
from tests.sinks.conftest import ManualClock


def render(rows: list[dict[str, object]]) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(sinks_table(rows))
    return console.export_text()


def test_stats_count_items_progress_and_rates(
    sinks: SinkStore, store: Store, clock: ManualClock
) -> None:
    start = clock.now
    for n in range(3):  # 51 minutes before the stats: in the 60-minute window only
        sinks.publish("questions", {"n": n}, produced_by=None)
    clock.advance(50 * 60)
    for n in range(3, 8):
        sinks.publish("questions", {"n": n}, produced_by=None)
    sinks.publish("answers", {"a": 1}, produced_by=None)
    clock.advance(60)

    items = sinks.claim("questions", "answerer", limit=4, lease_s=600)
    for item in items[:2]:
        sinks.ack(item.id, "answerer", run_id=None)
    assert sinks.nack(items[2].id, "answerer") == "pending"
    [reviewed] = sinks.claim("questions", "reviewer")
    sinks.ack(reviewed.id, "reviewer", run_id=None)

    rows = sink_stats(store, readers={"questions": ["answerer", "summary"]}, now=clock.now)

    assert [r["sink"] for r in rows] == ["answers", "questions"]
    answers, questions = rows
    assert answers["consumers"] == []
    assert answers["pending"] == 1
    assert answers["oldest_pending_age_s"] == 60

    assert questions["items"] == 8
    assert questions["last_published_at"] == start + 50 * 60
    assert questions["published_per_min_5m"] == 5 / 5
    assert questions["published_per_min_60m"] == 8 / 60
    by_name = {c["consumer"]: c for c in questions["consumers"]}
    assert list(by_name) == ["answerer", "reviewer", "summary"]
    assert by_name["answerer"] == {
        "consumer": "answerer",
        "done": 2,
        "failed": 0,
        "in_flight": 1,
        "pending": 6,
        "oldest_pending_age_s": 51 * 60,  # the third item, nacked
        "consumed_per_min_5m": 2 / 5,
        "consumed_per_min_60m": 2 / 60,
    }
    assert by_name["reviewer"]["pending"] == 7
    assert by_name["summary"]["pending"] == 8
    assert by_name["summary"]["oldest_pending_age_s"] == 51 * 60
    assert questions["pending"] == 6 + 7 + 8
    assert questions["done"] == 3
    assert questions["consumed_per_min_5m"] == pytest.approx(3 / 5)

    text = render(rows)
    assert "questions" in text and "answerer" in text and "(no reader)" in text
    assert "51m00s" in text


def test_stats_of_an_empty_store_list_the_sinks_agents_name(db_path: Path) -> None:
    agents = [
        AgentSpec(name="writer", prompt="x", output_sink="questions"),
        AgentSpec(
            name="answerer",
            prompt="{{ question }}",
            input_sink="questions",
            output_sink="answers",
        ),
    ]
    readers = sink_readers(agents)
    assert readers == {"questions": ["answerer"], "answers": []}

    with Store(db_path) as store:
        rows = sink_stats(store, readers=readers)

    assert [(r["sink"], r["items"], r["pending"]) for r in rows] == [
        ("answers", 0, 0),
        ("questions", 0, 0),
    ]
    assert rows[1]["consumers"][0]["consumer"] == "answerer"
    assert rows[1]["oldest_pending_age_s"] is None
    assert "answerer" in render(rows)
