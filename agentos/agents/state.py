"""Agent state: a persistent key/value store per agent, kept across runs and restarts.

One row of the ``agent_state`` table per (agent, key); values are JSON. A counter agent
keeps its count here, a finite-state machine its current state, a collector the last
thing it saw. Any run of the agent, in any process, sees what earlier runs left.

Writes go through the store's writer like every other write, so they never block the
event loop and are committed in the order they were made; reads run on ``store.db`` and
see what is committed. So that an agent reads its own writes before the writer has
committed them, an ``AgentState`` also remembers what it wrote itself since its last
:meth:`AgentState.flush`: those keys are answered from memory, the rest from the
database. After a flush everything comes from the database again (which then holds the
writes, or a newer value another process wrote since).

Values must be JSON (dicts, lists, strings, numbers, booleans, None; no NaN): they are
encoded when ``set`` is called, on the caller's thread, so a bad value fails where it was
produced, and mutating a dict after ``set`` does not change what is stored.

The store's contract holds here too: ``store.db`` is used by one thread at a time; a
task agent's function that runs in a worker thread reads state while the event loop is
waiting for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

from agentos.store import Store
from agentos.store.writer import Atomic, Execute, Insert

_DELETED: Final = object()
"""Marks a key deleted in the not-yet-flushed overlay."""


class AgentState:
    """The persistent key/value state of agent ``agent`` in ``store``."""

    def __init__(self, store: Store, agent: str) -> None:
        if not agent:
            raise ValueError("agent state needs an agent name")
        self.store = store
        self.agent = agent
        # Protects _pending, _cleared and _writes: a task's function may write state from
        # a worker thread while the run reads it on the event loop.
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, object]] = {}
        """(write number, encoded JSON text or _DELETED) of each key written since the
        last flush."""
        self._cleared: int | None = None
        """The write number of a clear() since the last flush: committed rows no longer
        count."""
        self._writes = 0

    # -- reads -----------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when the agent has none."""
        _check_key(key)
        with self._lock:
            pending = self._pending.get(key, (0, None))[1]
            cleared = self._cleared is not None
        if pending is _DELETED:
            return default
        if isinstance(pending, str):
            return json.loads(pending)
        if cleared:
            return default
        row = self.store.db.execute(
            "SELECT value FROM agent_state WHERE agent = ? AND key = ?", [self.agent, key]
        ).fetchone()
        return default if row is None else json.loads(row[0])

    def items(self) -> dict[str, Any]:
        """Every key of the agent with its value, sorted by key."""
        with self._lock:
            pending = {key: encoded for key, (_, encoded) in self._pending.items()}
            cleared = self._cleared is not None
        values: dict[str, Any] = {}
        if not cleared:
            rows = self.store.db.execute(
                "SELECT key, value FROM agent_state WHERE agent = ? ORDER BY key", [self.agent]
            ).fetchall()
            values = {key: json.loads(value) for key, value in rows}
        for key, encoded in pending.items():
            if encoded is _DELETED:
                values.pop(key, None)
            else:
                assert isinstance(encoded, str)
                values[key] = json.loads(encoded)
        return dict(sorted(values.items()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _DELETED) is not _DELETED

    def __iter__(self) -> Iterator[str]:
        return iter(self.items())

    # -- writes ----------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``, replacing what was there."""
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        """Store several keys as one write: committed together or not at all (a state
        machine's state and its counters never disagree after a crash)."""
        encoded = {key: _encode(self.agent, key, value) for key, value in values.items()}
        if not encoded:
            return
        now = time.time()
        ops = tuple(
            Insert(
                "agent_state",
                {"agent": self.agent, "key": key, "value": text, "updated_at": now},
                replace=True,
            )
            for key, text in encoded.items()
        )
        with self._lock:
            self.store.submit(ops[0] if len(ops) == 1 else Atomic(ops))
            for key, text in encoded.items():
                self._remember(key, text)

    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it is not there)."""
        _check_key(key)
        with self._lock:
            self.store.submit(
                Execute("DELETE FROM agent_state WHERE agent = ? AND key = ?", (self.agent, key))
            )
            self._remember(key, _DELETED)

    def clear(self) -> None:
        """Remove every key of the agent."""
        with self._lock:
            self.store.submit(Execute("DELETE FROM agent_state WHERE agent = ?", (self.agent,)))
            self._pending.clear()
            self._writes += 1
            self._cleared = self._writes

    def flush(self) -> None:
        """Wait until this state's writes are committed (blocks; see :meth:`aflush`)."""
        written = self._written()
        self.store.flush()
        self._forget(written)

    async def aflush(self) -> None:
        """:meth:`flush` without blocking the event loop."""
        written = self._written()
        await self.store.aflush()
        self._forget(written)

    def _remember(self, key: str, encoded: object) -> None:
        self._writes += 1
        self._pending[key] = (self._writes, encoded)

    def _written(self) -> int:
        with self._lock:
            return self._writes

    def _forget(self, written: int) -> None:
        """Drop what the writer has committed: writes numbered up to ``written`` (a write
        made while the flush waited stays remembered until the next flush)."""
        with self._lock:
            self._pending = {k: v for k, v in self._pending.items() if v[0] > written}
            if self._cleared is not None and self._cleared <= written:
                self._cleared = None

    def __repr__(self) -> str:
        return f"<AgentState {self.agent!r} in {self.store.path}>"


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"an agent state key is a non-empty string, not {key!r}")


def _encode(agent: str, key: str, value: Any) -> str:
    _check_key(key)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"agent '{agent}' state key '{key}': the value must be JSON (dict, list, str, "
            f"number, bool or None): {exc}"
        ) from None
