"""Aging through ``agentos run`` (a real process): a user-priority agent keeps a slow
loopback engine saturated while a background perpetual agent ticks every second and the
embeddings process embeds every result; with ``router: {aging_s: 1}`` both background
processes are served within a few seconds, and ``top``'s view shows how long each
process's oldest queued job has waited.

The background agent asks at another temperature than the user agent, so its jobs sit in
another queue group and are never batched along with the user's: only aging can lift
them over the user's jobs, which always fill the engine's two slots.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentos.store import digests
from agentos.tui.data import StoreReader

AGENTS = """\
agents:
  - name: hog
    prompt: 'ANSWER: {"colour": "red"}'
    response_format: {colour: a colour}
    priority: user
    cache: false
    life_cycle: {type: single-shot, length: 1000000, concurrency: 64}
  - name: ticker
    prompt: 'ANSWER: {"fruit": "fig"}'
    response_format: {fruit: a fruit}
    priority: background
    temperature: 0.3
    cache: false
    life_cycle: {type: perpetual, every: 1s, length: 1, concurrency: 1}
"""

ENGINE_ARGS = ("--port", "0", "--slots", "2", "--per-request-ms", "300")
AGING_S = 1.0
LOAD_S = 14.0
BOUND_S = 4.0
"""Most a background run may take: its job rises above fresh user jobs after waiting
``AGING_S`` longer than the oldest of them (a request or two of 300 ms), then is sent."""


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_background_work_is_served_under_sustained_user_load(tmp_path: Path) -> None:
    # the engine in its own process, as a user runs it (and so that it does not share
    # this process's interpreter with the test's polling)
    engine = subprocess.Popen(
        [sys.executable, "-m", "agentos.testing.engine", *ENGINE_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert engine.stdout is not None
        url = engine.stdout.readline().strip().removeprefix("listening on ")
        assert url.startswith("http://"), url
        (tmp_path / "agents.yaml").write_text(AGENTS)
        (tmp_path / "config.yaml").write_text(
            "engines:\n"
            f"  - {{name: loop, type: openai, base_url: {url}/v1, max_requests: 2}}\n"
            f"router: {{aging_s: {AGING_S}}}\n"
        )
        env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
        env.pop("AGENTOS_DB", None)
        env.pop(digests.AUDIT_KEY_ENV, None)
        db = tmp_path / "runs.db"
        log = tmp_path / "run.log"  # a file: a pipe nobody reads fills up and blocks it
        log_file = log.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "agentos", "run", "--db", "runs.db"],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        waits: dict[str, float] = {}
        try:
            start = time.monotonic()
            reader: StoreReader | None = None
            while time.monotonic() - start < LOAD_S:
                time.sleep(0.25)
                if reader is None and db.exists():
                    reader = StoreReader(db)
                if reader is not None:
                    for row in reader.read(time.time()).processes:
                        waits[row.name] = max(waits.get(row.name, 0.0), row.wait_s)
            if reader is not None:
                reader.close()
            assert process.poll() is None, "the run goes on until interrupted"
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
            log_file.close()
            output = log.read_text()
    finally:
        engine.terminate()
        engine.communicate(timeout=15)

    hog_calls = query(
        db, "SELECT started_at, finished_at FROM llm_calls WHERE process = 'hog' ORDER BY 1"
    )
    last_hog = hog_calls[-1][0]
    span = last_hog - hog_calls[0][0]
    assert len(hog_calls) >= 2 * span / 0.3 * 0.8, "the user agent kept both slots busy"
    ticker_runs = query(
        db,
        "SELECT status, finished_at - started_at, finished_at FROM runs "
        "WHERE agent = 'ticker' AND status != 'cancelled' ORDER BY started_at",
    )
    assert len(ticker_runs) >= 4, f"background runs: {ticker_runs}\n{output[-3000:]}"
    assert all(status == "succeeded" for status, _, _ in ticker_runs), ticker_runs
    took = [round(s, 2) for _, s, _ in ticker_runs]
    assert max(took) < BOUND_S, f"background runs took {took} s"
    last_hog_answer = max(finished for _, finished in hog_calls)
    assert all(finished <= last_hog_answer for _, _, finished in ticker_runs), (
        "every background run was served while the user agent still had jobs going"
    )
    hog_status = query(db, "SELECT status FROM runs WHERE agent = 'hog'")
    assert hog_status == [("cancelled",)], "the user agent never ran out of work"

    # the embeddings process (background priority) embedded results all along
    embedded = [
        t
        for (t,) in query(
            db,
            "SELECT started_at FROM llm_calls WHERE process LIKE '%embeddings%' "
            "AND started_at < ? ORDER BY 1",
            last_hog,
        )
    ]
    assert embedded, "the embeddings process was served under load"
    gaps = [b - a for a, b in zip([hog_calls[0][0], *embedded], embedded, strict=False)]
    assert max(gaps) < BOUND_S, f"the embeddings process waited {max(gaps):.1f} s for a call"

    # top showed how long each process's oldest queued job waited
    assert waits.get("hog", 0.0) > 0, waits
    assert 0 < waits.get("ticker", 0.0) < BOUND_S, waits
