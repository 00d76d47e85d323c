"""A local engine's server starts on the first request that needs it, not with every run.

The "local model" is a fake ``llama-server`` on PATH that records that it was started and
runs the loopback test engine; the runs are ``run_agents`` as the CLI calls it, on a real
SQLite file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from agentos.scheduler.clock import ManualClock
from agentos.scheduler.display import PlainDisplay, RunOutcome
from agentos.scheduler.runner import run_agents
from agentos.spec import load_agents, load_config
from tests.router.test_local_server import REPO_ROOT, write_fake_llama_server

AGENTS = """\
agents:
  - name: fruit
    model: fake
    prompt: "ANSWER: a fruit"
    temperature: 0.7
    life_cycle: {type: single-shot, length: 2, concurrency: 1}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_fake_llama_server(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "started.json"))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT))
    (tmp_path / "model.gguf").write_bytes(b"not a real model; the fake server ignores it")
    (tmp_path / "config.yaml").write_text(
        "engines:\n  - type: local\n    name: local\n    model_name: fake\n"
        f"    model_path: {tmp_path / 'model.gguf'}\n    server: llama-server\n"
        "    batch_chat: false\n    embeddings: false\n    startup_timeout: 30\n"
        "embeddings:\n  enabled: false\n"
    )
    (tmp_path / "agents.yaml").write_text(AGENTS)
    return tmp_path


async def run_once(folder: Path) -> tuple[list[RunOutcome], str]:
    agents = load_agents(folder / "agents.yaml")
    output = io.StringIO()
    outcomes = await run_agents(
        agents.agents,
        config=load_config(folder / "config.yaml"),
        db_path=folder / "runs.db",
        display=PlainDisplay(output),
        agents_file=str(agents.path),
        all_agents=agents,
        clock=ManualClock(),
    )
    return outcomes, output.getvalue()


async def test_a_rerun_served_from_the_cache_starts_no_local_server(folder: Path) -> None:
    started = folder / "started.json"
    outcomes, output = await run_once(folder)
    assert [o.status for o in outcomes] == ["succeeded"]
    assert started.exists(), "the first run needs the local engine"
    assert "engine local (local): fake (starts when a request needs it)" in output
    started.unlink()
    outcomes, output = await run_once(folder)
    assert [(o.status, o.cache_hits) for o in outcomes] == [("succeeded", 2)]
    assert not started.exists(), "a run answered from the cache started the local server"


async def test_a_local_server_that_cannot_start_fails_the_run_with_its_reason(
    folder: Path,
) -> None:
    (folder / "llama-server").write_text("#!/bin/sh\necho 'cannot load the model' >&2\nexit 3\n")
    outcomes, _ = await run_once(folder)
    assert [o.status for o in outcomes] == ["failed"]
    (outcome,) = outcomes
    assert outcome.error is not None and "local engine 'local'" in outcome.error
    assert outcome.attempts == 1, "a server that cannot start is not tried again and again"
