"""The cluster's record path on a real two-node Ray cluster on this machine (issue 15).

A head node (the driver's) and a worker node, each with a custom resource so that work
can be pinned to either; a real SQLite file per test, written only by the driver's
writer through the ``RecordDrain``; code on the worker node holds a ``RemoteStore``.
What is checked: reads from the worker node go through the ``StoreReader`` (no file is
opened there) and see the run's own writes; a flood of writes waits for the driver
instead of piling up; a bad op fails one flush, a failed database stops the runtime and
the workers; engine keys never cross Ray except to the router actor's ``start``.

Selected with ``-m cluster``; skipped where Ray is not installed (``agentos[ray]``).
The cluster is started once for the module (~10 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
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

from agentos.cluster.executor import ClusterSession  # noqa: E402
from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore  # noqa: E402
from agentos.errors import StoreError, StoreFailure  # noqa: E402
from agentos.memory.vectors import SqliteVectorStore, VectorRecord  # noqa: E402
from agentos.spec.agents import load_agents  # noqa: E402
from agentos.spec.config import load_config  # noqa: E402
from agentos.store import Store, owners, queries  # noqa: E402
from agentos.store.writer import Call, Insert, Update  # noqa: E402

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
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


class Records:
    """The driver's side of the record path over one database: queue, drain, reader."""

    def __init__(self, path: Path, max_ops: int | None = None) -> None:
        self.store = Store(path)
        self.owner = owners.register(self.store)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        args = () if max_ops is None else (max_ops,)
        self.queue = RecordQueueActor.options(scheduling_strategy=here).remote(*args)
        self.drain = RecordDrain(self.store, self.queue).start()

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

TASKS = """
def collect(context):
    seen = context.state.get("seen", 0)
    context.state.set("seen", seen + 1)
    return [{"id": "a", "seen": seen}, {"id": "b", "seen": seen}]
"""


def _reads_on_worker(queue: Any, db_path: str, owner: Any, spec: Any, seeded: str) -> dict:
    from agentos.agents.base import RunContext
    from agentos.agents.task import TaskRun
    from agentos.cluster.reads import RemoteDatabase
    from agentos.router.router import Router
    from agentos.scheduler.display import PlainDisplay
    from agentos.spec.config import ToolsConfig
    from agentos.tools import cache as tool_cache
    from agentos.tools import todo
    from agentos.tools.types import Tool, ToolContext

    store = RemoteStore(queue, db_path, owner)
    out: dict[str, Any] = {"remote": isinstance(store.db, RemoteDatabase)}

    async def main() -> None:
        context = RunContext(router=Router([]), store=store, display=PlainDisplay(io.StringIO()))  # type: ignore[arg-type]
        context.agents_file = str(Path(db_path).parent / "agents.yaml")
        runs = []
        for _ in range(2):  # the same period twice: the second finds the first's items
            outcome = await TaskRun(spec, context, variables={"period": "p1"}).run()
            runs.append((outcome.status, outcome.new_results, outcome.duplicate_results))
        out["runs"] = runs
        out["last_seq"] = queries.RunEvents(store, seeded).last_seq  # type: ignore[arg-type]
        tools = ToolContext(config=ToolsConfig(), store=store, agent="a", run_id=None)  # type: ignore[arg-type]
        out["todo"] = await todo.add(tools, "buy milk")
        out["todos"] = await todo.list_items(tools)
        tool = Tool("echo", "", {"type": "object"}, function=lambda: None, cache_ttl_s=60)
        key = tool_cache.cache_key(tool, {"x": 1})
        await tool_cache.keep(store, key, tool, {"x": 1}, {"answer": 42})  # type: ignore[arg-type]
        hit = tool_cache.lookup(store, key)  # type: ignore[arg-type]
        out["cached"] = None if hit is None else hit.output

    asyncio.run(main())
    out["run"] = queries.get_run(store, seeded)["agent"]  # type: ignore[arg-type,index]
    out["state"] = store.db.execute(
        "SELECT value FROM agent_state WHERE agent = ? AND key = 'seen'", [spec.name]
    ).fetchone()
    vectors = store.vectors()
    out["spaces"] = vectors.spaces("emb")
    out["hits"] = [h.source_id for h in vectors.query("emb", [1.0, 0.1, 0.0], limit=2)]
    for write in ("DELETE FROM todos", "INSERT INTO todos (title) VALUES ('x')"):
        try:
            store.db.execute(write)
            out.setdefault("refused", []).append(None)
        except StoreError as exc:
            out.setdefault("refused", []).append(str(exc))
    try:
        store.db.conn  # noqa: B018
    except StoreError as exc:
        out["conn"] = str(exc)
    store.close()
    out["open_files"] = [
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    ]
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def test_reads_on_another_node_go_through_the_reader_and_see_the_runs_own_writes(
    cluster: Cluster, records: Records, tmp_path: Path
) -> None:
    module = f"tasks_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(TASKS)
    (tmp_path / "agents.yaml").write_text(
        f"agents:\n  - {{name: collector, kind: task, run: '{module}:collect'}}\n"
    )
    spec = load_agents(tmp_path / "agents.yaml")["collector"]
    store = records.store
    # what earlier work left on the driver: a run with 3 events, state, vectors
    seeded = queries.create_run(
        store, agent="seeder", kind="prompt", spec={}, wanted=None, agents_file=None
    )
    events = queries.RunEvents(store, seeded)
    for n in range(3):
        events.add("log", {"n": n})
    store.submit(
        Insert("agent_state", {"agent": "collector", "key": "seen", "value": "5", "updated_at": 0})
    )
    local_vectors = SqliteVectorStore(store)
    local_vectors.add(
        "emb",
        [
            VectorRecord("results", str(i), f"text {i}", vector, run_id=seeded)
            for i, vector in enumerate([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.2, 0.0]])
        ],
    )
    store.flush()
    expected_hits = [h.source_id for h in local_vectors.query("emb", [1.0, 0.1, 0.0], limit=2)]
    local_vectors.close()

    out = on_worker(_reads_on_worker, records.queue, str(store.path), records.owner, spec, seeded)

    assert out["node"] != cluster.head_node.node_id
    assert out["remote"], "a worker on another node must not read the file"
    # a task run's read-after-write de-duplication and its state reads
    assert out["runs"] == [("succeeded", 2, 0), ("succeeded", 0, 2)]
    assert out["state"] == ("7",)  # 5 seeded, +1 per run: each run read the one before
    items = store.db.execute("SELECT data FROM task_results ORDER BY item_key").fetchall()
    assert [i[0] for i in items] == ['{"id": "a", "seen": 5}', '{"id": "b", "seen": 5}']
    assert out["last_seq"] == 3 and out["run"] == "seeder"
    assert out["todo"]["id"] is not None and out["todo"]["title"] == "buy milk"
    assert out["todos"] == [{"id": out["todo"]["id"], "title": "buy milk", "done": False}]
    assert out["cached"] == {"answer": 42}
    assert [(s.model, s.dim, s.count) for s in out["spaces"]] == [("emb", 3, 3)]
    assert out["hits"] == expected_hits == ["0", "2"]
    assert all(r is not None and "readonly" in r for r in out["refused"]), out["refused"]
    assert "another node" in out["conn"]
    assert not [f for f in out["open_files"] if f.startswith(str(tmp_path))], out["open_files"]
    reads = ray.get(records.drain.reader.stats.remote())["reads"]
    assert reads >= 10, reads


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
        with Store(tmp_path / "agentos.db") as store, ClusterSession(store, config) as session:
            refs = [session.run(agents["asker"], resources={n: 0.01}) for n in ("head", "worker")]
            done = ray.get(refs, timeout=120)
    finally:
        monkeypatch.undo()
        engine.terminate()
        engine.wait(10)
        engine.stdout.close()

    assert [d.outcome.status for d in done] == ["succeeded", "succeeded"]
    assert len({d.node_id for d in done}) == 2
    carrying = [name for name, data in shipped if key.encode() in data]
    assert carrying == ["dict"], carrying  # the one start(secrets) call, on the driver's node
    assert any(name == "Config" for name, _ in shipped), "the router's config was not seen"
