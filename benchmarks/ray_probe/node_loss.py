# ruff: noqa
"""What the driver sees when a worker node dies mid-task: task retry, no-retry NodeDiedError, actor restart (docs/cluster.md section 1).

A probe kept as it was run for issue 15 (not product code; lint off on purpose). Run with
the ray venv: PYTHONPATH=. /work/ray-venv/bin/python benchmarks/ray_probe/node_loss.py
"""

import os
import time

import ray
from ray.cluster_utils import Cluster

c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
w1 = c.add_node(num_cpus=1, resources={"worker": 1})
c.wait_for_nodes()
ray.init(address=c.address, include_dashboard=False, log_to_driver=False)


@ray.remote(num_cpus=1, max_retries=2)
def slow(tag):
    ctx = ray.get_runtime_context()
    time.sleep(3)
    return ctx.get_node_id()[:8], os.getpid()


@ray.remote(num_cpus=1, max_retries=0)
def slow_noretry():
    time.sleep(3)
    return "done"


@ray.remote(max_restarts=1, max_task_retries=1, num_cpus=0)
class A:
    def __init__(self):
        self.pid = os.getpid()

    def where(self):
        return ray.get_runtime_context().get_node_id()[:8], os.getpid()

    def slow(self):
        time.sleep(3)
        return self.where()


print("worker node", w1.node_id[:8], "head", c.head_node.node_id[:8])
# 1. a retried task: head CPU busy with a blocker so the task lands on the worker
blocker = slow_noretry.options(resources={"head": 1}).remote()
r = slow.remote("x")
nr = slow_noretry.options(resources={"worker": 0.01}).remote()  # won't fit while r runs...
a = A.options(resources={"worker": 0.01}).remote()
print("actor at", ray.get(a.where.remote()))
time.sleep(1.0)
t_kill = time.perf_counter()
c.remove_node(w1, allow_graceful=False)
print(f"killed worker node ({time.perf_counter() - t_kill:.2f}s to remove)")
# bring up a replacement node so retries have somewhere to go with worker resource
w2 = c.add_node(num_cpus=1, resources={"worker": 1})
print("replacement node", w2.node_id[:8], f"up at +{time.perf_counter() - t_kill:.2f}s")
try:
    print("retried task ->", ray.get(r), f"at +{time.perf_counter() - t_kill:.2f}s")
except Exception as e:
    print("retried task raised", type(e).__name__, str(e)[:200])
try:
    print("no-retry task ->", ray.get(nr))
except Exception as e:
    print(
        "no-retry task raised",
        type(e).__name__,
        str(e).splitlines()[0][:200],
        f"at +{time.perf_counter() - t_kill:.2f}s",
    )
try:
    print(
        "actor after restart ->",
        ray.get(a.where.remote()),
        f"at +{time.perf_counter() - t_kill:.2f}s",
    )
except Exception as e:
    print("actor raised", type(e).__name__, str(e).splitlines()[0][:200])
# actor killed a 2nd time: beyond max_restarts
a2 = A.options(resources={"worker": 0.01}, max_restarts=0, max_task_retries=0).remote()
ray.get(a2.where.remote())
call = a2.slow.remote()
time.sleep(0.5)
t_kill = time.perf_counter()
c.remove_node(w2, allow_graceful=False)
try:
    print("actor(max_restarts=0) ->", ray.get(call))
except Exception as e:
    print(
        "actor(max_restarts=0) call raised",
        type(e).__name__,
        str(e).splitlines()[0][:160],
        f"at +{time.perf_counter() - t_kill:.2f}s",
    )
ray.shutdown()
c.shutdown()
