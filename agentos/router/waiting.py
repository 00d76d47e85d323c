"""What the router says while jobs wait for engines that do not answer.

A job waits (up to its deadline) when every engine that offers its model is cooling down
after failures or being probed. Waiting in silence looked like a hang: ``agentos run``
sat for the whole ten-minute deadline without a word. :class:`WaitingNotices` turns the
queue's state into lines for the person watching — at once when jobs start waiting for a
set of engines, again every ``every_s`` while they still wait (with why the engines do
not answer and when the first job fails), and once when such an engine answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from agentos.router.handle import EngineHandle
from agentos.router.jobs import Job


class WaitingNotices:
    """Lines about waiting jobs, grouped by the engines they wait for. Used from the
    router's event loop only (no lock)."""

    def __init__(self, engines: Mapping[str, EngineHandle], every_s: float) -> None:
        self.engines = engines
        self.every_s = every_s
        self.said: dict[tuple[str, ...], float] = {}
        """Engine names that jobs wait for, and when that was last said (monotonic)."""

    def report(self, jobs: Iterable[Job], now: float, say: Callable[[str], None]) -> None:
        waiting: dict[tuple[str, ...], list[Job]] = {}
        for job in jobs:
            if job.future is not None and job.future.done():
                continue
            pool = [self.engines[job.engine]] if job.engine else list(self.engines.values())
            if any(e.serves(job.request) for e in pool):
                continue
            offering = tuple(e.name for e in pool if e.offers(job.request))
            if offering:
                waiting.setdefault(offering, []).append(job)
        for names in [n for n in self.said if n not in waiting]:
            del self.said[names]  # the jobs went on (see ``back``) or failed
        for names, group in waiting.items():
            said = self.said.get(names)
            if said is not None and now - said < self.every_s:
                continue
            self.said[names] = now
            say(self.line(names, group, now))

    def back(self, engine: str, say: Callable[[str], None]) -> None:
        """``engine`` passed its health probe: say so at once where jobs were said to wait
        for it (before they are served and the run may end)."""
        if any(engine in names for names in self.said):
            for names in [n for n in self.said if engine in n]:
                del self.said[names]
            say(f"engine {engine} answers again; the jobs that waited for it go on")

    def line(self, names: tuple[str, ...], jobs: list[Job], now: float) -> str:
        """``1 job waiting for engine remote, which does not answer (...); the first
        fails at 14:02:11 (in 600 s, ...)``."""
        engines = [self.engines[n] for n in names]
        left = max(0.0, min(job.deadline for job in jobs) - now)
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
        which = "engine" if len(engines) == 1 else "engines"
        verb = "does" if len(engines) == 1 else "do"
        why = "; ".join(f"{e.name} at {e.client.base_url}: {e.trouble()}" for e in engines)
        count = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}"
        return (
            f"{count} waiting for {which} {', '.join(names)}, which {verb} not answer "
            f"({why}); the first fails at {at} (in {left:.0f} s, the router's deadline) "
            "unless an engine answers before"
        )
