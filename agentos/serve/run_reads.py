"""What ``GET /runs``, ``GET /runs/{id}`` and ``GET /tools`` read.

Reads of the record use a read-only :class:`~agentos.store.Store` of their own, opened
per request in a worker thread: the session's store connection belongs to the runtime's
side (the control poller reads on it), a long read must not hold up the event loop, and
the database is in WAL mode, so a reader sees every committed write and blocks none. A
run's row is committed before ``POST /runs`` answers, so its id resolves at once; what
a run records later (events, results, its end) is written in order by the store's
writer, so a run read as finished has all its results and events.

A run's events are paged (``after`` a sequence number, at most ``limit``): a run of
100 000 steps never comes back whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentos.errors import SpecError
from agentos.spec.agents import AgentsFile
from agentos.spec.config import ToolsConfig
from agentos.store import Store, owners, queries
from agentos.tools.registry import ToolRegistry

MAX_EVENTS = 1000
"""The most events one ``GET /runs/{id}`` gives (the default is 100)."""

MAX_LIST = 1000
"""The most runs one ``GET /runs`` lists (the default is 20, as ``agentos runs``)."""


class RunNotFound(LookupError):
    """No run has that id, or an id that starts with it."""


def _reader(path: Path) -> Store:
    return Store(path, readonly=True)


def read_run(path: Path, run_id: str, *, after: int, limit: int) -> dict[str, Any]:
    """One run as ``GET /runs/{id}`` gives it: its row (as ``agentos runs --json`` shows
    it, a run of a process that is gone as ``crashed``), its results' data, and a page of
    its events. ``run_id`` may be a unique prefix (what ``agentos runs`` shows);
    :class:`RunNotFound` when nothing matches, ``StoreError`` when several do."""
    with _reader(path) as store:
        row = queries.get_run(store, run_id)
        if row is None:
            raise RunNotFound(run_id)
        spec = row.get("spec")
        listed = {k: v for k, v in row.items() if k in _LIST_FIELDS}
        (run,) = owners.crashed_view(store, [listed])
        rid = run["id"]
        answers, hits = queries.model_calls_of(store, [rid]).get(rid, (0, 0))
        results = [r["data"] for r in queries.run_results(store, rid)]
        events = queries.run_events(store, rid, after=after, limit=limit + 1)
        total = store.db.execute("SELECT count(*) FROM events WHERE run_id = ?", [rid]).fetchone()
    more = len(events) > limit
    events = events[:limit]
    return {
        **run,
        "answers": answers,
        "cache_hits": hits,
        "spec": spec,
        "results": results,
        "events": [
            {"seq": e["seq"], "type": e["type"], "time": e["time"], "payload": e["payload"]}
            for e in events
        ],
        "events_total": total[0],
        "events_next": events[-1]["seq"] if more and events else None,
        "url": f"/runs/{rid}",
    }


_LIST_FIELDS = frozenset(
    {
        *("id", "agent", "kind", "status", "started_at", "finished_at", "error"),
        *("agents_file", "wanted", "successes", "attempts", "parent_id", "forked_from"),
        *("pid", "host", "owner", "last_seen_at", "node"),
    }
)
"""The columns of a run that ``agentos runs --json`` lists (:func:`queries.list_runs`)."""


def list_runs(
    path: Path, *, agent: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """Runs, newest first, as ``agentos runs --json`` lists them (a run of a process that
    is gone shows ``crashed``), with each run's unique id prefix and its URL."""
    with _reader(path) as store:
        rows = owners.crashed_view(
            store, queries.list_runs(store, agent=agent, status=status, limit=limit)
        )
        rows = [r for r in rows if status is None or r["status"] == status]
        ids = [r["id"] for r in rows]
        prefixes = queries.unique_prefixes(store, ids)
        calls = queries.model_calls_of(store, ids)
    for r in rows:
        r["answers"], r["cache_hits"] = calls.get(r["id"], (0, 0))
        r["prefix"] = prefixes[r["id"]]
        r["url"] = f"/runs/{r['id']}"
    return rows


def list_tools(agents: AgentsFile | None, config: ToolsConfig) -> list[dict[str, Any]]:
    """The tools agents may use: every built-in, and the user tools the served agents
    file names (loaded as its runs load them), each with the agents that list it."""
    registry = ToolRegistry(config)
    used_by: dict[str, list[str]] = {}
    if agents is not None:
        registry.base_dir = agents.path.resolve().parent
        for spec in agents:
            try:
                tools = registry.resolve(spec.tools, agent=spec.name, file=str(agents.path))
            except SpecError:
                continue  # checked when serve started; a module broken since is left out
            for tool in tools:
                used_by.setdefault(tool.name, []).append(spec.name)
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
            "side_effects": tool.side_effects,
            "source": tool.source,
            "timeout_s": tool.timeout_s,
            "agents": used_by.get(tool.name, []),
        }
        for tool in registry.tools.values()
    ]
