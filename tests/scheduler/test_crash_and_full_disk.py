"""``agentos run`` killed with SIGKILL, and ``agentos run`` on a disk that fills up.

Real CLI processes, real SQLite files, the loopback engine in a thread of this process.
The full disk is real as far as the process can tell: ``RLIMIT_FSIZE`` caps the size of
every file it writes, so SQLite's writes fail as they would on a full file system.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentos.sinks import SinkStore
from agentos.store import Store
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.test_cli import agent_requests, agentos, write_config

REPO = Path(__file__).resolve().parents[2]

READER = """\
agents:
  - name: worker
    prompt: "ANSWER: done {{ n }}"
    input_sink: work
    life_cycle: {type: single-shot}
"""

SPENDER = """\
agents:
  - name: spender
    prompt: "ANSWER: ok"
    cache: false
    life_cycle: {type: single-shot, length: 400, concurrency: 4}
"""


@pytest.fixture
def slow_engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine(cost=CostModel(per_request_ms=700)).run_in_thread() as eng:
        yield eng


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def setup(tmp_path: Path, engine: LoopbackEngine, agents: str) -> Path:
    (tmp_path / "agents.yaml").write_text(agents)
    config = write_config(tmp_path, engine.url)
    config.write_text(config.read_text() + "embeddings:\n  enabled: false\n")
    return tmp_path / "agentos.db"


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("AGENTOS_DB", None)
    return env


def test_a_restart_after_kill_9_marks_the_run_crashed_and_takes_its_item_at_once(
    tmp_path: Path, slow_engine: LoopbackEngine
) -> None:
    db = setup(tmp_path, slow_engine, READER)
    with Store(db) as store, SinkStore(store, owner="seed") as sinks:
        for n in range(3):
            sinks.publish("work", {"n": n}, produced_by=None)
    first = subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "--db", str(db), "--plain"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    lines = []
    for line in first.stdout:
        lines.append(line)
        if " started: worker" in line:
            break
    time.sleep(0.3)  # its model call is in flight (the engine takes 0.7 s)
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL, "".join(lines)
    first.stdout.close()

    listed = json.loads(agentos("runs", "--db", str(db), "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in listed] == ["crashed"]
    assert listed[0]["last_seen_at"] is not None

    started = time.monotonic()
    second = agentos("run", "--db", str(db), "--plain", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert time.monotonic() - started < 60, "the crashed claim was not waited out"
    conn = sqlite3.connect(db)
    deliveries = conn.execute(
        "SELECT item_id, status, attempts FROM sink_deliveries ORDER BY item_id"
    ).fetchall()
    statuses = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY started_at")]
    conn.close()
    assert deliveries == [(1, "done", 2), (2, "done", 1), (3, "done", 1)]
    assert statuses == ["crashed", "succeeded", "succeeded", "succeeded"]


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_stops_the_model_calls_marks_the_run_and_exits_1(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db = setup(tmp_path, engine, SPENDER)
    Store(db).close()  # created and migrated: what is written from here on is the run's
    limit = db.stat().st_size + 96 * 1024
    done = subprocess.run(
        [sys.executable, "-m", "agentos", "run", "--db", str(db), "--plain"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=file_size_limit(limit),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot be written" in done.stderr
    assert "Traceback" not in output

    conn = sqlite3.connect(db)
    recorded = conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
    conn.close()
    asked = agent_requests(engine)
    assert recorded > 0, "the disk filled up before the run began; raise the limit"
    # what was in flight when the write failed may still be answered: 4 at a time, and
    # the attempts started while the writer was still working through its queue
    assert asked - recorded <= 16, f"{asked} model calls, {recorded} recorded"
    assert asked < 400 // 2

    listed = agentos("runs", "--db", str(db), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] in (["failed"], ["crashed"])
