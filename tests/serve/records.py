"""Reading what a running ``agentos serve`` recorded: ``llm_calls`` rows and the runtime
snapshot ``agentos top`` reads, waiting for the store's writer to catch up."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def query(db: Path, sql: str, *args: object) -> list[dict[str, Any]]:
    """The rows of ``sql`` in ``db`` (opened read-only, while the server writes)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, args)]


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 15) -> T:
    """``read()`` again until ``done`` holds for what it returns; the last value, or an
    AssertionError naming it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = read()
        except sqlite3.OperationalError:  # the server has not created its tables yet
            if time.monotonic() > deadline:
                raise
        else:
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting; last seen: {value!r}")
        time.sleep(0.05)


def llm_calls(db: Path, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The ``llm_calls`` rows, once there are ``count`` of them (ordered by start)."""
    return wait_for(
        lambda: query(db, "SELECT * FROM llm_calls ORDER BY started_at, id"),
        lambda rows: len(rows) >= count,
        timeout,
    )


def client_processes(
    db: Path, done: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 15
) -> dict[str, dict[str, Any]]:
    """The ``client[…]`` processes of the newest runtime snapshot, by name, once ``done``
    holds for them."""

    def read() -> dict[str, dict[str, Any]]:
        rows = query(db, "SELECT data FROM runtime_snapshots ORDER BY updated_at DESC LIMIT 1")
        if not rows:
            return {}
        processes = json.loads(rows[0]["data"])["processes"]
        return {p["name"]: p for p in processes if p["name"].startswith("client[")}

    return wait_for(read, done, timeout)
