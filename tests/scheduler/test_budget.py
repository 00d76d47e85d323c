"""Budgets: a perpetual agent on the loopback engine spends its tokens and is paused within
one ``agentos run`` (a real process), with the reason in ``runs``, the run's timeline and
``top``'s view, which also shows the cost; and a new local day lets it go again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentos.scheduler.budget import BudgetGuard
from agentos.spec.agents import Budget
from agentos.store import Store, digests, record_llm_call
from agentos.testing.engine import LoopbackEngine
from agentos.tui.data import StoreReader
from agentos.usage.pricing import Pricing
from agentos.usage.report import next_day_start
from tests.cli_process import run_agentos
from tests.test_cli import write_config

AGENTS = """\
agents:
  - name: ticker
    prompt: "Name a colour."
    response_format: {colour: a colour}
    life_cycle: {type: perpetual, every: 0.2s, length: 3, concurrency: 1}
    budget: {tokens_per_day: 50}
"""
PRICING = """\
pricing:
  models:
    test-model: {input: 2.0, output: 10.0}
embeddings:
  enabled: false
"""


def start_run(folder: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENTOS_HOME": str(folder / "home"), "COLUMNS": "200"}
    env.pop("AGENTOS_DB", None)
    env.pop(digests.AUDIT_KEY_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "agentos", "run", "--db", "runs.db"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout}s")


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def events_of(db: Path, type_: str) -> list[tuple[Any, ...]]:
    """The events of ``type_`` so far (none while the database is still being made)."""
    try:
        return query(db, f"SELECT time FROM events WHERE type = '{type_}'")
    except sqlite3.OperationalError:
        return []


def test_a_perpetual_agent_is_paused_when_its_budget_is_spent(tmp_path: Path) -> None:
    with LoopbackEngine().run_in_thread() as engine:
        (tmp_path / "agents.yaml").write_text(AGENTS)
        config = write_config(tmp_path, engine.url, structured_output=True)
        config.write_text(config.read_text() + PRICING)
        db = tmp_path / "runs.db"
        process = start_run(tmp_path)
        try:
            spent = wait_for(lambda: events_of(db, "budget_spent"), 30, "budget_spent event")
            # ticks keep coming every 0.2 s; none starts a run while the agent is paused
            time.sleep(1.5)
            runs = query(db, "SELECT status, successes, wanted, error FROM runs")
            reader = StoreReader(db)
            try:

                def costed() -> Any:
                    view = reader.read(time.time())
                    rows = [p for p in view.processes if p.name == "ticker"]
                    ready = view.totals is not None and view.totals.cost_today not in ("-", "")
                    return (view, rows[0]) if rows and ready and rows[0].cost != "0" else None

                view, ticker = wait_for(costed, 15, "cost in top's view")
            finally:
                reader.close()
            assert process.poll() is None, "the daemon goes on with the agent paused"
        finally:
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
    assert len(spent) == 1
    assert len(runs) == 1, f"no run started after the budget was spent: {runs}"
    ((status, successes, wanted, error),) = runs
    # 2 answers of ~30 tokens spend 50: the attempt in flight finished, the third never began
    assert (status, wanted) == ("cancelled", 3) and successes < 3
    assert error.startswith("budget spent: ") and "of 50 tokens on" in error
    assert "(budget.tokens_per_day); paused until" in error and "00:00 local time" in error
    assert error in output and output.count("budget spent") == 2  # said, and the run's end

    tokens, prompt, completion = query(
        db,
        "SELECT sum(prompt_tokens + completion_tokens), sum(prompt_tokens), "
        "sum(completion_tokens) FROM llm_calls",
    )[0]
    assert tokens >= 50 and f"budget spent: {tokens} of 50 tokens" in error
    cost = (Decimal(prompt) * 2 + Decimal(completion) * 10) / 1_000_000
    shown = f"{cost.quantize(Decimal('0.000001')):f}"
    assert ticker.state == "paused (budget)" and ticker.cost == shown
    assert view.totals is not None and view.totals.cost_today == f"{shown} USD"

    usage = run_agentos("usage", "--db", "runs.db", "--json", cwd=tmp_path)
    assert json.loads(usage.stdout)["total"]["cost"] == shown
    listed = run_agentos("runs", "--db", "runs.db", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["error"] == error


def test_the_budget_counts_today_only_and_a_new_day_renews_it(tmp_path: Path) -> None:
    now = time.time()
    midnight = next_day_start(now)
    with Store(tmp_path / "b.db") as store:
        for started, tokens in ((now - 86_400 * 2, 900), (now - 1, 60), (now - 2, 30)):
            record_llm_call(
                store,
                process="ticker",
                engine="loop",
                model="m",
                status="ok",
                started_at=started,
                finished_at=started + 0.5,
                prompt_tokens=tokens,
                completion_tokens=0,
                cache_hit=False,
            )
        store.flush()
        clock = [now]
        guard = BudgetGuard(
            "ticker",
            Budget(tokens_per_day=80),
            store,
            Pricing(models={"m": (Decimal("10"), Decimal("10"))}),
            clock=lambda: clock[0],
        )

        async def check() -> tuple[str | None, int, Decimal, str | None, int]:
            first = await guard.allows_run()
            counted = guard.tokens, guard.cost
            clock[0] = midnight + 1
            return first, *counted, await guard.allows_run(), guard.tokens

        before, tokens, cost, after, tokens_after = asyncio.run(check())
    # today: 60 + 30 tokens (the 900 were two days ago), 90 x 10 per million
    assert (tokens, cost) == (90, Decimal("0.0009"))
    assert before is not None and before.startswith("budget spent: 90 of 80 tokens on ")
    assert after is None and tokens_after == 0, "a new local day starts at zero"
    assert guard.day_ends > midnight
    guard.budget = Budget(cost_per_day=Decimal("0.001"))
    guard.cost = Decimal("0.0011")
    reason = guard.exhausted()
    assert reason is not None and "0.001100 of 0.001 USD" in reason


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        ("{}", "a budget needs tokens_per_day or cost_per_day"),
        ("{tokens_per_day: 0}", "tokens_per_day"),
        ("{cost_per_day: -1}", "cost_per_day"),
        ("{dollars: 3}", "dollars"),
    ],
)
def test_a_bad_budget_is_named(tmp_path: Path, budget: str, needle: str) -> None:
    (tmp_path / "agents.yaml").write_text(
        f"agents:\n  - name: a\n    prompt: hi\n    budget: {budget}\n"
    )
    done = run_agentos("validate", "agents.yaml", cwd=tmp_path)
    assert done.returncode == 2 and needle in done.stderr and "budget" in done.stderr


def test_a_single_shot_agent_over_its_budget_does_not_run_and_exits_1(tmp_path: Path) -> None:
    with LoopbackEngine().run_in_thread() as engine:
        (tmp_path / "agents.yaml").write_text(
            "agents:\n  - name: once\n    prompt: Name a fruit.\n"
            "    response_format: {fruit: a fruit}\n    cache: false\n"
            "    life_cycle: {type: single-shot, length: 2, concurrency: 1}\n"
            "    budget: {tokens_per_day: 40}\n"
        )
        config = write_config(tmp_path, engine.url, structured_output=True)
        config.write_text(config.read_text() + PRICING)
        first = run_agentos("run", "--db", "runs.db", cwd=tmp_path)
        second = run_agentos("run", "--db", "runs.db", cwd=tmp_path)
    # the second answer spends it while in flight: it finishes, and the run reaches its target
    assert first.returncode == 0, first.stdout + first.stderr
    assert "budget spent: " in first.stdout and "succeeded: once 2/2" in first.stdout
    assert second.returncode == 1, second.stdout + second.stderr
    assert "once: budget spent: " in second.stdout and "started: once" not in second.stdout
    assert len(query(tmp_path / "runs.db", "SELECT id FROM runs")) == 1
