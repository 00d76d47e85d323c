"""Sample indices: which sample of a sampled request each run of an agent asks for.

A request at temperature > 0 carries a sample index (``InferenceRequest.sample``): it is
sent as the ``seed`` and is part of the cache key, so the same index gets the same answer,
from the engine or the cache. A run's attempt ``k`` asks for sample ``sample_base + k``.

- **Perpetual and scheduled agents** ask for fresh samples on every tick and fire: each
  run reserves the next :func:`samples_per_run` indices of its agent from the store's
  ``sample_counters``, so no two runs of the agent share a sample, also across restarts
  of the daemon and between a daemon and ``--once`` calls. Without this every tick was
  attempt 1, seed 1: the same answer each time (and, through the cache, the same cache
  hit, which an output sink then dropped as a repeat).
- **Single-shot runs** keep ``sample_base`` 0: running an agents file again asks for the
  same samples, so with the cache on it is served from the cache (shown as cache hits in
  the progress lines and in ``agentos runs``), which is what makes iterating on a
  pipeline cheap and repeatable. ``cache: false`` asks the engine again; a fresh sample
  per invocation would make the cache useless for sampled single-shot agents.
- **Replays** ask for the recorded run's samples: the base is stored with the run
  (``runs.sample_base``).
"""

from __future__ import annotations

import sqlite3
import time

from agentos.errors import StoreError
from agentos.spec.agents import AgentSpec
from agentos.store import Store
from agentos.store.writer import BUSY_TIMEOUT_MS, Update


def samples_per_run(spec: AgentSpec) -> int:
    """The most sample indices one run of ``spec`` can ask for: its attempt cap (a team's
    turns, a task's tries), the highest attempt number its requests carry."""
    if spec.kind == "team":
        return spec.termination.max_turns
    if spec.kind == "task":
        return spec.retry.max_attempts
    return spec.life_cycle.attempt_cap


def fresh_samples(spec: AgentSpec) -> bool:
    """Whether each run of ``spec`` gets samples of its own (module docstring)."""
    return spec.life_cycle.type in ("perpetual", "scheduled")


def reserve(store: Store, agent: str, count: int) -> int:
    """Reserve ``count`` sample indices for one run of ``agent``; the run's base.

    One ``BEGIN IMMEDIATE`` transaction on a connection of its own, so two processes
    running the same agent never get overlapping ranges. Blocks for one commit; asyncio
    code calls it in a thread.
    """
    conn = sqlite3.connect(store.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT next_base FROM sample_counters WHERE agent = ?", (agent,)
            ).fetchone()
            base = int(row[0]) if row else 0
            conn.execute(
                "INSERT INTO sample_counters (agent, next_base, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(agent) DO UPDATE SET next_base = excluded.next_base, "
                "updated_at = excluded.updated_at",
                (agent, base + count, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return base
    except sqlite3.Error as exc:
        raise StoreError(f"cannot reserve sample indices for agent '{agent}': {exc}") from exc
    finally:
        conn.close()


def record_base(store: Store, run_id: str, base: int) -> None:
    """Store a run's sample base with it (queued), for replay."""
    if run_id and base:
        store.submit(Update("runs", run_id, {"sample_base": base}))
