"""Which of a run's answers came from the response cache, for the progress lines.

A re-run of a single-shot agent asks for the samples it asked before, so with the cache
on it is served from the cache (see :mod:`agentos.scheduler.samples`). That is cheap and
repeatable, but must not look like fresh model output: each run of a runtime gets a
:class:`TallyingRouter` in front of the shared router, which counts the run's answers and
cache hits by attempt, and a :class:`TallyingDisplay` in front of the display, which says
so on the attempt's line and on the run's last line. Both wrap the runtime's own objects
and work for every kind of agent, since every kind asks through ``context.router`` with
job ids ``run:attempt:turn``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from agentos.agents.base import ModelRouter
from agentos.router.jobs import Completion, InferenceRequest
from agentos.scheduler.display import Display, RunOutcome


@dataclasses.dataclass
class CacheTally:
    """A run's answers so far, and how many of them the cache served."""

    answers: int = 0
    hits: int = 0
    hits_by_attempt: Counter[int] = dataclasses.field(default_factory=Counter)

    def add(self, job_id: str | None, cache_hit: bool) -> None:
        self.answers += 1
        if cache_hit:
            self.hits += 1
            self.hits_by_attempt[_attempt_of(job_id)] += 1


def _attempt_of(job_id: str | None) -> int:
    """The attempt number of a job id ``run:attempt:turn`` (0 when it is not one)."""
    parts = (job_id or "").rsplit(":", 2)
    try:
        return int(parts[1]) if len(parts) == 3 else 0
    except ValueError:
        return 0


class TallyingRouter:
    """The runtime's router, counting one run's answers and cache hits in a tally."""

    def __init__(self, router: ModelRouter, tally: CacheTally) -> None:
        self.router = router
        self.tally = tally

    async def submit(self, request: InferenceRequest, **options: Any) -> Completion:
        completion = await self.router.submit(request, **options)
        self.tally.add(options.get("job_id"), completion.cache_hit)
        return completion

    def observe(self, completion: Completion, job_id: str | None) -> None:
        """Count an answer the run got another way (on a cluster's node), and pass it on
        to the router inside, if that one counts answers too (a budget)."""
        self.tally.add(job_id, completion.cache_hit)
        inner = getattr(self.router, "observe", None)
        if inner is not None:
            inner(completion, job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class TallyingDisplay:
    """The runtime's display, saying which of one run's answers came from the cache."""

    def __init__(self, display: Display, tally: CacheTally) -> None:
        self.display = display
        self.tally = tally

    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None:
        self.display.run_started(run_id, agent, wanted, attempt_cap)

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None:
        hits = self.tally.hits_by_attempt.get(attempts, 0)
        if hits:
            detail = f"(from the cache) {detail}"
        self.display.attempt_finished(run_id, agent, ok, successes, attempts, detail)

    def run_finished(self, outcome: RunOutcome) -> None:
        self.display.run_finished(with_tally(outcome, self.tally))

    def message(self, text: str) -> None:
        self.display.message(text)

    def close(self) -> None:
        self.display.close()


def with_tally(outcome: RunOutcome, tally: CacheTally) -> RunOutcome:
    """``outcome`` with the run's answer and cache-hit counts."""
    return dataclasses.replace(outcome, answers=tally.answers, cache_hits=tally.hits)
