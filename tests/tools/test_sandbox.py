"""Sync user tools run in a worker process that is killed at the tool's timeout: nothing of
a timed-out call goes on running, and ``agentos run`` exits at once."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.spec.config import ToolsConfig
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from agentos.tools.registry import ToolContext, ToolRegistry

SLEEPER = """
    import os, pathlib, time

    def nap(seconds: float, pid_file: str) -> str:
        pathlib.Path(pid_file).write_text(str(os.getpid()))
        time.sleep(seconds)
        return "rested"

    nap.tool_timeout = 1
    """


def user_module(folder: Path, source: str) -> str:
    name = f"tools_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child not yet reaped is a zombie: not running
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


async def test_a_call_past_its_timeout_is_killed(tmp_path: Path) -> None:
    module = user_module(tmp_path, SLEEPER)
    pid_file = tmp_path / "pid"
    with Store(tmp_path / "t.db") as store:
        registry = ToolRegistry(ToolsConfig(), store=store, base_dir=tmp_path)
        [nap] = registry.resolve([f"{module}:nap"], agent="a")
        context = ToolContext(config=registry.config, store=store, agent="a", run_id=None)

        began = time.monotonic()
        result = await registry.call(
            nap, {"seconds": 60, "pid_file": str(pid_file)}, context=context, step=1
        )
        took = time.monotonic() - began
        again = await registry.call(
            nap, {"seconds": 0, "pid_file": str(pid_file)}, context=context, step=2
        )

    assert (result.error, result.error_class) == ("nap took longer than 1s", "TimeoutError")
    assert took < 5
    assert again.output == "rested"  # a fresh worker took the next call
    assert int(pid_file.read_text()) != os.getpid()  # it ran in a worker process


async def test_the_timed_out_worker_is_gone(tmp_path: Path) -> None:
    module = user_module(tmp_path, SLEEPER)
    pid_file = tmp_path / "pid"
    registry = ToolRegistry(ToolsConfig(), store=None, base_dir=tmp_path)
    [nap] = registry.resolve([f"{module}:nap"], agent="a")
    context = ToolContext(config=registry.config, store=None, agent="a", run_id=None)

    result = await registry.call(
        nap, {"seconds": 60, "pid_file": str(pid_file)}, context=context, step=1
    )

    assert result.error_class == "TimeoutError"
    pid = int(pid_file.read_text())
    assert wait_until(lambda: not alive(pid), 5), f"worker {pid} still running"


async def test_what_a_worker_gives_back(tmp_path: Path) -> None:
    module = user_module(
        tmp_path,
        """
        import os, sys
        from agentos.tools.registry import ToolError

        COUNT = []

        def count() -> int:
            COUNT.append(1)
            return len(COUNT)

        def odd(kind: str) -> object:
            if kind == "refuse":
                raise ToolError("not today", transient=True)
            if kind == "raise":
                raise KeyError("missing")
            if kind == "exit":
                sys.exit(3)
            if kind == "die":
                os._exit(9)
            return {1, 2}  # no JSON: recorded as text
        """,
    )
    registry = ToolRegistry(ToolsConfig(), store=None, base_dir=tmp_path)
    count, odd = registry.resolve([f"{module}:count", f"{module}:odd"], agent="a")
    context = ToolContext(config=registry.config, store=None, agent="a", run_id=None)

    async def call(tool: object, **arguments: object) -> tuple[object, ...]:
        result = await registry.call(tool, arguments, context=context, step=1)  # type: ignore[arg-type]
        return result.output, result.error, result.error_class, result.transient

    assert [(await call(count))[0] for _ in range(3)] == [1, 2, 3]  # one worker, kept
    assert await call(odd, kind="refuse") == (None, "not today", "ToolError", True)
    assert await call(odd, kind="raise") == (None, "KeyError: 'missing'", "KeyError", False)
    assert await call(odd, kind="exit") == (None, "SystemExit: 3", "SystemExit", False)
    assert await call(odd, kind="die") == (
        None,
        "WorkerExit: the tool's worker process ended (exit code 9)",
        "WorkerExit",
        False,
    )
    assert await call(odd, kind="set") == ("{1, 2}", None, None, False)
    assert (await call(count))[0] == 1  # the worker that died took its state with it


async def test_a_call_to_a_warm_worker_is_cheap(tmp_path: Path) -> None:
    module = user_module(tmp_path, "def echo(text: str) -> str:\n    return text\n")
    registry = ToolRegistry(ToolsConfig(), store=None, base_dir=tmp_path)
    [echo] = registry.resolve([f"{module}:echo"], agent="a")
    context = ToolContext(config=registry.config, store=None, agent="a", run_id=None)
    await registry.call(echo, {"text": "warm up"}, context=context, step=0)

    calls = 50
    began = time.monotonic()
    for step in range(calls):
        result = await registry.call(echo, {"text": "x"}, context=context, step=step)
        assert result.output == "x"
    per_call = (time.monotonic() - began) / calls

    print(f"sync user tool call through a worker process: {per_call * 1000:.2f} ms")
    assert per_call < 0.05


# -- from the CLI ---------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def test_agentos_run_exits_at_the_tool_timeout_and_records_it(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    module = user_module(tmp_path, SLEEPER)
    pid_file = tmp_path / "pid"
    step = {"tool": "nap", "seconds": 30, "pid_file": str(pid_file)}
    (tmp_path / "agents.yaml").write_text(
        textwrap.dedent(
            f"""\
            agents:
              - name: napper
                kind: planner
                prompt: 'Rest. ANSWER: {json.dumps({"steps": [step]})}'
                tools: ["{module}:nap"]
                temperature: 0
                cache: false
                max_replans: 0
            """
        )
    )
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - type: openai\n    name: loop\n    base_url: {engine.url}\n"
        "embeddings:\n  enabled: false\n"
    )
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home")}
    env.pop("AGENTOS_DB", None)

    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "agentos", "run", "agents.yaml", "--db", "t.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=25,  # the tool sleeps 30 s: only a killed call lets the run end before
    )
    took = time.monotonic() - began

    assert done.returncode == 1, done.stderr
    assert "nap took longer than 1s" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert took < 20
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        [(error,)] = conn.execute("select error from tool_calls where tool = 'nap'").fetchall()
    finally:
        conn.close()
    assert error == "nap took longer than 1s"
    pid = int(pid_file.read_text())
    assert wait_until(lambda: not alive(pid), 5), f"worker {pid} outlived the run"


async def test_concurrent_calls_are_not_timed_on_worker_start_ups(tmp_path: Path) -> None:
    """Eight calls at once with a timeout shorter than eight workers' start-ups: each call's
    worker is started before its timeout begins."""
    module = user_module(
        tmp_path,
        """
        def quick(n: int) -> int:
            return n * 2

        quick.tool_timeout = 0.5
        """,
    )
    registry = ToolRegistry(ToolsConfig(), store=None, base_dir=tmp_path)
    [quick] = registry.resolve([f"{module}:quick"], agent="a")
    context = ToolContext(config=registry.config, store=None, agent="a", run_id=None)

    await registry.call(quick, {"n": 0}, context=context, step=0)  # one worker left idle

    results = await asyncio.gather(
        *(registry.call(quick, {"n": n}, context=context, step=n) for n in range(8))
    )

    assert [(r.output, r.error) for r in results] == [(n * 2, None) for n in range(8)]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_runtime_killed_with_sigkill_takes_its_busy_worker_along(tmp_path: Path) -> None:
    module = user_module(
        tmp_path, SLEEPER.replace("nap.tool_timeout = 1", "nap.tool_timeout = 100")
    )
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from agentos.spec.config import ToolsConfig
        from agentos.tools.registry import ToolContext, ToolRegistry

        async def main() -> None:
            registry = ToolRegistry(ToolsConfig(), store=None, base_dir=Path({str(tmp_path)!r}))
            [nap] = registry.resolve(["{module}:nap"], agent="a")
            context = ToolContext(config=registry.config, store=None, agent="a", run_id=None)
            arguments = {{"seconds": 60, "pid_file": {str(pid_file)!r}}}
            await registry.call(nap, arguments, context=context, step=1)

        asyncio.run(main())
        """
    )
    runtime = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20)
        worker = int(pid_file.read_text())
        assert alive(worker)
    finally:
        runtime.kill()
        runtime.wait(10)

    assert wait_until(lambda: not alive(worker), 5), f"worker {worker} outlived its runtime"
