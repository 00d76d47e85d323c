# ruff: noqa
"""What one read of the driver's database costs a run on the cluster, by read path.

Paths (``RecordDrain(reads=...)``):

- ``reader``: the StoreReader actor on the driver's node answers (the driver is a node);
- ``driver``: the driver itself answers through the ReadRelay (what a Ray client gets),
  forced on a local ``cluster_utils`` cluster;
- ``client``: the same, for real: a head from ``ray start --head --block`` with a Ray
  Client server, this process connected with ``ray.init("ray://…")``.

A task on the worker node (head node for ``client``, which has only one) holds a
RemoteStore and reads one agent_state row: READS reads one at a time (the latency a run
sees), then CONCURRENCY threads reading READS reads in all (what many runs at once cost
per read: one exchange of the driver carries several). Prints ms per read for both, and the
relay's largest batch. For scale: the same read on a local file is ~10 µs.

A probe for issue 15 (not product code; lint off on purpose). Run:
PYTHONPATH=. python benchmarks/ray_probe/read_paths.py cluster|client [READS] [CONCURRENCY]
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore
from agentos.store import Store, owners
from agentos.store.writer import Insert

MODE = sys.argv[1] if len(sys.argv) > 1 else "cluster"
READS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
CONCURRENCY = int(sys.argv[3]) if len(sys.argv) > 3 else 16


def reads(queue, db, owner, count, threads):
    store = RemoteStore(queue, db, owner)
    sql = "SELECT value FROM agent_state WHERE agent = ? AND key = ?"

    def one(_):
        return store.db.execute(sql, ["bench", "k"]).fetchone()

    assert one(0) == ("v",)  # warm: the reader's connection, the worker's actor handle
    start = time.perf_counter()
    for n in range(count):
        one(n)
    serial = (time.perf_counter() - start) / count
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(one, range(count)))
        parallel = (time.perf_counter() - start) / count
    return serial, parallel


def measure(path, reads_mode, where):
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "agentos.db")
        owner = owners.register(store)
        store.submit(
            Insert("agent_state", {"agent": "bench", "key": "k", "value": "v", "updated_at": 0})
        )
        store.flush()
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = RecordQueueActor.options(scheduling_strategy=here).remote()
        drain = RecordDrain(store, queue, reads=reads_mode).start()
        try:
            task = ray.remote(reads).options(num_cpus=0, **where)
            serial, parallel = ray.get(
                task.remote(queue, str(store.path), owner, READS, CONCURRENCY), timeout=600
            )
            stats = ray.get(drain.reader.stats.remote())
        finally:
            drain.stop()
            ray.kill(queue)
            store.close()
    print(
        f"{path:>7} (answered by {drain.reads_by}): {serial * 1000:.2f} ms per read one at a "
        f"time; {parallel * 1000:.2f} ms per read with {CONCURRENCY} threads; "
        f"largest batch {stats.get('largest_batch', '-')}"
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if MODE == "cluster":
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2, resources={"worker": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        measure("reader", "auto", {"resources": {"worker": 0.01}})
        measure("driver", "driver", {"resources": {"worker": 0.01}})
    finally:
        ray.shutdown()
        cluster.shutdown()
else:
    port = free_port()
    temp = Path(f"/tmp/agentos-rp-{os.getpid()}")
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
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--port=0",
            "--node-ip-address=127.0.0.1",
            f"--ray-client-server-port={port}",
            f"--temp-dir={temp}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--num-cpus=2",
            *ports,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        },
    )
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        ray.init(f"ray://127.0.0.1:{port}", log_to_driver=False)
        try:
            measure("client", "auto", {})
        finally:
            ray.shutdown()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        subprocess.run(["rm", "-rf", str(temp)])
