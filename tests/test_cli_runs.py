"""``agentos run`` and ``agentos runs`` as a user sees them: which answers came from the
cache, and run ids that ``agentos replay`` takes back, also on an 80-column terminal.

Real CLI processes, real SQLite files, the loopback engine in a thread of this process.
"""

from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.test_cli import agent_requests, agentos, engine, write_config

__all__ = ["engine"]

from agentos.testing.engine import LoopbackEngine

SAMPLED = """\
agents:
  - name: fruit
    prompt: "ANSWER: a fruit"
    temperature: 0.7
    life_cycle: {type: single-shot, length: 2, concurrency: 1}
"""


def setup(tmp_path: Path, engine: LoopbackEngine) -> Path:
    (tmp_path / "agents.yaml").write_text(SAMPLED)
    config = write_config(tmp_path, engine.url)
    config.write_text(config.read_text() + "embeddings:\n  enabled: false\n")
    return tmp_path / "runs.db"


def test_a_rerun_served_from_the_cache_says_so_in_its_output_and_in_runs(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db = setup(tmp_path, engine)
    first = agentos("run", "--db", str(db), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "cache" not in first.stdout
    second = agentos("run", "--db", str(db), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert agent_requests(engine) == 2, "the re-run is served from the cache"
    attempts = [line for line in second.stdout.splitlines() if ": attempt " in line]
    assert len(attempts) == 2 and all("(from the cache)" in line for line in attempts)
    assert "in 2 attempts (2 of 2 answers from the cache)" in second.stdout

    listed = json.loads(agentos("runs", "--db", str(db), "--json", cwd=tmp_path).stdout)
    assert [(r["cache_hits"], r["answers"]) for r in listed] == [(2, 2), (0, 2)]
    table = agentos("runs", "--db", str(db), cwd=tmp_path).stdout
    assert "cached" in table.splitlines()[0]
    rows = table.splitlines()[1:]
    assert "2/2" in rows[0].split() and "0/2" in rows[1].split()


def test_runs_at_80_columns_shows_ids_replay_takes(tmp_path: Path, engine: LoopbackEngine) -> None:
    db = setup(tmp_path, engine)
    assert agentos("run", "--db", str(db), cwd=tmp_path).returncode == 0
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    with conn:
        original = dict(conn.execute("select * from runs").fetchone())
        # a run started in the same millisecond by another process: 20 characters shared
        twin = {**original, "id": original["id"][:20] + "zz", "agent": "twin"}
        names = ", ".join(twin)
        marks = ", ".join("?" for _ in twin)
        conn.execute(f"insert into runs ({names}) values ({marks})", list(twin.values()))
    conn.close()

    listing = agentos("runs", "--db", str(db), cwd=tmp_path, env={"COLUMNS": "80"})
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:] if line[:2].strip()]
    shown = {row[1]: row[0] for row in rows}  # a wrapped cell's next line has no run
    assert set(shown) == {"fruit", "twin"}
    for agent, run_id in (("fruit", original["id"]), ("twin", twin["id"])):
        prefix = shown[agent]
        assert run_id.startswith(prefix) and len(prefix) == 21, listing.stdout
        replayed = agentos("replay", prefix, "--db", str(db), cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stderr
        assert run_id in replayed.stdout


def run_on_a_terminal(tmp_path: Path, *args: str) -> str:
    """``agentos`` with a pseudo-terminal as its output (live progress), its text."""
    leader, follower = os.openpty()
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "COLUMNS": "160"}
    process = subprocess.Popen(
        [sys.executable, "-m", "agentos", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        assert process.wait(timeout=60) == 0
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode(errors="replace"))


def test_the_live_summary_of_a_rerun_says_its_answers_came_from_the_cache(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db = setup(tmp_path, engine)
    first = run_on_a_terminal(tmp_path, "run", "--db", str(db))
    assert "succeeded fruit: 2/2 good results in 2 attempts" in first
    assert "from the cache" not in first
    second = run_on_a_terminal(tmp_path, "run", "--db", str(db))
    assert "good results in 2 attempts" in second
    assert "(2 of 2 answers from the cache)" in second
