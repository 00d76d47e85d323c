"""Do one caller's calls to an async actor start in submission order? (issue 15)

records.py assumes they do (a RemoteStore's batches reach the RecordQueue in the order
they were shipped). Ray's documentation says async and threaded actors do not guarantee
it, and this shows it: a caller alternates calls with a large argument (300 KB, which
goes through the object store) and a small one (inline); the actor records the order in
which the calls started.

    python benchmarks/ray_probe/async_order.py [ADDRESS]

On the build machine (two-node local cluster, Ray 2.60): 26 of 199 neighbouring pairs
started out of order. In agentos this lets a run's finish (small batch) be committed
before its result (in a larger batch shipped just before): one run in 201 of a 200-item
pipeline on --cluster was audited "1 results row(s) were added to the run after it
finished".
"""

from __future__ import annotations

import asyncio
import itertools
import sys

import ray


@ray.remote(num_cpus=0)
class Queue:
    def __init__(self) -> None:
        self.order: list[int] = []

    async def put(self, ops: list[str], number: int) -> int:
        self.order.append(number)
        return number

    async def started(self) -> list[int]:
        return self.order


@ray.remote(num_cpus=0)
class Sender:
    async def send(self, queue: object, calls: int) -> list[int]:
        refs = []
        for i in range(calls):
            ops = ["x" * 1000] * (300 if i % 2 == 0 else 1)
            refs.append(queue.put.remote(ops, i))  # type: ignore[attr-defined]
        await asyncio.gather(*refs)
        order: list[int] = await queue.started.remote()  # type: ignore[attr-defined]
        return order


def main() -> None:
    ray.init(address=sys.argv[1] if len(sys.argv) > 1 else None, log_to_driver=False)
    order = ray.get(Sender.remote().send.remote(Queue.remote(), 200))
    swaps = sum(1 for a, b in itertools.pairwise(order) if b < a)
    print(f"{swaps} of {len(order) - 1} neighbouring calls started out of order")
    ray.shutdown()


if __name__ == "__main__":
    main()
