"""What a run on a node without the database file reads, and what it must find.

Shared by the tests of both read paths (``test_records``: the StoreReader actor, and the
driver answering on a local cluster; ``test_client``: a Ray client driver). A test seeds
the driver's database (:func:`seed`), runs :func:`reads_on_worker` as a Ray task on a
node, and checks its answers with :func:`check_reads`. The test modules register this
module to be pickled by value, so the function runs where ``tests`` is not importable.
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from pathlib import Path
from typing import Any

import ray

from agentos.cluster.records import RemoteStore
from agentos.errors import StoreError
from agentos.memory.vectors import SqliteVectorStore, VectorRecord
from agentos.spec.agents import AgentSpec, load_agents
from agentos.store import Store, queries
from agentos.store.writer import Insert

TASKS = """
def collect(context):
    seen = context.state.get("seen", 0)
    context.state.set("seen", seen + 1)
    return [{"id": "a", "seen": seen}, {"id": "b", "seen": seen}]
"""


def seed(store: Store, tmp_path: Path) -> tuple[AgentSpec, str, list[str]]:
    """A task agent next to the database, and what earlier work left on the driver: a run
    with 3 events, state, vectors. (the agent, the run's id, the expected search hits)"""
    module = f"tasks_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(TASKS)
    (tmp_path / "agents.yaml").write_text(
        f"agents:\n  - {{name: collector, kind: task, run: '{module}:collect'}}\n"
    )
    spec = load_agents(tmp_path / "agents.yaml")["collector"]
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
    return spec, seeded, expected_hits


def reads_on_worker(queue: Any, db_path: str, owner: Any, spec: Any, seeded: str) -> dict:
    """Every kind of read a run makes, through a RemoteStore; what each answered."""
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
        store.db.execute("SELECT value FROM no_such_table")
    except StoreError as exc:
        out["bad_sql"] = str(exc)
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


def check_reads(out: dict, store: Store, tmp_path: Path, expected_hits: list[str]) -> None:
    """What :func:`reads_on_worker` must have found, and left in the driver's database."""
    assert out["remote"], "a run without the file must not read it"
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
    assert "SELECT value FROM no_such_table" in out["bad_sql"], out["bad_sql"]
    assert "no such table" in out["bad_sql"], out["bad_sql"]
    assert "another node" in out["conn"]
    assert not [f for f in out["open_files"] if f.startswith(str(tmp_path))], out["open_files"]
