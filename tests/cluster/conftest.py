"""A local two-node Ray cluster for the module, and a loopback engine, for the tests that
run ``agentos run --cluster`` as a user does (a CLI subprocess, a real SQLite file).

The cluster (``ray.cluster_utils.Cluster``: a head and a worker node, 2 CPUs each, health
checks fast enough that a dead node is found in ~2 s) costs ~10 s and ~1 GiB: started
once per module, shut down after it (never ``ray stop``, which would stop every Ray
process of the user on the machine).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

HEALTH_CHECK = {
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
"""A dead node is found in ~2 s instead of Ray's default ~15 s (3 s x 5 checks)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "_system_config": HEALTH_CHECK},
    )
    try:
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def start_engine(*args: str) -> tuple[subprocess.Popen[str], str]:
    """A loopback engine (``agentos.testing.engine``) in a subprocess; it and its URL."""
    engine = subprocess.Popen(
        [sys.executable, "-m", "agentos.testing.engine", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert engine.stdout is not None
    line = engine.stdout.readline()
    assert line.startswith("listening on "), line
    return engine, line.split()[-1]


def stop_engine(engine: subprocess.Popen[str]) -> None:
    engine.terminate()
    engine.wait(10)
    assert engine.stdout is not None
    engine.stdout.close()


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    engine, url = start_engine()
    try:
        yield url
    finally:
        stop_engine(engine)
