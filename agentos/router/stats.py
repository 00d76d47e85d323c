"""Accounting: where the engines' time and the jobs went.

Busy time is *wall time with at least one request in flight*, never a sum of overlapping
request durations: with four requests running for one second together the engine was busy
for one second, not four. It is measured by noting when the in-flight count leaves and
returns to zero. Idle time is its complement since the engine came up, so for every engine
``busy + idle == uptime`` holds by construction. Wasted time is different on purpose: it
sums the durations of failed requests, because each of those was paid for separately.

Latency is kept in a :class:`LatencyHistogram` (fixed log-spaced buckets, one bisect per
finished request or job, so the hot path stays O(log buckets) and memory bounded however
long a runtime lives); its p50 and p99 are bucket bounds, within 12% of the true value.
Tokens per second are a :class:`TokenRate` over the last ten seconds, sampled when a
snapshot is taken, never per request.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

LATENCY_BOUNDS_S: Final = tuple(0.001 * 1.25**i for i in range(70))
"""Upper bounds of the latency buckets: 1 ms to about 1.4 h, each 25% above the last."""


class LatencyHistogram:
    """Counts of durations in :data:`LATENCY_BOUNDS_S` buckets (a last one for longer)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
        self.total = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile; None when empty."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        index = 0
        while seen + self.counts[index] < rank:
            seen += self.counts[index]
            index += 1
        return LATENCY_BOUNDS_S[min(index, len(LATENCY_BOUNDS_S) - 1)]

    def snapshot(self) -> dict[str, float | None]:
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return {
            "p50_s": round(p50, 4) if p50 is not None else None,
            "p99_s": round(p99, 4) if p99 is not None else None,
        }


class TokenRate:
    """Tokens per second over the last :attr:`WINDOW_S`, from a running total sampled at
    most once a second (when a snapshot is taken)."""

    WINDOW_S: Final = 10.0

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, now: float, total: int) -> float:
        if not self.samples or now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW_S:
            self.samples.popleft()
        then, before = self.samples[0]
        return (total - before) / (now - then) if now > then else 0.0


@dataclass
class EngineStats:
    """Counters of one engine since it came up (monotonic clock)."""

    name: str
    endpoint: str
    max_requests: int
    max_batch_size: int
    started_at: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    requests: int = 0
    jobs: int = 0
    failed_requests: int = 0
    failed_jobs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wasted_s: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Durations of the requests answered (a batch counts once)."""
    token_rate: TokenRate = field(default_factory=TokenRate)
    _busy_total: float = 0.0
    _busy_since: float | None = None

    def request_started(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.in_flight == 0:
            self._busy_since = now
        self.in_flight += 1

    def request_finished(
        self,
        *,
        jobs: int,
        ok: bool,
        duration_s: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        now: float | None = None,
    ) -> None:
        self.request_abandoned(now)
        self.requests += 1
        if ok:
            self.latency.add(duration_s)
            self.jobs += jobs
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
        else:
            self.failed_requests += 1
            self.wasted_s += duration_s

    def request_abandoned(self, now: float | None = None) -> None:
        """A request whose slot was taken but that was never sent."""
        now = time.monotonic() if now is None else now
        self.in_flight -= 1
        if self.in_flight == 0 and self._busy_since is not None:
            self._busy_total += now - self._busy_since
            self._busy_since = None

    def job_failed(self) -> None:
        """A job whose last attempt was on this engine ended failed."""
        self.failed_jobs += 1

    def uptime(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return now - self.started_at

    def busy_s(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        open_part = now - self._busy_since if self._busy_since is not None else 0.0
        return self._busy_total + open_part

    def idle_s(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return self.uptime(now) - self.busy_s(now)

    @property
    def state(self) -> str:
        return f"busy - {self.in_flight}" if self.in_flight else "idle"

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The counters at ``now``. Idle time is derived from the rounded busy time and
        uptime, so that ``busy_s + idle_s == uptime_s`` also holds for the shown values."""
        now = time.monotonic() if now is None else now
        busy = round(self.busy_s(now), 4)
        uptime = round(self.uptime(now), 4)
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "state": self.state,
            "in_flight": self.in_flight,
            "max_requests": self.max_requests,
            "max_batch_size": self.max_batch_size,
            "requests": self.requests,
            "jobs": self.jobs,
            "failed_requests": self.failed_requests,
            "failed_jobs": self.failed_jobs,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "busy_s": busy,
            "idle_s": round(uptime - busy, 4),
            "uptime_s": uptime,
            "wasted_s": round(self.wasted_s, 4),
            **self.latency.snapshot(),
            "tokens_per_s": round(
                self.token_rate.rate(now, self.prompt_tokens + self.completion_tokens), 2
            ),
        }


@dataclass
class ProcessStats:
    """Counters of one process (an agent, or a system process) as the router sees it."""

    name: str
    requests: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    wait_total_s: float = 0.0
    waited: int = 0
    """Jobs whose first request has started (the denominator of the average wait)."""
    queued: int = 0
    """Jobs of this process in the router right now (queued or in flight)."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Jobs' times from submission to answer (queue wait included; cache hits not)."""
    token_rate: TokenRate = field(default_factory=TokenRate)

    @property
    def avg_wait_s(self) -> float:
        return self.wait_total_s / self.waited if self.waited else 0.0

    def snapshot(self, now: float | None = None, oldest_wait_s: float = 0.0) -> dict[str, Any]:
        """``oldest_wait_s``: how long its oldest job still queued has waited (the router
        knows its queue, this does not)."""
        now = time.monotonic() if now is None else now
        tokens = self.prompt_tokens + self.completion_tokens
        return {
            "name": self.name,
            "requests": self.requests,
            "jobs": self.jobs,
            "failed_jobs": self.failed_jobs,
            "tokens": tokens,
            "cache_hits": self.cache_hits,
            "queued": self.queued,
            "avg_wait_s": round(self.avg_wait_s, 4),
            "wait_s": round(oldest_wait_s, 4),
            **self.latency.snapshot(),
            "tokens_per_s": round(self.token_rate.rate(now, tokens), 2),
        }
