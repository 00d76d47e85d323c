"""Agent state: a JSON key/value store per agent that outlives runs, stores and processes."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentos.agents.state import AgentState
from agentos.store import Store


def test_values_round_trip_and_read_your_own_writes_before_the_commit(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        state = AgentState(store, "counter")
        assert state.get("count") is None
        assert state.get("count", 0) == 0
        state.set("count", 3)
        state.set("seen", {"ids": ["a", "b"], "ok": True, "ratio": 0.5, "none": None})
        # answered from what this instance wrote, before the writer committed it
        assert state.get("count") == 3
        assert state.items() == {
            "count": 3,
            "seen": {"ids": ["a", "b"], "ok": True, "ratio": 0.5, "none": None},
        }
        state.flush()
        row = store.db.execute(
            "SELECT value FROM agent_state WHERE agent = 'counter' AND key = 'count'"
        ).fetchone()
        assert row == ("3",)
        assert state.get("count") == 3
        assert "count" in state and "missing" not in state
        assert list(state) == ["count", "seen"]


def test_state_survives_closing_the_store_and_is_kept_per_agent(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        AgentState(store, "counter").update({"state": "counting", "count": 2})
        AgentState(store, "other").set("count", 99)
    with Store(db) as store:
        again = AgentState(store, "counter")
        assert again.items() == {"count": 2, "state": "counting"}
        assert AgentState(store, "other").get("count") == 99
        assert AgentState(store, "nobody").items() == {}


def test_state_is_shared_with_another_process(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        AgentState(store, "counter").set("count", 1)
    script = (
        "import sys\n"
        "from agentos.store import Store\n"
        "from agentos.agents.state import AgentState\n"
        "with Store(sys.argv[1]) as store:\n"
        "    state = AgentState(store, 'counter')\n"
        "    state.set('count', state.get('count') + 1)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    with Store(db) as store:
        assert AgentState(store, "counter").get("count") == 2


def test_delete_and_clear(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        state = AgentState(store, "fsm")
        state.update({"a": 1, "b": 2, "c": 3})
        state.flush()
        state.delete("a")
        state.delete("never-set")
        assert state.get("a") is None
        assert state.items() == {"b": 2, "c": 3}
        state.flush()
        assert state.items() == {"b": 2, "c": 3}
        untouched = AgentState(store, "bystander")
        untouched.set("keep", True)
        state.clear()
        state.set("c", "after clear")
        assert state.items() == {"c": "after clear"}
        state.flush()
        assert AgentState(store, "fsm").items() == {"c": "after clear"}
        assert AgentState(store, "bystander").items() == {"keep": True}


async def test_a_newer_value_from_elsewhere_wins_after_a_flush(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        state = AgentState(store, "counter")
        state.set("count", 1)
        await state.aflush()
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(
                "UPDATE agent_state SET value = '7' WHERE agent = 'counter' AND key = 'count'"
            )
        conn.close()
        assert state.get("count") == 7


def test_values_that_are_not_json_are_refused_where_they_are_set(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        state = AgentState(store, "counter")
        with pytest.raises(TypeError, match=r"agent 'counter' state key 'when'.*must be JSON"):
            state.set("when", object())
        with pytest.raises(TypeError, match="must be JSON"):
            state.set("ratio", math.nan)
        with pytest.raises(ValueError, match="non-empty string"):
            state.set("", 1)
        state.update({"ok": 1})
        with pytest.raises(TypeError):
            state.update({"fine": 2, "bad": {1, 2}})
        state.flush()
        # the refused update wrote nothing, not even its good key
        assert state.items() == {"ok": 1}


def test_a_dict_changed_after_set_does_not_change_what_is_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        state = AgentState(store, "collector")
        seen = {"ids": ["a"]}
        state.set("seen", seen)
        seen["ids"].append("b")
        assert state.get("seen") == {"ids": ["a"]}
        state.flush()
        assert state.get("seen") == {"ids": ["a"]}
