"""Control commands: rows in the store that a runtime picks up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentos.errors import StoreError
from agentos.store import Store
from agentos.tui.commands import send_command


def test_send_command_inserts_a_pending_row_and_returns_its_id(db_path: Path) -> None:
    Store(db_path).close()
    first = send_command(db_path, "pause", "capital-cities")
    second = send_command(db_path, "cancel", "019aa5d1a3c2774be0d513", {"reason": "user"})
    with Store(db_path, readonly=True) as store:
        rows = list(store.db.query("SELECT * FROM control ORDER BY id"))
    assert second > first
    assert [(r["id"], r["command"], r["target"]) for r in rows] == [
        (first, "pause", "capital-cities"),
        (second, "cancel", "019aa5d1a3c2774be0d513"),
    ]
    assert rows[0]["args"] is None and json.loads(rows[1]["args"]) == {"reason": "user"}
    assert all(r["done_at"] is None and r["done_by"] is None for r in rows)
    assert abs(rows[0]["created_at"] - time.time()) < 60


def test_send_command_never_creates_a_database(db_path: Path) -> None:
    with pytest.raises(StoreError, match="there is no agentos database"):
        send_command(db_path, "pause", "a")
    assert not db_path.exists()


def test_send_command_refuses_unknown_commands_and_empty_targets(db_path: Path) -> None:
    Store(db_path).close()
    with pytest.raises(ValueError, match="unknown control command 'stop'"):
        send_command(db_path, "stop", "a")
    with pytest.raises(ValueError, match="needs a target"):
        send_command(db_path, "resume", "")
