"""``--cluster`` at the edges, no cluster needed: Ray is never imported unless a cluster
is asked for, and every way of asking wrongly is a clear error (exit 2, no traceback)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import start_engine, stop_engine

PROBE = textwrap.dedent(
    """
    import runpy, sys
    {block}
    sys.argv = ["agentos", *sys.argv[1:]]
    try:
        runpy.run_module("agentos", run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    print("ray imported" if sys.modules.get("ray") else "ray not imported", file=sys.stderr)
    sys.exit(code)
    """
)


def agentos(*args: str, cwd: Path, block_ray: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m agentos ARGS``, saying on its last stderr line whether ray was
    imported; with ``block_ray``, as where ray is not installed."""
    block = "sys.modules['ray'] = None" if block_ray else ""
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(block=block), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "AGENTOS_HOME": str(cwd / "home"),
             **_python_path()},
    )  # fmt: skip


def said(stderr: str) -> str:
    """The error panel's text on one line (the panel wraps it at its width)."""
    return " ".join(stderr.replace("│", " ").split())


def _python_path() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "VIRTUAL_ENV", "HOME")}


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Path]:
    engine, url = start_engine()
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: asker\n    prompt: 'Say hi. ANSWER: hi'\n"
    )
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - {{name: loop, type: openai, base_url: '{url}'}}\n"
        "embeddings: {enabled: false}\n"
    )
    try:
        yield tmp_path
    finally:
        stop_engine(engine)


def test_help_and_a_run_without_a_cluster_never_import_ray(files: Path) -> None:
    shown = agentos("--help", cwd=files)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.splitlines()[-1] == "ray not imported"
    ran = agentos("run", "agents.yaml", "--db", "a.db", cwd=files)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout
    assert ran.stderr.splitlines()[-1] == "ray not imported"


def test_without_ray_installed_the_error_says_how_to_install_it(files: Path) -> None:
    ran = agentos("run", "agents.yaml", "--db", "a.db", "--cluster", "auto", cwd=files,
                  block_ray=True)  # fmt: skip
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "pip install 'agentos[ray]'" in said(ran.stderr)
    assert "Traceback" not in ran.stderr
    assert not (files / "a.db").exists()


def test_an_address_nothing_answers_on_is_named_in_the_error(files: Path) -> None:
    pytest.importorskip("ray")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{free.getsockname()[1]}"
    ran = agentos("run", "agents.yaml", "--db", "a.db", "--cluster", address, cwd=files)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"no Ray cluster answers at {address}" in said(ran.stderr)
    assert "Traceback" not in ran.stderr
    assert not (files / "a.db").exists()


@pytest.mark.parametrize("address", ["nonsense", "host:port", "ray://:10001", "h:70000"])
def test_a_malformed_address_is_refused_before_anything_starts(files: Path, address: str) -> None:
    ran = agentos("run", "agents.yaml", "--cluster", address, cwd=files)
    assert ran.returncode == 2
    assert f"--cluster '{address}': should be auto, ray://HOST:PORT or HOST:PORT" in said(
        ran.stderr
    )
    assert ran.stderr.splitlines()[-1] == "ray not imported"


def test_cluster_settings_in_config_yaml_are_checked_where_they_are_written(
    files: Path,
) -> None:
    config = files / "config.yaml"
    config.write_text(config.read_text() + "cluster: {address: 'h:1', max_node_retries: -1}\n")
    ran = agentos("run", "agents.yaml", cwd=files)
    assert ran.returncode == 2
    assert "max_node_retries" in said(ran.stderr) and "config.yaml" in said(ran.stderr)
