"""The admission queue: jobs waiting for engine capacity, best priority class first.

Within a class jobs leave in arrival order (a monotonically increasing sequence number
breaks ties), so equal work is served first-come first-served.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from agentos.router.jobs import Job


class AdmissionQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Job]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, job: Job) -> None:
        heapq.heappush(self._heap, (job.rank, next(self._seq), job))

    def take(self, can_start: Callable[[Job], bool]) -> list[Job]:
        """Remove and return, in priority order, every job for which ``can_start`` says yes.

        ``can_start`` is asked in priority order and may reserve capacity as it answers,
        so a job is only taken when an engine really has room for it; the others keep
        their place (and their original sequence number) in the queue.
        """
        taken: list[Job] = []
        kept: list[tuple[int, int, Job]] = []
        while self._heap:
            item = heapq.heappop(self._heap)
            job = item[2]
            if job.future is not None and job.future.done():
                continue
            if can_start(job):
                taken.append(job)
            else:
                kept.append(item)
        for item in kept:
            heapq.heappush(self._heap, item)
        return taken
