# ruff: noqa
"""Run-host actors whose run-row flush does not wait for the driver's commit (what a
driver-created row would save), and whether the cross-producer order then breaks the
llm_calls -> runs foreign key. Args: N runs.

A probe kept as it was run for issue 15 (not product code; lint off on purpose). Run with
the ray venv: PYTHONPATH=. /work/ray-venv/bin/python benchmarks/ray_probe/run_host_nowait.py
"""

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
from agentos.cluster.records import RemoteStore
from agentos.cluster.router_actor import RouterProxy
from agentos.scheduler.display import PlainDisplay
from agentos.spec.agents import load_agents
from agentos.spec.config import Config
from agentos.store import Store

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300


class NoWaitStore(RemoteStore):
    def flush(self, timeout=None):
        self.ship()


@ray.remote(num_cpus=0)
class RunHost:
    def __init__(self, router, queue, db, owner, wait):
        cls = RemoteStore if wait else NoWaitStore
        self.store = cls(queue, db, owner)
        self.ctx = RunContext(
            router=RouterProxy(router), store=self.store, display=PlainDisplay(io.StringIO())
        )

    async def run(self, spec, variables):
        out = await make_run(spec, self.ctx, variables=variables).run()
        return out.status

    async def flush(self):
        await self.store.aflush()


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
spec = load_agents(tmp / "agents.yaml")["asker"]
config = Config.model_validate(
    {"engines": [{"name": "loop", "type": "openai", "base_url": url}], "cache": {"enabled": False}}
)
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
c.add_node(num_cpus=1, resources={"worker": 1})
c.wait_for_nodes()
ray.init(address=c.address, log_to_driver=False)
for wait in (True, False):
    db = tmp / f"h{wait}.db"
    error = None
    try:
        with Store(db) as store, ClusterSession(store, config) as s:
            hosts = [
                RunHost.options(resources={n: 0.01}, max_concurrency=1000).remote(
                    s.router, s.queue, str(store.path), s.owner, wait
                )
                for n in ("head", "worker")
            ]
            ray.get([h.run.remote(spec, {"who": "w"}) for h in hosts])
            t = time.perf_counter()
            outs = ray.get([hosts[i % 2].run.remote(spec, {"who": str(i)}) for i in range(N)])
            ray.get([h.flush.remote() for h in hosts])
            dt = time.perf_counter() - t
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    with Store(db) as store:
        calls = store.db.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        runs = store.db.execute("SELECT count(*) FROM runs").fetchone()[0]
    print(
        f"row flush {'waits' if wait else 'does not wait'}: {N} runs {dt:.2f}s = {dt * 1000 / N:.2f} ms/run, "
        f"succeeded {outs.count('succeeded')}, runs rows {runs}, llm_calls rows {calls}, error {error}"
    )
ray.shutdown()
c.shutdown()
eng.terminate()
