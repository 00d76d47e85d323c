# ruff: noqa
"""Prompt runs per ms: one process vs one Ray task per run vs one run-host actor per node, via agentos.cluster (args: N runs).

A probe kept as it was run for issue 15 (not product code; lint off on purpose). Run with
the ray venv: PYTHONPATH=. /work/ray-venv/bin/python benchmarks/ray_probe/run_overhead.py
"""

import asyncio
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from agentos.agents.base import RunContext
from agentos.agents.registry import make_run
from agentos.cluster.executor import ClusterSession
from agentos.router.engines import open_engines, recording_router
from agentos.scheduler.display import PlainDisplay
from agentos.spec.agents import load_agents
from agentos.spec.config import Config
from agentos.store import Store

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
tmp = Path(tempfile.mkdtemp())
eng = subprocess.Popen(
    [sys.executable, "-m", "agentos.testing.engine", "--port", "0"],
    stdout=subprocess.PIPE,
    text=True,
)
url = eng.stdout.readline().split()[-1]
(tmp / "agents.yaml").write_text(
    'agents:\n  - name: asker\n    prompt: "Say hello to {{ who }}. ANSWER: hello"\n    vars: {who: x}\n'
)
agents = load_agents(tmp / "agents.yaml")
spec = agents["asker"]
config = Config.model_validate(
    {"engines": [{"name": "loop", "type": "openai", "base_url": url}], "cache": {"enabled": False}}
)


async def local():
    with Store(tmp / "local.db") as store:
        async with (
            open_engines(config) as engines,
            recording_router(engines, store, config) as router,
        ):
            ctx = RunContext(router=router, store=store, display=PlainDisplay(io.StringIO()))
            t = time.perf_counter()
            await asyncio.gather(
                *(make_run(spec, ctx, variables={"who": str(i)}).run() for i in range(N))
            )
            return time.perf_counter() - t


dt = asyncio.run(local())
print(f"one process: {N} runs {dt:.2f}s = {dt * 1000 / N:.2f} ms/run")
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
c.add_node(num_cpus=1, resources={"worker": 1})
c.wait_for_nodes()
ray.init(address=c.address, log_to_driver=False)
with Store(tmp / "c.db") as store, ClusterSession(store, config) as s:
    ray.get([s.run(spec, resources={n: 0.01}, num_cpus=0.25) for n in ("head", "worker")])
    t = time.perf_counter()
    outs = ray.get([s.run(spec, variables={"who": str(i)}, num_cpus=0.25) for i in range(N)])
    dt = time.perf_counter() - t
    nodes = {o.node_id for o in outs}
    print(
        f"cluster (2 nodes, 4+4 slots): {N} runs {dt:.2f}s = {dt * 1000 / N:.2f} ms/run, nodes used {len(nodes)}, ok {sum(o.outcome.status == 'succeeded' for o in outs)}"
    )
    print("drain", s.drain.ops, "ops in", s.drain.batches, "batches")
ray.shutdown()
c.shutdown()

# variant: one async "run host" actor per node, runs concurrent in its event loop

from agentos.cluster.records import RemoteStore
from agentos.cluster.router_actor import RouterProxy


@ray.remote(num_cpus=0)
class RunHost:
    def __init__(self, router, queue, db, owner):
        self.store = RemoteStore(queue, db, owner)
        self.ctx = RunContext(
            router=RouterProxy(router), store=self.store, display=PlainDisplay(io.StringIO())
        )

    async def run(self, spec, variables):
        out = await make_run(spec, self.ctx, variables=variables).run()
        return (out.status, out.error)

    async def flush(self):
        await self.store.aflush()


c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
c.add_node(num_cpus=1, resources={"worker": 1})
c.wait_for_nodes()
ray.init(address=c.address, log_to_driver=False)
with Store(tmp / "h.db") as store, ClusterSession(store, config) as s:
    hosts = [
        RunHost.options(resources={n: 0.01}, max_concurrency=1000).remote(
            s.router, s.queue, str(store.path), s.owner
        )
        for n in ("head", "worker")
    ]
    ray.get([h.run.remote(spec, {"who": "w"}) for h in hosts])
    t = time.perf_counter()
    outs = ray.get([hosts[i % 2].run.remote(spec, {"who": str(i)}) for i in range(N)])
    ray.get([h.flush.remote() for h in hosts])
    dt = time.perf_counter() - t
    print(
        f"run-host actor per node: {N} runs {dt:.2f}s = {dt * 1000 / N:.2f} ms/run, ok {sum(o[0] == 'succeeded' for o in outs)} {outs[:2]}"
    )
    print("drain", s.drain.ops, "ops in", s.drain.batches, "batches")
ray.shutdown()
c.shutdown()
eng.terminate()
