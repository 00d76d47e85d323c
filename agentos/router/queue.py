"""The admission queue: jobs waiting for engine capacity, grouped into compatible batches.

Two stages. ``submit`` only appends to the *intake* (O(1), no sorting on the caller's
path); the dispatcher sorts the intake into *groups* before each round of decisions, so
queue depth is "prioritized + not yet sorted".

A group holds the jobs that may share one request: same kind, model, sampling parameters,
response format and pinned engine (``batch_key``) — never one job's settings for another.
Inside a group there is one FIFO per priority class. A job's effective priority is its
class rank minus one per ``aging_s`` seconds it has waited, so background work rises
above fresh user work after waiting long enough and is never starved forever. Since a
class FIFO's head is its oldest job, the best job of a group is always one of at most four
heads, and picking the next batch costs O(groups × engines), not O(jobs).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from agentos.router.jobs import PRIORITY_RANK, Job

N_CLASSES = len(PRIORITY_RANK)


def batch_key(job: Job) -> str:
    """Jobs with equal keys can go to an engine in one request. The sample index is not
    part of it: a batch of different samples goes without a seed (``batch.batch_body``),
    so an agent's attempts share requests. Embeddings jobs of one text each batch as one
    input list; a job with several texts goes alone."""
    req = job.request
    return json.dumps(
        [
            req.kind,
            req.model,
            job.engine,
            req.params,
            req.json_schema,
            req.kind == "embeddings" and len(req.input or ()) != 1,
            job.solo and job.id,
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


@dataclass
class Group:
    """Compatible jobs, one FIFO per priority class."""

    key: str
    sample: Job
    lanes: list[deque[Job]] = field(default_factory=lambda: [deque() for _ in range(N_CLASSES)])
    size: int = 0

    def push(self, job: Job) -> None:
        self.lanes[job.rank].append(job)
        self.size += 1

    def oldest_enqueued(self) -> float:
        return min(lane[0].enqueued_at for lane in self.lanes if lane)

    def best_lane(self, now: float, aging_s: float) -> int:
        best, best_score = -1, 0.0
        for rank, lane in enumerate(self.lanes):
            if not lane:
                continue
            score = rank - (now - lane[0].enqueued_at) / aging_s
            if best < 0 or score < best_score:
                best, best_score = rank, score
        return best

    def effective_priority(self, now: float, aging_s: float) -> float:
        lane = self.best_lane(now, aging_s)
        return lane - (now - self.lanes[lane][0].enqueued_at) / aging_s

    def take(self, n: int, now: float, aging_s: float) -> list[Job]:
        """Up to ``n`` jobs, best effective priority first."""
        taken: list[Job] = []
        while self.size and len(taken) < n:
            lane = self.lanes[self.best_lane(now, aging_s)]
            taken.append(lane.popleft())
            self.size -= 1
        return taken

    def jobs(self) -> Iterator[Job]:
        for lane in self.lanes:
            yield from lane


class AdmissionQueue:
    def __init__(self, aging_s: float = 5.0) -> None:
        self.aging_s = aging_s
        self.intake: list[Job] = []
        self.groups: dict[str, Group] = {}
        self.prioritized = 0

    def __len__(self) -> int:
        return self.prioritized + len(self.intake)

    def push(self, job: Job) -> None:
        self.intake.append(job)

    def sort_intake(self) -> None:
        intake, self.intake = self.intake, []
        for job in intake:
            key = job.key or batch_key(job)
            job.key = key
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(key=key, sample=job)
            group.push(job)
        self.prioritized += len(intake)

    def take(self, group: Group, n: int, now: float) -> list[Job]:
        jobs = group.take(n, now, self.aging_s)
        self.prioritized -= len(jobs)
        if not group.size:
            del self.groups[group.key]
        return jobs

    def active_groups(self) -> list[Group]:
        return list(self.groups.values())

    def all_jobs(self) -> Iterator[Job]:
        yield from self.intake
        for group in self.groups.values():
            yield from group.jobs()

    def purge(self, doomed: set[str]) -> None:
        """Remove the jobs whose ids are in ``doomed`` (expired or cancelled)."""
        for key in list(self.groups):
            group = self.groups[key]
            for i, lane in enumerate(group.lanes):
                kept = deque(j for j in lane if j.id not in doomed)
                removed = len(lane) - len(kept)
                if removed:
                    group.lanes[i] = kept
                    group.size -= removed
                    self.prioritized -= removed
            if not group.size:
                del self.groups[key]
        self.intake = [j for j in self.intake if j.id not in doomed]
