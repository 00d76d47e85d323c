"""The cluster's record path on a real two-node Ray cluster on this machine (issue 15).

A head node (the driver's) and a worker node, each with a custom resource so that work
can be pinned to either; a real SQLite file per test, written only by the driver's
writer through the ``RecordDrain``; code on the worker node holds a ``RemoteStore``.
What is checked: reads from the worker node go through the ``StoreReader``, or are
answered by the driver itself through the ``ReadRelay`` (no file is opened there either
way), and see the run's own writes; a flood of writes waits for the driver
instead of piling up; a bad op fails one flush, a failed database stops the runtime and
the workers; engine keys never cross Ray except to the router actor's ``start``.

Selected with ``-m cluster``; skipped where Ray is not installed (``agentos[ray]``).
The cluster is started once for the module (~10 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore  # noqa: E402
from agentos.errors import StoreError, StoreFailure  # noqa: E402
from agentos.spec.agents import Resources, load_agents  # noqa: E402
from agentos.spec.config import load_config  # noqa: E402
from agentos.store import Store, owners, queries  # noqa: E402
from agentos.store.writer import Call, Insert, Update  # noqa: E402
from tests.cluster import read_checks  # noqa: E402
from tests.cluster.executing import Executing  # noqa: E402
from tests.cluster.read_checks import check_reads, reads_on_worker, seed  # noqa: E402

pytestmark = pytest.mark.cluster

ON_WORKER = {"resources": {"worker": 0.01}, "num_cpus": 0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    c.add_node(num_cpus=2, resources={"worker": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    # the functions below run on the worker node: shipped by value, not imported there
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(read_checks)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


class Records:
    """The driver's side of the record path over one database: queue, drain, reader."""

    def __init__(self, path: Path, max_ops: int | None = None, reads: str = "auto") -> None:
        self.store = Store(path)
        self.owner = owners.register(self.store)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        args = () if max_ops is None else (max_ops,)
        self.queue = RecordQueueActor.options(scheduling_strategy=here).remote(*args)
        self.drain = RecordDrain(self.store, self.queue, reads=reads).start()

    def close(self) -> None:
        with contextlib.suppress(StoreError):  # a test that failed the store expects it
            self.drain.stop()
        ray.kill(self.queue)
        with contextlib.suppress(StoreError):
            self.store.close()


@pytest.fixture
def records(cluster: Cluster, tmp_path: Path) -> Iterator[Records]:
    r = Records(tmp_path / "agentos.db")
    try:
        yield r
    finally:
        r.close()


def on_worker(function: Any, *args: Any) -> Any:
    """Run ``function(*args)`` as a task on the worker node; its result."""
    return ray.get(ray.remote(function).options(**ON_WORKER).remote(*args), timeout=120)


# -- reads -------------------------------------------------------------------------------


@pytest.mark.parametrize(("reads", "answered_by"), [("auto", "reader"), ("driver", "driver")])
def test_reads_on_another_node_see_the_runs_own_writes_through_either_path(
    cluster: Cluster, tmp_path: Path, reads: str, answered_by: str
) -> None:
    """``auto``: the StoreReader actor on the driver's node answers (the driver is a node
    here); ``driver``: the driver itself answers through the ReadRelay, as for a Ray
    client (``test_client`` runs that for real)."""
    r = Records(tmp_path / "agentos.db", reads=reads)
    try:
        spec, seeded, expected_hits = seed(r.store, tmp_path)
        out = on_worker(reads_on_worker, r.queue, str(r.store.path), r.owner, spec, seeded)
        assert r.drain.reads_by == answered_by
        relayed = ray.get(r.drain.reader.stats.remote())
        answered = r.drain.driver_reads.answered if r.drain.driver_reads else None
        check_reads(out, r.store, tmp_path, expected_hits)
    finally:
        r.close()

    assert out["node"] != cluster.head_node.node_id
    assert relayed["reads"] >= 10, relayed
    if answered_by == "driver":
        assert answered == relayed["reads"], (answered, relayed)
        assert relayed["waiting"] == 0 and relayed["batches"] >= 1, relayed
    else:
        assert answered is None


def _todo_titles(queue: Any, db_path: str, owner: Any) -> dict:
    store = RemoteStore(queue, db_path, owner)
    store.submit(Insert("todos", {"title": "from the worker", "done": 0, "created_at": 2}))
    store.flush()
    rows = store.db.execute("SELECT title FROM todos ORDER BY id").fetchall()
    store.close()
    files = [
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")  # the listing's own fd is gone by now
    ]
    return {"titles": [r[0] for r in rows], "files": files}


def test_a_reader_that_sees_another_file_leaves_the_reads_to_the_driver(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The StoreReader on "the driver's node" opens another file than the driver's (the
    head of a cluster the driver is no node of): the driver answers instead of refusing."""
    import agentos.cluster.records as records_module

    monkeypatch.setattr(records_module, "file_identity", lambda path: ("laptop", 1, 1))
    r = Records(tmp_path / "agentos.db")
    try:
        assert r.drain.reads_by == "driver"
        r.store.submit(Insert("todos", {"title": "from the driver", "done": 0, "created_at": 1}))
        r.store.flush()
        out = on_worker(_todo_titles, r.queue, str(r.store.path), r.owner)
        relayed = ray.get(r.drain.reader.stats.remote())
    finally:
        r.close()
    assert out["titles"] == ["from the driver", "from the worker"]
    assert relayed["reads"] == 1
    assert not [f for f in out["files"] if f.startswith(str(tmp_path))], out["files"]


def test_a_relayed_read_waits_for_the_driver_and_fails_once_it_stops_answering(
    cluster: Cluster, tmp_path: Path
) -> None:
    from agentos.cluster.driver_reads import DriverReads, ReadRelayActor
    from agentos.cluster.reads import ask

    with Store(tmp_path / "agentos.db") as store:
        store.submit(Insert("todos", {"title": "t", "done": 0, "created_at": 1}))
        store.flush()
    relay = ReadRelayActor.options(**ON_WORKER).remote()
    try:
        early = relay.execute.remote("SELECT title FROM todos", ())
        ready, _ = ray.wait([early], timeout=1.0)
        assert not ready, "a read was answered with no driver answering"
        reads = DriverReads(tmp_path / "agentos.db", relay).start()
        assert ask(early, "test").rows == [("t",)]
        reads.stop()
        assert reads.answered == 1 and reads.failure is None
        with pytest.raises(StoreError, match="the driver has stopped answering"):
            ask(relay.execute.remote("SELECT title FROM todos", ()), "test")
    finally:
        ray.kill(relay)


# -- backpressure ------------------------------------------------------------------------


def _flood(queue: Any, db_path: str, owner: Any, count: int) -> dict:
    store = RemoteStore(queue, db_path, owner)
    most = 0

    async def main() -> float:
        nonlocal most
        start = time.monotonic()
        for n in range(count):
            store.submit(Insert("todos", {"title": f"t{n}", "done": 0, "created_at": n}))
            most = max(most, store._in_flight_ops)
            if n % 100 == 99:
                await store.room()
        await store.aflush()
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    return {
        "elapsed": elapsed,
        "finished_at": time.time(),
        "waits": store.waits,
        "most_in_flight": most,
    }


def test_a_flood_of_writes_from_a_worker_waits_for_the_driver_and_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    cap, count, hold_s = 1000, 6000, 3.0
    r = Records(tmp_path / "agentos.db", max_ops=cap)
    try:
        # another process's transaction holds the write lock: the driver's writer waits
        blocker = sqlite3.connect(str(r.store.path), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        flood = (
            ray.remote(_flood)
            .options(**ON_WORKER)
            .remote(r.queue, str(r.store.path), r.owner, count)
        )
        outstanding = []
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            outstanding.append(ray.get(r.queue.stats.remote())["outstanding"])
            time.sleep(0.1)
        blocker.execute("ROLLBACK")
        released_at = time.time()
        blocker.close()
        out = ray.get(flood, timeout=60)
        stats = ray.get(r.queue.stats.remote())
    finally:
        r.close()

    assert max(outstanding) <= cap, outstanding
    assert max(outstanding) >= cap // 2, "the queue never filled: nothing was held up"
    assert stats["max_outstanding"] <= cap and stats["waited"] > 0
    # more ops than the queue and the worker's in-flight bound hold: it had to wait
    assert out["waits"] > 0 and out["finished_at"] >= released_at, out
    assert out["most_in_flight"] <= 16 * 256 + 256, out
    with Store(tmp_path / "agentos.db", readonly=True) as store:
        titles = {row[0] for row in store.db.execute("SELECT title FROM todos")}
    assert titles == {f"t{n}" for n in range(count)}


# -- failures ----------------------------------------------------------------------------


def _bad_op(queue: Any, db_path: str, owner: Any) -> dict:
    store = RemoteStore(queue, db_path, owner)
    store.submit(Insert("todos", {"title": "before", "done": 0, "created_at": 1}))
    store.submit(Update("runs", "no-such-run", {"status": "failed"}))
    out: dict[str, Any] = {}
    try:
        store.flush()
    except StoreError as exc:
        out["error"] = (type(exc).__name__, str(exc))
    store.submit(Insert("todos", {"title": "after", "done": 0, "created_at": 2}))
    store.flush()
    return out


def test_a_bad_op_from_a_worker_fails_its_flush_and_the_drain_goes_on(
    records: Records,
) -> None:
    out = on_worker(_bad_op, records.queue, str(records.store.path), records.owner)
    kind, message = out["error"]
    assert kind == "StoreError" and "update runs 'no-such-run'" in message, message
    assert records.drain.failure is None and records.store.writer.failure is None
    titles = [r[0] for r in records.store.db.execute("SELECT title FROM todos ORDER BY id")]
    assert titles == ["before", "after"]


def _write_until_refused(queue: Any, db_path: str, owner: Any) -> dict:
    store = RemoteStore(queue, db_path, owner)
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline:
        try:
            for _ in range(20):
                store.submit(
                    Insert("agent_state", {"agent": "w", "key": str(n), "value": "x" * 500})
                )
                n += 1
            store.flush()
        except StoreFailure as exc:
            return {"refused_after": n, "message": str(exc)}
    return {"refused_after": None, "message": None}


def test_a_failed_database_stops_the_runtime_and_the_runs_on_other_nodes(
    records: Records,
) -> None:
    from agentos.scheduler.runner import _store_failed_event

    store = records.store
    told: list[StoreFailure] = []
    records.drain.add_failure_listener(told.append)

    async def main() -> tuple[bool, dict]:
        failed = _store_failed_event(store)  # what stops the runtime on one machine
        writer = (
            ray.remote(_write_until_refused)
            .options(**ON_WORKER)
            .remote(records.queue, str(store.path), records.owner)
        )
        while store.db.execute("SELECT count(*) FROM agent_state").fetchone()[0] < 100:
            await asyncio.sleep(0.05)
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]

        def cap(conn: sqlite3.Connection) -> None:  # a full disk, as SQLite sees it
            conn.execute(f"PRAGMA max_page_count = {pages + 8}")

        store.submit(Call(cap, tables=()))
        await asyncio.wait_for(failed.wait(), 30)
        return failed.is_set(), await asyncio.wrap_future(writer.future())

    stopped, out = asyncio.run(main())

    assert stopped
    assert out["refused_after"] is not None, "the worker went on writing"
    assert "cannot be written" in out["message"] and "full" in out["message"], out
    assert [f.message for f in told] == [records.drain.failure.message]  # type: ignore[union-attr]
    with pytest.raises(StoreFailure, match="cannot be written"):
        records.drain.stop()
    with pytest.raises(StoreFailure):
        ray.get(records.queue.put.remote([], True))


def test_a_lost_record_queue_stops_the_runtime(records: Records) -> None:
    heard = threading.Event()
    records.store.writer.add_failure_listener(lambda _: heard.set())
    ray.kill(records.queue)
    assert heard.wait(30), "the drain's failure never reached the writer's listeners"
    failure = records.store.writer.failure
    assert failure is not None and "can no longer reach the database" in failure.message
    with pytest.raises(StoreFailure):
        records.store.submit(Insert("todos", {"title": "late", "done": 0, "created_at": 0}))


# -- secrets -----------------------------------------------------------------------------

CONFIG = """
engines:
  - {name: loop, type: openai, base_url: "URL", api_key: "${LOOP_KEY}"}
cache: {enabled: false}
"""


def test_engine_keys_reach_only_the_router_actors_start(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray._private.serialization import SerializationContext

    key = f"sk-agentos-{uuid.uuid4().hex}"
    engine = subprocess.Popen(
        [sys.executable, "-m", "agentos.testing.engine", "--port", "0", "--api-key", key],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert engine.stdout is not None
    url = engine.stdout.readline().split()[-1]
    (tmp_path / "config.yaml").write_text(textwrap.dedent(CONFIG).replace("URL", url))
    config = load_config(tmp_path / "config.yaml", environ={"LOOP_KEY": key})
    (tmp_path / "agents.yaml").write_text(
        'agents:\n  - {name: asker, prompt: "Say hi. ANSWER: hi"}\n'
    )
    agents = load_agents(tmp_path / "agents.yaml")

    shipped: list[tuple[str, bytes]] = []  # everything the driver serializes for Ray
    original = SerializationContext.serialize

    def spy(self: Any, value: Any) -> Any:
        serialized = original(self, value)
        data = value if isinstance(value, bytes) else bytes(serialized.to_bytes())
        shipped.append((type(value).__name__, data))
        return serialized

    monkeypatch.setattr(SerializationContext, "serialize", spy)
    try:
        ray.get(ray.put(config))  # the spy sees a key where one is shipped
        assert [name for name, data in shipped if key.encode() in data] == ["Config"]
        shipped.clear()
        pinned = [
            agents["asker"].model_copy(update={"resources": Resources(custom={node: 0.01})})
            for node in ("head", "worker")
        ]
        with Store(tmp_path / "agentos.db") as store:
            with Executing(store, config, agents) as ex:
                done = ex.run([(spec, None) for spec in pinned])
            nodes = {queries.get_run(store, d.run_id)["node"] for d in done}  # type: ignore[index]
    finally:
        monkeypatch.undo()
        engine.terminate()
        engine.wait(10)
        engine.stdout.close()

    assert [d.status for d in done] == ["succeeded", "succeeded"]
    assert len(nodes) == 2, nodes  # a run host on each node, a task run on each node
    carrying = [name for name, data in shipped if key.encode() in data]
    assert carrying == ["dict"], carrying  # the one start(secrets) call, on the driver's node
    assert any(name == "Config" for name, _ in shipped), "the router's config was not seen"
