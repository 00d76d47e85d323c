"""A driver outside its cluster: Ray Client (``ray://HOST:PORT``), for real (issue 15).

A head node started the way a user starts one (``ray start --head --block`` with a Ray
Client server port; its own temp dir, its own ports, loopback only), and this test
process as the driver, connected with ``ray.init("ray://127.0.0.1:PORT")``: a Ray
client, no node of the cluster, so every actor and task runs on the head and the
driver's reads must be answered by the driver itself (``agentos.cluster.driver_reads``).
On this one machine the head could open the driver's file; the drain takes the client
mode itself as the sign (a client is never a node), and the tests check that nothing on
the cluster opened the file.

The head is stopped by ending the process group this module started (never
``ray stop``, which would end every Ray process of the user, other clusters included).
Selected with ``-m cluster``; skipped where Ray is not installed (``agentos[ray]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from agentos.cluster.driver_reads import client_mode  # noqa: E402
from agentos.cluster.reads import ask  # noqa: E402
from agentos.cluster.records import RecordDrain, RecordQueueActor  # noqa: E402
from agentos.errors import StoreError  # noqa: E402
from agentos.spec.agents import load_agents  # noqa: E402
from agentos.spec.config import Config  # noqa: E402
from agentos.store import Store, owners, queries  # noqa: E402
from tests.cluster import read_checks  # noqa: E402
from tests.cluster.executing import Executing  # noqa: E402
from tests.cluster.read_checks import check_reads, reads_on_worker, seed  # noqa: E402

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_head(temp_dir: Path, client_port: int) -> subprocess.Popen[bytes]:
    """``ray start --head --block`` in a process group of its own, every port chosen here
    (another cluster on this machine may hold Ray's defaults), token auth off (the head
    listens on loopback only, and the client would need the token otherwise)."""
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--port=0",
            "--node-ip-address=127.0.0.1",
            f"--ray-client-server-port={client_port}",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--num-cpus=2",
            *ports,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def stop_head(head: subprocess.Popen[bytes]) -> None:
    """End the head's process group (the ``ray start`` process and what it started)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(20)
        os.killpg(head.pid, signal.SIGKILL)  # a child that outlived the graceful stop
    except ProcessLookupError:
        pass
    head.wait(10)


@pytest.fixture(scope="module")
def client_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Ray's socket paths must stay under 107 bytes: a short temp dir of our own
    temp_dir = Path(f"/tmp/agentos-rc-{os.getpid()}")
    port = free_port()
    head = start_head(temp_dir, port)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert head.poll() is None, "ray start --head exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray Client server never listened"
                time.sleep(0.3)
        address = f"ray://127.0.0.1:{port}"
        try:
            ray.init(address, log_to_driver=False)
        except Exception as exc:  # the head's logs say why, and go with the temp dir
            logs = sorted((temp_dir / "session_latest" / "logs").glob("ray_client_server*.err"))
            tails = {p.name: p.read_text()[-1500:] for p in logs}
            raise AssertionError(f"ray.init({address!r}) failed: {exc!r}; {tails}") from exc
        ray.cloudpickle.register_pickle_by_value(read_checks)
        try:
            yield address
        finally:
            ray.shutdown()
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_ray_client_driver_answers_the_reads_of_runs_and_writes_their_records(
    client_address: str, tmp_path: Path
) -> None:
    assert client_mode()
    store = Store(tmp_path / "agentos.db")
    owner = owners.register(store)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = RecordQueueActor.options(scheduling_strategy=here).remote()
    drain = RecordDrain(store, queue).start()  # reads="auto": a client is never a node
    try:
        assert drain.reads_by == "driver"
        spec, seeded, expected_hits = seed(store, tmp_path)
        task = ray.remote(reads_on_worker).options(num_cpus=0)
        out = ray.get(task.remote(queue, str(store.path), owner, spec, seeded), timeout=120)
        check_reads(out, store, tmp_path, expected_hits)
        relayed = ray.get(drain.reader.stats.remote())
        assert drain.driver_reads is not None
        assert relayed["reads"] >= 10 and drain.driver_reads.answered == relayed["reads"]
        reader = drain.reader
    finally:
        drain.stop()
        ray.kill(queue)
        store.close()
    # a read once the driver stopped answering fails at once (the relay is gone)
    with pytest.raises(StoreError, match="the driver's store reader is gone"):
        ask(reader.execute.remote("SELECT 1"), "reading after the stop")


AGENTS = """
agents:
  - name: asker
    prompt: "Say hello to {{ who }}. ANSWER: hello"
    vars: {who: nobody}
"""


def agentos_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentos", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_runs_of_a_ray_client_driver_land_whole_in_its_database(
    client_address: str, tmp_path: Path
) -> None:
    """Prompt runs on the cluster, their model calls through the router actor (whose
    response cache reads the driver's database through the relay too)."""
    engine = subprocess.Popen(
        [sys.executable, "-m", "agentos.testing.engine", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert engine.stdout is not None
    url = engine.stdout.readline().split()[-1]
    config = Config.model_validate(
        {"engines": [{"name": "loop", "type": "openai", "base_url": url}], "cache": {}}
    )
    (tmp_path / "agents.yaml").write_text(AGENTS)
    agents = load_agents(tmp_path / "agents.yaml")
    db = tmp_path / "agentos.db"
    try:
        with Store(db) as store, Executing(store, config, agents) as ex:
            drain = ex.executor.drain
            assert drain is not None and drain.reads_by == "driver"
            first = ex.run([(agents["asker"], {"who": f"w{i}"}) for i in range(3)])
            again = ex.run([(agents["asker"], {"who": "w0"})], timeout_s=60)[0]
            stats = ex.router_stats()
            answered = drain.driver_reads.answered if drain.driver_reads else 0
            log = ex.log.getvalue()
    finally:
        engine.terminate()
        engine.wait(10)
        engine.stdout.close()

    outcomes = [(d.status, d.error) for d in [*first, again]]
    assert [o[0] for o in outcomes] == ["succeeded"] * 4, (outcomes, log)
    assert stats["jobs_done"] == 4 and stats["cache_hits"] == 1, stats
    # the runs read nothing (the driver created their rows); the router actor's response
    # cache did, through the relay: its Bloom filter, and the repeat's entry
    assert answered >= 2, answered
    with Store(db, readonly=True) as store:
        for done in [*first, again]:
            run = queries.get_run(store, done.run_id)
            assert run is not None and run["status"] == "succeeded"
            assert run["pid"] == os.getpid()  # the client driver owns every run
            types = [e["type"] for e in queries.run_events(store, done.run_id)]
            assert types[0] == "run_started" and types[-1] == "run_finished", types
            assert queries.run_results(store, done.run_id)[0]["data"] == "hello"
        calls = store.db.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        assert calls == 4
    listing = agentos_cli("runs", "--db", str(db), "--json")
    assert listing.returncode == 0, listing.stderr
    assert len(json.loads(listing.stdout)) == 4
    audit = agentos_cli("audit", "--db", str(db))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "4 runs audited: 4 verified" in audit.stdout
