"""Control commands: how the dashboard (or a script, or a test) asks a running runtime to act.

A command is a row of the ``control`` table; nothing talks to the runtime directly, so a
command works across processes exactly like the snapshots do in the other direction.

The contract, for both sides:

- The sender inserts ``(created_at, command, target, args)`` with ``done_at`` and
  ``done_by`` NULL, in its own short ``BEGIN IMMEDIATE`` transaction (so it waits out a
  runtime's write group instead of failing), and gets the row's ``id`` back.
- ``pause`` (target: an agent name) — the runtime starts no new attempts of that agent;
  attempts already in flight finish. ``resume`` (target: an agent name) undoes it.
  ``cancel`` (target: a run id) — the runtime cancels that run, which ends ``cancelled``.
  ``args`` is a JSON object or NULL; none of these three uses it.
- A running runtime looks at the rows with ``done_at IS NULL AND created_at >= <its
  start>`` at least once a second, carries out those whose target it owns, and marks each
  with ``UPDATE control SET done_at = <now>, done_by = <its runtime_id> WHERE id = ? AND
  done_at IS NULL``. It leaves rows for targets it does not know to other runtimes on the
  same database. Commands older than a runtime never apply to it, so yesterday's pause
  cannot stop today's run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from agentos.errors import StoreError
from agentos.store.writer import BUSY_TIMEOUT_MS

COMMANDS: Final = ("pause", "resume", "cancel")
"""The commands a runtime understands: pause/resume take an agent name, cancel a run id."""


def send_command(
    db_path: str | Path, command: str, target: str, args: dict[str, Any] | None = None
) -> int:
    """Insert a control command for the runtimes on ``db_path``; returns its id.

    Blocks for one short write transaction (up to the busy timeout when another process
    holds the write lock), so the dashboard calls it from a worker thread. Never creates
    the database. Raises ValueError for an unknown command or an empty target, and
    StoreError when the database is missing, too old or stays locked.
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}; expected one of {COMMANDS}")
    if not target:
        raise ValueError(f"the {command} command needs a target")
    path = Path(db_path).expanduser()
    if not path.is_file():
        raise StoreError(f"there is no agentos database at {path}")
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO control (created_at, command, target, args) VALUES (?, ?, ?, ?)",
                [time.time(), command, target, json.dumps(args) if args is not None else None],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise StoreError(
                f"the database {path} has no control table yet; run any agentos command "
                "that writes to it (such as `agentos run`) to migrate it"
            ) from exc
        raise StoreError(f"cannot send {command} to the database {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"cannot send {command} to the database {path}: {exc}") from exc
    finally:
        conn.close()
