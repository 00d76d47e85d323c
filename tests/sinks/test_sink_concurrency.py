"""Two runtimes (each its own Store and SinkStore) claiming from one sink at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agentos.sinks import SinkStore
from agentos.store import Store

ITEMS = 150


def test_two_runtimes_never_hold_the_same_item(db_path: Path) -> None:
    with Store(db_path) as store, SinkStore(store, owner="producer") as producer:
        for n in range(ITEMS):
            producer.publish("s", {"n": n}, produced_by=None)

    claimed: dict[str, list[int]] = {"runtime-a": [], "runtime-b": []}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consume(owner: str) -> None:
        try:
            with Store(db_path) as store, SinkStore(store, owner=owner) as sinks:
                start.wait()
                while items := sinks.claim("s", "c", limit=3):
                    claimed[owner].extend(item.id for item in items)
                    time.sleep(0.001)  # the work on the items, which lets the other claim
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(owner,)) for owner in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    a, b = claimed["runtime-a"], claimed["runtime-b"]
    assert a and b, "both runtimes should have won some claims"
    assert not set(a) & set(b)
    assert len(a) + len(b) == ITEMS
    with Store(db_path) as store:
        rows = store.db.execute(
            "SELECT claimed_by, count(*), max(attempts) FROM sink_deliveries GROUP BY claimed_by"
        ).fetchall()
    assert sorted(rows) == [("runtime-a", len(a), 1), ("runtime-b", len(b), 1)]
