"""Which process owns a run or a sink claim, and how a dead owner is found out.

Every run (``runs.owner``) and every sink claim (``sink_deliveries.claimed_by``) names
an *owner*: one row of ``owners`` per agentos process and database (host, pid, and the
process's start as the operating system knows it), with a heartbeat while a runtime
works. A process that is killed (``kill -9``, a power cut, the OOM killer) cannot say
that it is gone; someone else must prove it, and only proof counts:

- **On this host** the owner is gone when its pid is not alive, or is alive but started
  at another time (:func:`process_start`: the boot id and the start time in clock ticks
  from ``/proc/PID/stat``, so a pid reused by a later process, or a pid from before a
  reboot, is told apart). Where the start time cannot be read (not Linux), a live pid
  counts as the owner.
- **On another host** nothing can look at its processes; only a heartbeat older than
  :data:`HEARTBEAT_TIMEOUT_S` proves it gone. An owner that never wrote a heartbeat (a
  one-off ``agentos ask``, not a runtime) is never declared gone from another host.

An owner ends cleanly when its store is closed (:meth:`agentos.store.Store.close`): its
row says ``ended`` and its claims are handed back.

:func:`sweep` applies the proof: the gone owner's ``running`` runs become ``crashed``
(``last_seen_at``: its last heartbeat, its start or the run's latest event), its claims'
leases end now (the items are claimable again at once, and the crash counts as one of
their attempts), and the owner is marked ``crashed``. A run still ``running`` under an
owner that has ended can never finish either, and becomes ``crashed`` too. It runs when
a runtime starts, with every heartbeat of a runtime, before every sink claim, and in
``agentos runs``; ``agentos top``, which only reads, shows the same verdict
(:func:`crashed_view`) without writing it.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from agentos.ids import new_id
from agentos.store.db import Store
from agentos.store.writer import Call, Insert, Update

HEARTBEAT_INTERVAL_S: Final = 5.0
"""How often a runtime writes its heartbeat (and sweeps for dead owners)."""

HEARTBEAT_TIMEOUT_S: Final = 30.0
"""A heartbeat this old proves an owner on another host gone (six missed beats)."""


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The start of process ``pid`` as ``BOOT_ID:TICKS`` (unique per process on a host,
    across pid reuse and reboots); None when it cannot be read (no such process, or not
    Linux)."""
    boot = _boot_id()
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return f"{boot}:{int(fields[19])}"  # field 22, starttime
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2 :][:1] != b"Z"
    except OSError:
        return True


@dataclass(frozen=True, slots=True)
class Owner:
    """One owner row: who holds runs and claims (see the module docstring)."""

    id: str
    host: str
    pid: int
    pid_start: str | None
    started_at: float
    heartbeat_at: float | None = None

    @property
    def last_seen(self) -> float:
        return self.heartbeat_at if self.heartbeat_at is not None else self.started_at


def this_process(owner_id: str | None = None) -> Owner:
    """An owner for the calling process (a new id unless ``owner_id`` is given)."""
    pid = os.getpid()
    return Owner(
        id=owner_id or new_id(),
        host=socket.gethostname(),
        pid=pid,
        pid_start=process_start(pid),
        started_at=time.time(),
    )


def is_gone(owner: Owner, *, now: float, timeout_s: float = HEARTBEAT_TIMEOUT_S) -> bool:
    """Whether ``owner`` is provably gone at ``now`` (module docstring)."""
    if owner.host == socket.gethostname():
        if not pid_alive(owner.pid):
            return True
        if owner.pid_start is None:
            return False
        current = process_start(owner.pid)
        return current is not None and current != owner.pid_start
    return owner.heartbeat_at is not None and now - owner.heartbeat_at > timeout_s


def register(store: Store, owner_id: str | None = None) -> Owner:
    """Record the calling process as the owner of what ``store`` starts from now on (runs
    made by :func:`agentos.store.queries.create_run`); queued, not flushed. A store has
    one owner: a second call returns the first one's."""
    if store.owner is not None:
        return store.owner
    owner = this_process(owner_id)
    store.submit(
        Insert(
            "owners",
            {
                "id": owner.id,
                "host": owner.host,
                "pid": owner.pid,
                "pid_start": owner.pid_start,
                "started_at": owner.started_at,
                "heartbeat_at": None,
                "status": "live",
                "ended_at": None,
            },
        )
    )
    store.owner = owner
    return owner


def beat(store: Store, owner: Owner) -> None:
    """Queue a heartbeat of ``owner``, and a sweep for owners that are gone."""
    now = time.time()
    store.submit(Update("owners", owner.id, {"heartbeat_at": now}))
    store.submit(_sweep_op(SweepResult(), HEARTBEAT_TIMEOUT_S))


# -- finding and sweeping the dead ------------------------------------------------------------

_LIVE_OWNERS = (
    "SELECT id, host, pid, pid_start, started_at, heartbeat_at FROM owners WHERE status = 'live'"
)

_LEGACY_RUNNING = (
    "SELECT id, host, pid, started_at FROM runs "
    "WHERE status = 'running' AND owner IS NULL AND pid IS NOT NULL"
)


def gone_owners(
    conn: sqlite3.Connection, *, now: float, timeout_s: float = HEARTBEAT_TIMEOUT_S
) -> list[Owner]:
    """The owners still marked live whose process is provably gone."""
    owners = [Owner(*row) for row in conn.execute(_LIVE_OWNERS).fetchall()]
    return [o for o in owners if is_gone(o, now=now, timeout_s=timeout_s)]


def _legacy_gone(conn: sqlite3.Connection) -> list[tuple[str, int, str, float]]:
    """Running runs recorded before owners existed (only pid and host): those whose pid
    is dead on this host (pid reuse cannot be told apart for them)."""
    host = socket.gethostname()
    return [
        (run_id, pid, run_host, started_at)
        for run_id, run_host, pid, started_at in conn.execute(_LEGACY_RUNNING).fetchall()
        if run_host == host and not pid_alive(int(pid))
    ]


_ORPHANS = (
    "SELECT r.id, o.pid, o.host FROM runs AS r JOIN owners AS o ON o.id = r.owner "
    "WHERE r.status = 'running' AND o.status != 'live'"
)
"""Running runs whose owner has ended (it closed the store without finishing them) or
was already found crashed: nothing can finish them any more."""


def _orphan_reason(pid: int, host: str) -> str:
    return f"crashed: its process (pid {pid} on {host}) ended without finishing it"


def crash_reason(owner: Owner, *, now: float) -> str:
    where = f"pid {owner.pid} on {owner.host}"
    if owner.host == socket.gethostname():
        return f"crashed: its process ({where}) is gone"
    return f"crashed: its process ({where}) sent no heartbeat for {now - owner.last_seen:.0f}s"


@dataclass(slots=True)
class SweepResult:
    """What one sweep found and marked."""

    owners: list[str] = field(default_factory=list)
    """Ids of the owners marked crashed."""
    runs: list[str] = field(default_factory=list)
    """Ids of the runs marked crashed."""
    claims: int = 0
    """Sink claims released."""


_LAST_SEEN = (
    "max(?, runs.started_at, "
    "coalesce((SELECT max(e.time) FROM events AS e WHERE e.run_id = runs.id), 0))"
)
"""When a crashed run was last seen alive: its owner's last heartbeat (the parameter), its
start or its latest event, whichever is latest."""


def sweep_connection(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    timeout_s: float = HEARTBEAT_TIMEOUT_S,
    result: SweepResult | None = None,
) -> SweepResult:
    """Mark what gone owners held (module docstring), on ``conn`` inside the caller's
    transaction. Idempotent: a second sweep finds nothing more."""
    now = time.time() if now is None else now
    found = SweepResult() if result is None else result
    found.owners.clear()
    found.runs.clear()
    found.claims = 0
    for owner in gone_owners(conn, now=now, timeout_s=timeout_s):
        runs = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM runs WHERE owner = ? AND status = 'running'", [owner.id]
            ).fetchall()
        ]
        conn.execute(
            f"UPDATE runs SET status = 'crashed', finished_at = {_LAST_SEEN}, "
            f"last_seen_at = {_LAST_SEEN}, error = ? WHERE owner = ? AND status = 'running'",
            [owner.last_seen, owner.last_seen, crash_reason(owner, now=now), owner.id],
        )
        cursor = conn.execute(
            "UPDATE sink_deliveries SET lease_until = ? "
            "WHERE claimed_by = ? AND status = 'claimed' AND lease_until > ?",
            [now, owner.id, now],
        )
        # its fires stay claimed (each fire runs at most once), but no longer read running
        conn.execute(
            "UPDATE schedule_fires SET status = 'crashed', finished_at = ? "
            "WHERE claimed_by = ? AND status IN ('running', 'queued')",
            [owner.last_seen, owner.id],
        )
        conn.execute(
            "UPDATE owners SET status = 'crashed', ended_at = ? WHERE id = ?", [now, owner.id]
        )
        found.owners.append(owner.id)
        found.runs.extend(runs)
        found.claims += max(0, cursor.rowcount)
    for run_id, pid, host in conn.execute(_ORPHANS).fetchall():
        conn.execute(
            f"UPDATE runs SET status = 'crashed', finished_at = {_LAST_SEEN}, "
            f"last_seen_at = {_LAST_SEEN}, error = ? WHERE id = ? AND status = 'running'",
            [0.0, 0.0, _orphan_reason(pid, host), run_id],
        )
        found.runs.append(run_id)
    for run_id, pid, host, started_at in _legacy_gone(conn):
        conn.execute(
            f"UPDATE runs SET status = 'crashed', finished_at = {_LAST_SEEN}, "
            f"last_seen_at = {_LAST_SEEN}, error = ? WHERE id = ? AND status = 'running'",
            [started_at, started_at, f"crashed: its process (pid {pid} on {host}) is gone", run_id],
        )
        found.runs.append(run_id)
    return found


def sweep(store: Store, *, timeout_s: float = HEARTBEAT_TIMEOUT_S) -> SweepResult:
    """:func:`sweep_connection` through the store's writer, committed when it returns."""
    result = SweepResult()
    store.submit(_sweep_op(result, timeout_s))
    store.flush()
    return result


def _sweep_op(result: SweepResult, timeout_s: float) -> Call:
    def sweep_gone_owners(conn: sqlite3.Connection) -> None:
        sweep_connection(conn, timeout_s=timeout_s, result=result)

    return Call(sweep_gone_owners, tables=None)


def crashed_view(
    store: Store, rows: Iterable[dict[str, Any]], *, now: float | None = None
) -> list[dict[str, Any]]:
    """``runs`` rows as a sweep would leave them, without writing (for read-only viewers):
    a ``running`` row whose owner is provably gone shows as ``crashed``."""
    now = time.time() if now is None else now
    rows = list(rows)
    if not any(r.get("status") == "running" for r in rows):
        return rows
    conn: sqlite3.Connection = store.db.conn
    gone = {o.id: o for o in gone_owners(conn, now=now)}
    legacy = {run_id: pid for run_id, pid, _, _ in _legacy_gone(conn)}
    orphans = {run_id: (pid, host) for run_id, pid, host in conn.execute(_ORPHANS)}
    out = []
    for row in rows:
        if row.get("status") == "running":
            owner = gone.get(row.get("owner") or "")
            if owner is not None:
                seen = max(owner.last_seen, row.get("started_at") or 0.0)
                row = {
                    **row,
                    "status": "crashed",
                    "finished_at": seen,
                    "last_seen_at": seen,
                    "error": crash_reason(owner, now=now),
                }
            elif row["id"] in orphans:
                row = {**row, "status": "crashed", "error": _orphan_reason(*orphans[row["id"]])}
            elif row["id"] in legacy:
                row = {
                    **row,
                    "status": "crashed",
                    "error": f"crashed: its process (pid {legacy[row['id']]}) is gone",
                }
        out.append(row)
    return out
