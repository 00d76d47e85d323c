# ruff: noqa
"""Time from killing a node mid-run to the retried run's result, through agentos.cluster (tuned health checks).

A probe kept as it was run for issue 15 (not product code; lint off on purpose). Run with
the ray venv: PYTHONPATH=. /work/ray-venv/bin/python benchmarks/ray_probe/retry_time.py
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from agentos.cluster.executor import ClusterSession
from agentos.spec.agents import load_agents
from agentos.spec.config import Config
from agentos.store import Store

T0 = time.perf_counter()


def p(*a):
    print(f"+{time.perf_counter() - T0:6.2f}", *a, flush=True)


tmp = Path(tempfile.mkdtemp())
eng = subprocess.Popen(
    [sys.executable, "-m", "agentos.testing.engine", "--port", "0", "--delay-ms", "1500"],
    stdout=subprocess.PIPE,
    text=True,
)
url = eng.stdout.readline().split()[-1]
(tmp / "agents.yaml").write_text(
    'agents:\n  - name: asker\n    prompt: "Say hello. ANSWER: hello"\n'
)
agents = load_agents(tmp / "agents.yaml")
config = Config.model_validate(
    {"engines": [{"name": "loop", "type": "openai", "base_url": url}], "cache": {"enabled": False}}
)
c = Cluster(
    initialize_head=True,
    head_node_args={
        "num_cpus": 2,
        "_system_config": {
            "health_check_period_ms": 500,
            "health_check_failure_threshold": 3,
            "health_check_timeout_ms": 500,
        },
    },
)
c.wait_for_nodes()
ray.init(address=c.address, log_to_driver=False)
p("head up")
with Store(tmp / "a.db") as store, ClusterSession(store, config) as s:
    p("session up")
    v = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    p("victim up")
    ref = s.run(agents["asker"], prefer_node=v.node_id, max_retries=1)
    while not store.db.execute("SELECT 1 FROM runs").fetchone():
        time.sleep(0.02)
    p("run row committed")
    c.remove_node(v, allow_graceful=False)
    p("victim killed")
    r = ray.get(ref)
    p("retry done", r.outcome.status, r.node_id == c.head_node.node_id)
p("session closed")
ray.shutdown()
c.shutdown()
eng.terminate()
p("down")
