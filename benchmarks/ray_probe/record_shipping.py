# ruff: noqa
"""What shipping records from another node costs: ops per batch, RPCs, time per op.

A two-node ``cluster_utils`` cluster; a ``RecordWriter`` actor on the worker node holds a
RemoteStore and makes RUNS runs' worth of writes with the real query functions (run
row + flush, RunEvents, an llm_call, a result, finish_run: what a prompt run records),
CONCURRENCY at a time, then the same number of ops again without any flush (pure
shipping). The driver's RecordDrain writes them to a real SQLite file. Prints, per
mode: ops, puts (actor calls carrying ops), ops per put, drain rounds, reads through
the StoreReader, wall time, and the worker's own time per submitted op.

A probe for issue 15 (not product code; lint off on purpose). Run:
PYTHONPATH=. python benchmarks/ray_probe/record_shipping.py [RUNS] [CONCURRENCY]
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentos.cluster.records import RecordDrain, RecordQueueActor, RemoteStore
from agentos.store import Store, owners, queries
from agentos.store.writer import Insert

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 50


@ray.remote(num_cpus=0, resources={"worker": 0.01})
class RecordWriter:
    def __init__(self, queue, db, owner):
        self.store = RemoteStore(queue, db, owner)
        self.submit_s = 0.0
        self.ops = 0
        submit = self.store.submit

        def timed(op):
            t = time.perf_counter()
            try:
                return submit(op)
            finally:
                self.submit_s += time.perf_counter() - t
                self.ops += 1

        self.store.submit = timed  # count and time every op the runs submit

    async def _one(self, n):
        store = self.store
        run_id = await asyncio.to_thread(
            queries.create_run,
            store,
            agent="bench",
            kind="prompt",
            spec={"n": n},
            wanted=None,
            agents_file=None,
        )
        events = queries.RunEvents(store, run_id)
        events.add("run_started", {"n": n})
        events.add("attempt_started", {"attempt": 1})
        queries.record_llm_call(
            store,
            run_id=run_id,
            engine="loop",
            model="m",
            status="ok",
            started_at=time.time(),
            finished_at=time.time(),
        )
        events.add("model_answer", {"text": "hello"})
        queries.record_result(store, run_id, None, "hello")
        events.add("attempt_finished", {"ok": True})
        events.add("run_finished", {"status": "succeeded"})
        queries.finish_run(
            store,
            run_id,
            status="succeeded",
            successes=1,
            attempts=1,
            final_hash=events.last_hash,
        )
        await store.room()

    async def runs(self, count, concurrency):
        start = time.perf_counter()
        self.submit_s, self.ops, ships = 0.0, 0, self.store.ships
        for first in range(0, count, concurrency):
            await asyncio.gather(
                *(self._one(n) for n in range(first, min(count, first + concurrency)))
            )
        await self.store.aflush()
        return self._report(start, ships)

    async def bulk(self, count):
        start = time.perf_counter()
        self.submit_s, self.ops, ships = 0.0, 0, self.store.ships
        for n in range(count):
            self.store.submit(Insert("todos", {"title": f"t{n}", "done": 0, "created_at": n}))
            if n % 256 == 255:
                await self.store.room()
        await self.store.aflush()
        return self._report(start, ships)

    def _report(self, start, ships):
        return {
            "wall_s": time.perf_counter() - start,
            "ops": self.ops,
            "puts": self.store.ships - ships,
            "submit_us_per_op": 1e6 * self.submit_s / max(1, self.ops),
            "waits": self.store.waits,
        }


def main():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2, resources={"worker": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        path = Path(tempfile.mkdtemp()) / "agentos.db"
        store = Store(path)
        owner = owners.register(store)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = RecordQueueActor.options(scheduling_strategy=here).remote()
        drain = RecordDrain(store, queue).start()
        writer = RecordWriter.remote(queue, str(path), owner)
        ray.get(writer.bulk.remote(10))  # warm: actor, worker process, reader
        before_q, before_d = ray.get(queue.stats.remote()), drain.stats()
        before_reads = ray.get(drain.reader.stats.remote())["reads"]
        out = ray.get(writer.runs.remote(RUNS, CONCURRENCY))
        show(
            f"{RUNS} runs, {CONCURRENCY} at a time",
            out,
            before_q,
            before_d,
            before_reads,
            queue,
            drain,
        )
        ops = RUNS * 11
        before_q, before_d = ray.get(queue.stats.remote()), drain.stats()
        before_reads = ray.get(drain.reader.stats.remote())["reads"]
        out = ray.get(writer.bulk.remote(ops))
        show(f"{ops} ops, no flush", out, before_q, before_d, before_reads, queue, drain)
        drain.stop()
        rows = store.db.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[
            0
        ]
        print(f"succeeded runs in the database: {rows}")
        store.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


def show(mode, out, before_q, before_d, before_reads, queue, drain):
    q, d = ray.get(queue.stats.remote()), drain.stats()
    reads = ray.get(drain.reader.stats.remote())["reads"] - before_reads
    puts = q["puts"] - before_q["puts"]
    ops = q["ops"] - before_q["ops"]
    rounds = d["rounds"] - before_d["rounds"]
    print(
        f"{mode}: {ops} ops in {puts} puts ({ops / max(1, puts):.1f} ops/put; worker counted "
        f"{out['ops']} ops, {out['puts']} puts), {rounds} drain rounds "
        f"({ops / max(1, rounds):.1f} ops/round), {reads} reads; wall {out['wall_s']:.2f} s = "
        f"{1e6 * out['wall_s'] / max(1, ops):.0f} us/op; worker's submit {out['submit_us_per_op']:.1f} "
        f"us/op; waits {out['waits']}; max uncommitted {q['max_outstanding']}"
    )


if __name__ == "__main__":
    main()
