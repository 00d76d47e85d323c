"""Runs and sink claims of a process that is gone: found out by proof, never by a guess.

Real processes killed with SIGKILL, real SQLite files; the other-host and pid-reuse
cases are owner rows as another host or an earlier process would have written them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentos.sinks import SinkStore
from agentos.store import Store, create_run, get_run, owners
from agentos.store.owners import HEARTBEAT_TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from agentos.scheduler.fires import Fire, FireLedger
    from agentos.sinks import SinkStore
    from agentos.store import Store, create_run
    store = Store(sys.argv[1])
    run_id = create_run(store, agent="a", kind="prompt", spec={}, wanted=1, agents_file=None)
    sinks = SinkStore(store, owner=store.owner.id)
    claimed = sinks.claim("work", "reader")
    fire = Fire(agent="daily", time=1.0e9, label="2001-09-09T01:46:40Z", key="daily@1")
    FireLedger(store, claimed_by=store.owner.id).claim(fire, source="daemon")
    store.flush()
    print(run_id, claimed[0].id if claimed else "-", flush=True)
    time.sleep(600)
    """
)


def start_holder(db_path: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A process that starts a run, claims an item of sink ``work`` and then waits."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    run_id, item = process.stdout.readline().split()
    return process, run_id, item


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
    if process.stdout is not None:
        process.stdout.close()


def add_owner(store: Store, **values: object) -> str:
    row: dict[str, object] = {
        "id": "other",
        "host": "vm-elsewhere",
        "pid": 4242,
        "pid_start": None,
        "started_at": time.time() - 3600,
        "heartbeat_at": None,
        "status": "live",
        "ended_at": None,
    }
    row.update(values)
    store.db.table("owners").insert(row)
    return str(row["id"])


def add_run(store: Store, owner: str | None, **values: object) -> str:
    row: dict[str, object] = {
        "id": f"run-of-{owner}",
        "agent": "a",
        "kind": "prompt",
        "status": "running",
        "started_at": time.time() - 60,
        "owner": owner,
    }
    row.update(values)
    store.db.table("runs").insert(row)
    return str(row["id"])


def status_of(store: Store, run_id: str) -> str:
    run = get_run(store, run_id)
    assert run is not None
    return str(run["status"])


def test_a_killed_process_s_run_is_marked_crashed_and_its_claim_freed_at_once(
    db_path: Path,
) -> None:
    with Store(db_path) as store, SinkStore(store, owner="producer") as sinks:
        sinks.publish("work", {"n": 1}, produced_by=None)
    holder, run_id, item = start_holder(db_path)
    try:
        with Store(db_path) as store, SinkStore(store, owner="second") as sinks:
            assert owners.sweep(store).runs == [], "a live owner is never swept"
            assert status_of(store, run_id) == "running"
            assert sinks.claim("work", "reader") == [], "the live holder's lease holds"
    finally:
        kill(holder)

    with Store(db_path) as store, SinkStore(store, owner="second") as sinks:
        before = time.time()
        claimed = sinks.claim("work", "reader")  # no 300 s wait for the lease
        assert [(c.id, c.attempts) for c in claimed] == [(int(item), 2)]
        run = get_run(store, run_id)
        assert run is not None
        assert run["status"] == "crashed"
        assert run["last_seen_at"] is not None and run["last_seen_at"] <= before
        assert run["finished_at"] == run["last_seen_at"] >= run["started_at"]
        assert f"pid {holder.pid}" in run["error"] and "is gone" in run["error"]
        # the fire it claimed is not run again (at most once) but no longer reads running
        fires = store.db.execute("SELECT key, status FROM schedule_fires").fetchall()
        assert fires == [("daily@1", "crashed")]
        assert owners.sweep(store).runs == [], "a second sweep finds nothing more"


def test_a_live_pid_that_started_at_another_time_is_a_reused_pid(db_path: Path) -> None:
    this = owners.this_process()
    if this.pid_start is None:
        pytest.skip("process start times cannot be read here (not Linux)")
    with Store(db_path) as store:
        mine = add_owner(store, id="mine", host=this.host, pid=this.pid, pid_start=this.pid_start)
        reused = add_owner(
            store, id="reused", host=this.host, pid=this.pid, pid_start="another-boot:12"
        )
        add_run(store, mine)
        add_run(store, reused)
        swept = owners.sweep(store)
        assert swept.owners == ["reused"]
        assert status_of(store, "run-of-reused") == "crashed"
        assert status_of(store, "run-of-mine") == "running"


def test_another_host_s_owner_is_gone_only_once_its_heartbeat_is_old(db_path: Path) -> None:
    now = time.time()
    with Store(db_path) as store:
        silent = add_owner(store, id="silent", heartbeat_at=now - HEARTBEAT_TIMEOUT_S - 5)
        beating = add_owner(store, id="beating", heartbeat_at=now - 2)
        never = add_owner(store, id="never", heartbeat_at=None)
        for owner in (silent, beating, never):
            add_run(store, owner)
        swept = owners.sweep(store)
        assert swept.owners == ["silent"]
        run = get_run(store, "run-of-silent")
        assert run is not None and run["status"] == "crashed"
        assert run["last_seen_at"] == pytest.approx(now - HEARTBEAT_TIMEOUT_S - 5)
        assert "no heartbeat" in run["error"]
        assert status_of(store, "run-of-beating") == "running"
        assert status_of(store, "run-of-never") == "running", "no heartbeat, no proof"


def test_a_run_recorded_before_owners_existed_is_judged_by_its_pid(db_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    this = owners.this_process()
    with Store(db_path) as store:
        add_run(store, None, id="old-dead", pid=int(dead.stdout), host=this.host)
        add_run(store, None, id="old-alive", pid=this.pid, host=this.host)
        add_run(store, None, id="old-elsewhere", pid=1, host="vm-elsewhere")
        assert sorted(owners.sweep(store).runs) == ["old-dead"]
        assert status_of(store, "old-dead") == "crashed"
        assert status_of(store, "old-alive") == "running"
        assert status_of(store, "old-elsewhere") == "running"


def test_a_read_only_viewer_shows_the_crash_without_writing(db_path: Path) -> None:
    holder, run_id, _ = start_holder(db_path)
    kill(holder)
    with Store(db_path, readonly=True) as viewer:
        rows = owners.crashed_view(viewer, [dict(r) for r in viewer.db.query("SELECT * FROM runs")])
        assert [(r["id"], r["status"]) for r in rows] == [(run_id, "crashed")]
    with Store(db_path) as store:
        assert status_of(store, run_id) == "running", "the viewer wrote nothing"


def test_agentos_runs_marks_a_killed_run_crashed(db_path: Path, tmp_path: Path) -> None:
    holder, run_id, _ = start_holder(db_path)
    kill(holder)
    listed = subprocess.run(
        [sys.executable, "-m", "agentos", "runs", "--db", str(db_path), "--json"],
        env={**os.environ, "PYTHONPATH": str(REPO), "AGENTOS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["status"]) == (run_id, "crashed")
    assert row["last_seen_at"] is not None
    with Store(db_path) as store:
        assert status_of(store, run_id) == "crashed", "runs wrote the verdict"


def test_a_run_created_in_this_process_is_owned_by_it(db_path: Path) -> None:
    with Store(db_path) as store:
        run_id = create_run(store, agent="a", kind="prompt", spec={}, wanted=1, agents_file=None)
        run = get_run(store, run_id)
        assert run is not None and store.owner is not None
        assert run["owner"] == store.owner.id
        [row] = store.db.query("SELECT * FROM owners")
        assert (row["pid"], row["host"], row["status"]) == (os.getpid(), store.owner.host, "live")
        assert row["pid_start"] == owners.process_start(os.getpid())
