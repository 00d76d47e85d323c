"""A real ``agentos serve`` (a subprocess of this Python) in front of the loopback engine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from agentos.store import digests
from agentos.testing.engine import CostModel, LoopbackEngine

READY = re.compile(r"listening on (http://\S+) ")


@dataclass
class Served:
    """A running ``agentos serve``: its base URL, database, and everything it printed."""

    url: str
    db: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    """The loopback engine, answering at once (tests that need a cost set ``cost``)."""
    eng = LoopbackEngine(cost=CostModel(slots=8))
    with eng.run_in_thread():
        yield eng


def engine_config(engine: LoopbackEngine, **engine_keys: object) -> dict[str, object]:
    return {
        "type": "openai",
        "name": "loop",
        "base_url": engine.url + "/v1",
        "max_requests": 8,
        **engine_keys,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(config_dict, *args, env=...)`` starts ``agentos serve --port 0`` with that
    config.yaml in ``tmp_path`` and waits for its ready line; every server is stopped
    (SIGTERM, then SIGKILL) after the test."""
    started: list[Served] = []
    readers: list[threading.Thread] = []

    def start(
        config: dict[str, object],
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Served:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        db = tmp_path / "serve.db"
        full_env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
        full_env.pop("AGENTOS_DB", None)
        full_env.pop(digests.AUDIT_KEY_ENV, None)
        full_env.update(env or {})
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "agentos", "serve"),
                *("--config", str(cfg), "--db", str(db), "--port", "0", *args),
            ],
            cwd=tmp_path,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        found = threading.Event()
        url: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                match = READY.search(line)
                if match and not url:
                    url.append(match.group(1))
                    found.set()
            found.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        found.wait(timeout)
        if not url:
            proc.kill()
            proc.wait()
            reader.join(10)
            assert proc.stdout is not None
            proc.stdout.close()
            raise AssertionError("agentos serve did not start:\n" + "\n".join(lines))
        served = Served(url=url[0], db=db, process=proc, lines=lines)
        started.append(served)
        readers.append(reader)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.send_signal(signal.SIGTERM)
            try:
                served.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                served.process.kill()
                served.process.wait()
    for served, reader in zip(started, readers, strict=True):
        reader.join(10)
        assert served.process.stdout is not None
        served.process.stdout.close()
