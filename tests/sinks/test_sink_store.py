"""SinkStore against a real SQLite file: publish, de-duplication, claims, leases, acks."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from agentos.errors import StoreError
from agentos.sinks import SinkStore, default_dedupe_key, publisher
from agentos.spec.agents import AgentSpec
from agentos.store import Atomic, Execute, Store
from tests.sinks.conftest import ManualClock


def deliveries(store: Store) -> dict[tuple[int, str], dict[str, object]]:
    rows = store.db.query("SELECT * FROM sink_deliveries")
    return {(row["item_id"], row["consumer"]): row for row in rows}


def test_publish_then_claim_returns_the_item(sinks: SinkStore, clock: ManualClock) -> None:
    item_id = sinks.publish("questions", {"question": "Why?"}, produced_by="run-1")
    assert item_id is not None

    [item] = sinks.claim("questions", "answerer")

    assert item.id == item_id
    assert item.sink == "questions"
    assert item.data == {"question": "Why?"}
    assert item.produced_by == "run-1"
    assert item.created_at == clock.now
    assert item.attempts == 1
    assert item.dedupe_key == default_dedupe_key({"question": "Why?"})


def test_data_that_is_not_a_mapping_becomes_value(sinks: SinkStore) -> None:
    sinks.publish("texts", "plain answer", produced_by=None)
    sinks.publish("texts", [1, 2], produced_by=None)

    items = sinks.claim("texts", "reader", limit=5)

    assert [item.data for item in items] == [{"value": "plain answer"}, {"value": [1, 2]}]


def test_data_that_is_not_json_is_refused(sinks: SinkStore, store: Store) -> None:
    with pytest.raises(StoreError, match="JSON"):
        sinks.publish("s", {"x": {1, 2}}, produced_by=None)
    with pytest.raises(StoreError, match="JSON"):
        sinks.publish("s", {"x": float("nan")}, produced_by=None)
    with pytest.raises(StoreError, match="sink name"):
        sinks.publish("", {"x": 1}, produced_by=None)
    assert store.db.execute("SELECT count(*) FROM sink_items").fetchone()[0] == 0


def test_a_duplicate_is_ignored(sinks: SinkStore, store: Store) -> None:
    first = sinks.publish("s", {"a": 1, "b": [1, 2]}, produced_by="run-1")
    again = sinks.publish("s", {"b": [1, 2], "a": 1}, produced_by="run-2")
    other_sink = sinks.publish("t", {"a": 1, "b": [1, 2]}, produced_by="run-1")
    keyed = sinks.publish("s", {"a": 2}, produced_by=None, dedupe_key="k")
    keyed_again = sinks.publish("s", {"a": 3}, produced_by=None, dedupe_key="k")

    assert first is not None and other_sink is not None and keyed is not None
    assert again is None and keyed_again is None
    rows = store.db.execute("SELECT sink, data FROM sink_items ORDER BY id").fetchall()
    assert rows == [
        ("s", '{"a":1,"b":[1,2]}'),
        ("t", '{"a":1,"b":[1,2]}'),
        ("s", '{"a":2}'),
    ]


def test_publish_op_through_the_writer_dedupes_alike(sinks: SinkStore, store: Store) -> None:
    store.submit(sinks.publish_op("s", {"n": 1}, produced_by="run-1"))
    store.submit(sinks.publish_op("s", {"n": 1}, produced_by="run-2"))
    store.flush()

    assert [item.data for item in sinks.claim("s", "c", limit=5)] == [{"n": 1}]


def test_claim_takes_oldest_first_up_to_limit(sinks: SinkStore) -> None:
    for n in range(5):
        sinks.publish("s", {"n": n}, produced_by=None)

    first = sinks.claim("s", "c", limit=2)
    second = sinks.claim("s", "c", limit=10)

    assert [i.data["n"] for i in first] == [0, 1]
    assert [i.data["n"] for i in second] == [2, 3, 4]
    assert sinks.claim("s", "c") == []
    assert sinks.claim("s", "c", limit=0) == []


def test_a_live_lease_keeps_other_runtimes_off(
    sinks: SinkStore, store: Store, clock: ManualClock
) -> None:
    sinks.publish("s", {"n": 1}, produced_by=None)
    with SinkStore(store, owner="runtime-b", clock=clock) as other:
        [item] = sinks.claim("s", "c", lease_s=60)
        clock.advance(59)
        assert other.claim("s", "c") == []
        assert deliveries(store)[(item.id, "c")]["claimed_by"] == "runtime-a"


def test_an_expired_lease_is_delivered_again_and_an_acked_item_never(
    sinks: SinkStore, store: Store, clock: ManualClock
) -> None:
    sinks.publish("s", {"n": 1}, produced_by=None)
    with SinkStore(store, owner="runtime-b", clock=clock) as other:
        [first] = sinks.claim("s", "c", lease_s=10)
        clock.advance(10.5)

        [again] = other.claim("s", "c", lease_s=10)
        assert again.id == first.id
        assert again.attempts == 2
        # the first holder lost its claim: its nack changes nothing
        assert sinks.nack(first.id, "c") is None

        assert other.ack(again.id, "c", run_id="run-b") is True
        assert sinks.ack(first.id, "c", run_id="run-a") is False
        clock.advance(10_000)
        assert sinks.claim("s", "c") == []
        assert other.claim("s", "c") == []

    row = deliveries(store)[(first.id, "c")]
    assert row["status"] == "done"
    assert row["run_id"] == "run-b"
    assert row["claimed_by"] == "runtime-b"
    assert row["attempts"] == 2


def test_nack_releases_for_another_try_until_max_attempts(store: Store, clock: ManualClock) -> None:
    with SinkStore(store, owner="r", clock=clock, max_attempts=2) as sinks:
        item_id = sinks.publish("s", {"n": 1}, produced_by=None)
        assert item_id is not None

        [item] = sinks.claim("s", "c")
        assert sinks.nack(item.id, "c") == "pending"
        assert sinks.depth("s", "c") == 1

        [again] = sinks.claim("s", "c")
        assert again.attempts == 2
        assert sinks.nack(again.id, "c") == "failed"

        clock.advance(10_000)
        assert sinks.claim("s", "c") == []
        assert sinks.depth("s", "c") == 0
        assert deliveries(store)[(item_id, "c")]["status"] == "failed"


def test_nack_with_a_delay_holds_the_item_back(sinks: SinkStore, clock: ManualClock) -> None:
    sinks.publish("s", {"n": 1}, produced_by=None)
    [item] = sinks.claim("s", "c")

    assert sinks.nack(item.id, "c", delay_s=30) == "pending"
    clock.advance(29)
    assert sinks.claim("s", "c") == []
    clock.advance(2)
    assert [i.id for i in sinks.claim("s", "c")] == [item.id]


def test_an_expired_lease_at_max_attempts_is_marked_failed(
    store: Store, clock: ManualClock
) -> None:
    with SinkStore(store, owner="r", clock=clock, max_attempts=2) as sinks:
        item_id = sinks.publish("s", {"n": 1}, produced_by=None)
        assert item_id is not None
        sinks.publish("s", {"n": 2}, produced_by=None)
        assert [i.data["n"] for i in sinks.claim("s", "c", lease_s=1)] == [1]
        clock.advance(2)
        assert [i.attempts for i in sinks.claim("s", "c", lease_s=1)] == [2]
        clock.advance(2)

        # item 1 crashed its holder twice: it is failed, and the claim moves on
        assert [i.data["n"] for i in sinks.claim("s", "c")] == [2]
        assert deliveries(store)[(item_id, "c")]["status"] == "failed"


def test_renew_extends_only_the_holders_lease(
    sinks: SinkStore, store: Store, clock: ManualClock
) -> None:
    sinks.publish("s", {"n": 1}, produced_by=None)
    [item] = sinks.claim("s", "c", lease_s=10)
    clock.advance(8)
    assert sinks.renew(item.id, "c", lease_s=10) is True
    clock.advance(8)
    with SinkStore(store, owner="runtime-b", clock=clock) as other:
        assert other.claim("s", "c") == []
        assert other.renew(item.id, "c") is False


def test_every_consumer_gets_every_item(sinks: SinkStore) -> None:
    ids = [sinks.publish("s", {"n": n}, produced_by=None) for n in range(3)]

    for item in sinks.claim("s", "writer", limit=10):
        sinks.ack(item.id, "writer", run_id=None)

    assert sinks.depth("s", "writer") == 0
    assert sinks.depth("s", "reviewer") == 3
    assert [i.id for i in sinks.claim("s", "reviewer", limit=10)] == ids


def test_depth_counts_what_is_not_finished(sinks: SinkStore) -> None:
    for n in range(4):
        sinks.publish("s", {"n": n}, produced_by=None)
    assert sinks.depth("s") == 4

    a, b, _ = sinks.claim("s", "c", limit=3)
    sinks.ack(a.id, "c", run_id=None)
    assert sinks.depth("s", "c") == 3  # the claimed ones still count
    sinks.ack(b.id, "c", run_id=None)
    assert sinks.depth("s", "c") == 2
    assert sinks.depth("s") == 2
    # a second consumer that has finished nothing keeps every item owed
    [d] = sinks.claim("s", "d")
    sinks.ack(d.id, "d", run_id=None)
    assert sinks.depth("s", "d") == 3
    assert sinks.depth("s") == 3  # only the first item is done by both consumers
    assert sinks.depth("other") == 0


def test_ack_op_commits_with_the_consumers_own_writes(sinks: SinkStore, store: Store) -> None:
    store.db.execute("CREATE TABLE work (item_id INTEGER PRIMARY KEY)")
    sinks.publish("s", {"n": 1}, produced_by=None)
    [item] = sinks.claim("s", "c")

    store.submit(
        Atomic(
            (
                Execute("INSERT INTO work (item_id) VALUES (?)", [item.id]),
                sinks.ack_op(item.id, "c", run_id="run-1"),
            )
        )
    )
    store.flush()

    assert store.db.execute("SELECT item_id FROM work").fetchall() == [(item.id,)]
    assert deliveries(store)[(item.id, "c")]["status"] == "done"
    assert deliveries(store)[(item.id, "c")]["run_id"] == "run-1"


def test_acking_an_unknown_item_fails(sinks: SinkStore) -> None:
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        sinks.ack(12345, "c", run_id=None)


def test_items_survive_a_restart(db_path: Path) -> None:
    with Store(db_path) as store, SinkStore(store, owner="first") as sinks:
        sinks.publish("s", {"n": 1}, produced_by="run-1")
        store.submit(sinks.publish_op("s", {"n": 2}, produced_by="run-1"))
        [claimed] = sinks.claim("s", "c", lease_s=0)

    with Store(db_path) as store, SinkStore(store, owner="second") as sinks:
        items = sinks.claim("s", "c", limit=5)
        assert [(i.data["n"], i.attempts) for i in items] == [(1, 2), (2, 1)]
        assert items[0].id == claimed.id


def test_a_readonly_store_takes_no_sink_store(db_path: Path) -> None:
    Store(db_path).close()
    with Store(db_path, readonly=True) as store, pytest.raises(StoreError, match="read-only"):
        SinkStore(store, owner="r")


def test_publisher_hook_publishes_results_of_agents_with_an_output_sink(
    sinks: SinkStore, store: Store
) -> None:
    hook = publisher(sinks)
    writer = AgentSpec(name="writer", prompt="hi", output_sink="questions")
    silent = AgentSpec(name="silent", prompt="hi")

    hook(writer, "run-1", {"question": "Why?"})
    hook(writer, "run-2", "a plain text result")
    hook(writer, "run-3", {"question": "Why?"})
    hook(silent, "run-4", {"question": "How?"})
    store.flush()

    rows = store.db.execute("SELECT sink, data, produced_by FROM sink_items ORDER BY id").fetchall()
    assert [(sink, json.loads(data), by) for sink, data, by in rows] == [
        ("questions", {"question": "Why?"}, "run-1"),
        ("questions", {"value": "a plain text result"}, "run-2"),
    ]


async def test_wait_returns_at_once_for_a_backlog(store: Store) -> None:
    with SinkStore(store, owner="r", poll_interval=0.02) as sinks:
        sinks.publish("s", {"n": 1}, produced_by=None)
        assert await asyncio.wait_for(sinks.wait("s", 5, consumer="c"), 1) is True


async def test_wait_times_out_when_nothing_comes(store: Store) -> None:
    with SinkStore(store, owner="r", poll_interval=0.02) as sinks:
        sinks.publish("s", {"n": 1}, produced_by=None)
        [item] = await sinks.aclaim("s", "c")
        assert await sinks.aack(item.id, "c", run_id=None) is True
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await sinks.wait("s", 0.1, consumer="c") is False
        assert await sinks.wait("s", 0.1) is False  # nothing new published
        assert loop.time() - started >= 0.2


async def test_wait_wakes_when_another_runtime_publishes(store: Store, db_path: Path) -> None:
    def publish_later() -> None:
        with Store(db_path) as other_store, SinkStore(other_store, owner="p") as producer:
            producer.publish("s", {"n": 1}, produced_by=None)

    with SinkStore(store, owner="r", poll_interval=0.02) as sinks:
        timer = threading.Timer(0.1, publish_later)
        timer.start()
        try:
            assert await asyncio.wait_for(sinks.wait("s", 5), 3) is True
        finally:
            timer.join()
        assert await sinks.wait("s", 5, consumer="c") is True
        assert len(await sinks.aclaim("s", "c")) == 1
