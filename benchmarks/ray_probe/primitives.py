# ruff: noqa
"""Ray primitives on a local two-node cluster: import, start, memory, task/actor/queue overhead, shutdown (docs/cluster.md section 1).

A probe kept as it was run for issue 15 (not product code; lint off on purpose). Run with
the ray venv: PYTHONPATH=. /work/ray-venv/bin/python benchmarks/ray_probe/primitives.py
"""

import subprocess
import time

t0 = time.perf_counter()
import ray
from ray.cluster_utils import Cluster
from ray.util.queue import Queue

print(f"import ray {time.perf_counter() - t0:.2f}s")


def rss_ray():
    out = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout
    tot = 0
    n = 0
    for line in out.splitlines()[1:]:
        rss, args = line.strip().split(None, 1)
        if "ray" in args and "primitives.py" not in args and "ps -eo" not in args:
            tot += int(rss)
            n += 1
    return tot / 1024, n


t = time.perf_counter()
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
t_head = time.perf_counter() - t
t = time.perf_counter()
c.add_node(num_cpus=1, resources={"worker": 1})
c.wait_for_nodes()
t_worker = time.perf_counter() - t
t = time.perf_counter()
ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
t_init = time.perf_counter() - t
print(
    f"cluster head {t_head:.2f}s, add worker node {t_worker:.2f}s, ray.init(driver) {t_init:.2f}s"
)
print("nodes", len(ray.nodes()), ray.cluster_resources())
mem, n = rss_ray()
print(f"ray processes idle: {n}, RSS {mem:.0f} MiB")


@ray.remote
def empty():
    return None


@ray.remote(resources={"worker": 0.001})
def where():
    return ray.get_runtime_context().get_node_id()


t = time.perf_counter()
ray.get(empty.remote())
print(f"first task (worker start) {time.perf_counter() - t:.2f}s")
t = time.perf_counter()
ray.get(where.remote())
print(f"first task on worker node {time.perf_counter() - t:.2f}s")
for label, fn in (("empty task, 1000 submitted then get", None),):
    t = time.perf_counter()
    ray.get([empty.remote() for _ in range(1000)])
    dt = time.perf_counter() - t
    print(f"{label}: {dt * 1000 / 1000:.3f} ms/task")
t = time.perf_counter()
for _ in range(200):
    ray.get(empty.remote())
print(
    f"empty task sequential (submit+get, 200): {(time.perf_counter() - t) * 1000 / 200:.3f} ms/task"
)
mem, n = rss_ray()
print(f"ray processes after tasks: {n}, RSS {mem:.0f} MiB")


@ray.remote(num_cpus=0)
class Sync:
    def ping(self):
        return None


@ray.remote(num_cpus=0)
class Async:
    async def ping(self):
        return None


for name, cls in (("Sync", Sync), ("Async", Async)):
    a = cls.options(resources={"worker": 0.001}).remote()
    t = time.perf_counter()
    ray.get(a.ping.remote())
    st = time.perf_counter() - t
    t = time.perf_counter()
    ray.get([a.ping.remote() for _ in range(1000)])
    dt = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(200):
        ray.get(a.ping.remote())
    seq = time.perf_counter() - t
    print(
        f"{name} actor: start {st:.2f}s, 1000 pipelined {dt:.3f} ms/call, sequential {seq * 1000 / 200:.3f} ms/call"
    )


# actor calls from a task on the other node
@ray.remote(resources={"worker": 0.001})
def call_from_worker(a, n):
    t = time.perf_counter()
    for _ in range(n):
        ray.get(a.ping.remote())
    return (time.perf_counter() - t) * 1000 / n


a = Async.options(resources={"head": 0.001}).remote()
ray.get(a.ping.remote())
print(
    f"async actor (head) called from a task on worker node, sequential: {ray.get(call_from_worker.remote(a, 200)):.3f} ms/call"
)

q = Queue(maxsize=0)
t = time.perf_counter()
for i in range(200):
    q.put(i)
    q.get()
print(
    f"ray.util.queue.Queue put+get round trip (driver): {(time.perf_counter() - t) * 1000 / 200:.3f} ms"
)
t = time.perf_counter()
q.put_nowait_batch(list(range(1000)))
got = q.get_nowait_batch(1000)
print(f"Queue batch 1000 put+get: {(time.perf_counter() - t) * 1000:.1f} ms total")


@ray.remote(resources={"worker": 0.001})
def put_many(q, n):
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    return (time.perf_counter() - t) * 1000 / n


print(f"Queue.put from worker node task: {ray.get(put_many.remote(q, 200)):.3f} ms/put")
mem, n = rss_ray()
print(f"ray processes with actors: {n}, RSS {mem:.0f} MiB")
t = time.perf_counter()
ray.shutdown()
print(f"ray.shutdown() (driver) {time.perf_counter() - t:.2f}s")
t = time.perf_counter()
c.shutdown()
print(f"Cluster.shutdown() {time.perf_counter() - t:.2f}s")
time.sleep(1)
mem, n = rss_ray()
print(f"ray processes left: {n}")
