"""Daemons that report health, from the CLI: heartbeats, failures in a row, alerts sent to a
webhook on loopback and to a command, and ``agentos status`` (also as the watchdog)."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.testing.engine import CostModel, LoopbackEngine
from tests.cli_process import run_agentos


class Hooks:
    """A webhook receiver on loopback: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append(json.loads(body))
                hooks.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    eng = LoopbackEngine(cost=CostModel(slots=4))
    with eng.run_in_thread():
        yield eng


def _setup(tmp_path: Path, engine: LoopbackEngine, hooks: Hooks, agents: str) -> None:
    (tmp_path / "agents.yaml").write_text(agents)
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - {{type: openai, name: loop, base_url: {engine.url}/v1}}\n"
        "alerts:\n"
        f"  - failures: 2\n    webhook: {hooks.url}/hooks/T0123-secret-path\n"
        "  - failures: 2\n    command: 'echo the pager is down >&2; exit 3'\n"
    )


def _status(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_agentos("status", "--db", "runs.db", "--json", *args, cwd=tmp_path)
    return result.returncode, json.loads(result.stdout)


def _once(tmp_path: Path) -> int:
    return run_agentos("run", "agents.yaml", "--db", "runs.db", "--once", cwd=tmp_path).returncode


PERPETUAL = """\
agents:
  - name: ticker
    prompt: "ANSWER: tick"
    life_cycle: {type: perpetual, every: 1m}
"""


def test_failures_in_a_row_alert_once_per_streak_and_carry_over_restarts(
    tmp_path: Path, engine: LoopbackEngine, hooks: Hooks
) -> None:
    _setup(tmp_path, engine, hooks, PERPETUAL)
    engine.faults.error_rate, engine.faults.error_status = 1.0, 400
    assert _once(tmp_path) == 1
    code, status = _status(tmp_path)
    (row,) = status["daemons"]
    assert code == 1
    assert (row["agent"], row["verdict"], row["consecutive_failures"]) == ("ticker", "failing", 1)
    assert row["last_success_at"] is None and row["heartbeat_at"] > time.time() - 60
    assert hooks.received == []

    assert _once(tmp_path) == 1  # a new process: the streak carries on, and reaches 2
    (alert,) = hooks.received
    assert (alert["agent"], alert["kind"], alert["failures_in_a_row"]) == ("ticker", "failures", 2)
    assert "ticker failed 2 run(s) in a row" in alert["text"]
    assert hooks.paths == ["/hooks/T0123-secret-path"]
    assert _once(tmp_path) == 1  # 3 in a row: the streak was alerted already
    assert len(hooks.received) == 1

    with sqlite3.connect(tmp_path / "runs.db") as conn:
        alerts = conn.execute("SELECT kind, target, status, error FROM alerts").fetchall()
    assert sorted(alerts) == [
        ("failures", "command", "failed", "command exited 3: the pager is down"),
        ("failures", f"webhook {hooks.url}", "sent", None),
    ]
    assert b"secret-path" not in (tmp_path / "runs.db").read_bytes()

    engine.faults.error_rate = 0.0
    assert _once(tmp_path) == 0
    code, status = _status(tmp_path)
    (row,) = status["daemons"]
    assert code == 0
    assert (row["verdict"], row["consecutive_failures"], row["runs"]) == ("stopped", 0, 4)
    assert row["last_success_at"] is not None
    assert row["last_alert"].startswith("failures")


SCHEDULED = """\
agents:
  - name: minutely
    prompt: "ANSWER: report"
    life_cycle: {type: scheduled, cron: "* * * * *"}
"""


def test_the_watchdog_alerts_a_missed_fire_of_a_gone_daemon_once(
    tmp_path: Path, engine: LoopbackEngine, hooks: Hooks
) -> None:
    _setup(tmp_path, engine, hooks, SCHEDULED)
    assert _once(tmp_path) == 0
    code, status = _status(tmp_path, "--alert")
    assert code == 0 and status["alerts_sent"] == []
    (row,) = status["daemons"]
    assert row["verdict"] == "stopped" and row["next_fire_at"] > time.time() - 61
    # the process that should have fired it died six minutes ago: move its record back
    now = time.time()
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        conn.execute(
            "UPDATE agent_health SET next_fire_at = ?, updated_at = ?, heartbeat_at = ?",
            [now - 300, now - 360, now - 360],
        )
    code, status = _status(tmp_path, "--alert")
    assert code == 1
    assert status["daemons"][0]["verdict"] == "missed"
    (sent,) = status["alerts_sent"]
    assert sent["kind"] == "missed" and "its daemon's process is ended" in sent["message"]
    assert [a["kind"] for a in hooks.received] == ["missed"]
    code, status = _status(tmp_path, "--alert")  # once per missed fire
    assert code == 1 and status["alerts_sent"] == []
    assert len(hooks.received) == 1

    text = run_agentos("status", "--db", "runs.db", cwd=tmp_path)
    assert text.returncode == 1
    assert "minutely" in text.stdout and "missed" in text.stdout


def test_status_without_daemons_says_so(tmp_path: Path, engine: LoopbackEngine) -> None:
    (tmp_path / "agents.yaml").write_text("agents:\n  - name: once\n    prompt: 'ANSWER: x'\n")
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - {{type: openai, name: loop, base_url: {engine.url}/v1}}\n"
    )
    assert _once(tmp_path) == 0
    result = run_agentos("status", "--db", "runs.db", cwd=tmp_path)
    assert result.returncode == 0
    assert "no daemons yet" in result.stdout


def test_an_alert_needs_somewhere_to_go(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(PERPETUAL)
    (tmp_path / "config.yaml").write_text("alerts:\n  - failures: 2\n")
    result = run_agentos("validate", "agents.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "alerts[0]" in result.stderr.replace(" → ", ".").replace("alerts.0", "alerts[0]")
    assert "needs a 'command' or a 'webhook'" in result.stderr


def test_top_shows_a_failing_daemon_with_its_failures_in_a_row(
    tmp_path: Path, engine: LoopbackEngine, hooks: Hooks
) -> None:
    import os
    import signal
    import subprocess
    import sys

    _setup(tmp_path, engine, hooks, PERPETUAL.replace("every: 1m", "every: 0.3s"))
    engine.faults.error_rate, engine.faults.error_status = 1.0, 400
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home")}
    env.pop("AGENTOS_DB", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "agents.yaml", "--db", "runs.db"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from agentos.tui.data import StoreReader

        deadline = time.monotonic() + 60
        states: list[str] = []
        while time.monotonic() < deadline:
            if (tmp_path / "runs.db").exists():
                reader = StoreReader(tmp_path / "runs.db")
                try:
                    view = reader.read(time.time())
                finally:
                    reader.close()
                states = [p.state for p in view.processes if p.name == "ticker"]
                if states and states[0].startswith("failing") and int(states[0].split()[1]) >= 2:
                    break
            time.sleep(0.2)
        assert states and states[0].startswith("failing"), states
    finally:
        daemon.send_signal(signal.SIGINT)
        daemon.wait(30)
