# ruff: noqa
"""The floor of the cluster path's Ray calls, one by one vs coalesced (issue 15, bench).

A probe kept as it was run (not product code; lint off on purpose):
    PYTHONPATH=. python benchmarks/ray_probe/coalesce.py [N]

A two-node ``ray.cluster_utils.Cluster`` (1 CPU each, own temp dir). An async "router"
actor on the head (answers after ``asyncio.sleep(0)``, as a router answers a job), an
async "host" actor on the other node (the RunHost stand-in). The host sends N requests
to the router (a) as N actor calls made at once, (b) coalesced: every request made in one
event-loop tick goes in one call (a list), answered as a list. Also the driver → host
dispatch: N calls vs N/256 batched calls. Per-item cost = wall / N, and the CPU of every
process of the cluster (from /proc) / N.
"""

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    total = 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # every process of this session's cluster descends from this process
        pid, ppid = int(p.name), int(stat[1])
        chain = pid
        ok = False
        for _ in range(8):
            if chain == root:
                ok = True
                break
            try:
                chain = int(
                    (Path("/proc") / str(chain) / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                break
        if ok:
            total += (int(stat[11]) + int(stat[12])) / TICKS
    return total


class Router:
    async def submit(self, x):
        await asyncio.sleep(0)
        return x

    async def submit_many(self, xs):
        await asyncio.sleep(0)
        return xs


class Host:
    def __init__(self, router):
        self.router = router
        self.pending = []
        self.flusher = None

    async def one_by_one(self, n):
        t = time.perf_counter()
        await asyncio.gather(*(self.router.submit.remote(i) for i in range(n)))
        return time.perf_counter() - t

    async def _submit(self, x):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((x, fut))
        if self.flusher is None:
            self.flusher = loop.call_soon(self._flush)
        return await fut

    def _flush(self):
        self.flusher = None
        batch, self.pending = self.pending, []
        ref = self.router.submit_many.remote([x for x, _ in batch])

        async def deliver():
            answers = await ref
            for (_, fut), a in zip(batch, answers):
                fut.set_result(a)

        asyncio.ensure_future(deliver())

    async def coalesced(self, n, concurrency):
        sem = asyncio.Semaphore(concurrency)

        async def one(i):
            async with sem:
                return await self._submit(i)

        t = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t

    async def run(self, x):
        return x

    async def run_many(self, xs):
        return xs


def main():
    tmp = tempfile.mkdtemp(prefix="rbp", dir="/tmp")
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"head": 1}, "temp_dir": tmp},
    )
    c.add_node(num_cpus=1, resources={"worker": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        head = ray.get_runtime_context().get_node_id()
        other = [n["NodeID"] for n in ray.nodes() if n["NodeID"] != head][0]
        router = (
            ray.remote(num_cpus=0)(Router)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
            .remote()
        )
        host = (
            ray.remote(num_cpus=0)(Host)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False))
            .remote(router)
        )
        ray.get(host.one_by_one.remote(100))
        ray.get(host.coalesced.remote(100, 256))
        me = os.getpid()
        for label, call in [
            ("host->router, N calls, all at once", lambda: host.one_by_one.remote(N)),
            (
                "host->router, coalesced per tick (256 in flight)",
                lambda: host.coalesced.remote(N, 256),
            ),
        ]:
            c0 = tree_cpu(me)
            t = time.perf_counter()
            inner = ray.get(call())
            wall = time.perf_counter() - t
            cpu = tree_cpu(me) - c0
            print(
                f"{label:55s} {wall / N * 1000:7.3f} ms/item wall, {cpu / N * 1000:7.3f} ms/item CPU (all processes)"
            )
        c0 = tree_cpu(me)
        t = time.perf_counter()
        ray.get([host.run.remote(i) for i in range(N)])
        wall = time.perf_counter() - t
        cpu = tree_cpu(me) - c0
        print(
            f"{'driver->host, N calls pipelined':55s} {wall / N * 1000:7.3f} ms/item wall, {cpu / N * 1000:7.3f} ms/item CPU"
        )
        c0 = tree_cpu(me)
        t = time.perf_counter()
        ray.get([host.run_many.remote(list(range(i, i + 256))) for i in range(0, N, 256)])
        wall = time.perf_counter() - t
        cpu = tree_cpu(me) - c0
        print(
            f"{'driver->host, batches of 256':55s} {wall / N * 1000:7.3f} ms/item wall, {cpu / N * 1000:7.3f} ms/item CPU"
        )
    finally:
        ray.shutdown()
        c.shutdown()


main()
