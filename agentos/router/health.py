"""Per-engine health as the router sees it: a circuit breaker and an adaptive limit.

Circuit breaker: ``threshold`` consecutive failed requests (of the kinds worth retrying —
timeouts, connection errors, 5xx, malformed answers) *open* the circuit: the engine gets
no traffic for a cooldown that doubles on every re-opening (up to ``cooldown_max``). When
the cooldown is over the router probes the engine (``GET /v1/models``); only a good probe
closes the circuit again. A success resets the count, so an engine that fails now and then
keeps its traffic while one that keeps failing loses it.

Adaptive limit: a 429 halves the number of requests the router keeps in flight on that
engine (at least one), and every ``limit`` successes win one slot back, up to the
configured ``max_requests`` — the engine said it is overloaded, so believe it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

CircuitState = Literal["closed", "open", "probing"]


@dataclass
class EngineHealth:
    max_requests: int
    threshold: int = 3
    cooldown: float = 2.0
    cooldown_max: float = 120.0
    state: CircuitState = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    current_cooldown: float = 0.0
    openings: int = 0
    limit: int = field(init=False)
    _successes_since_cut: int = 0
    latency_ewma: float | None = None
    failure_ewma: float = 0.0

    def __post_init__(self) -> None:
        self.limit = self.max_requests
        self.current_cooldown = self.cooldown

    @property
    def available(self) -> bool:
        return self.state == "closed"

    def on_success(self, latency_s: float) -> None:
        self.consecutive_failures = 0
        self.failure_ewma *= 0.8
        self.latency_ewma = (
            latency_s if self.latency_ewma is None else 0.8 * self.latency_ewma + 0.2 * latency_s
        )
        if self.limit < self.max_requests:
            self._successes_since_cut += 1
            if self._successes_since_cut >= self.limit:
                self.limit += 1
                self._successes_since_cut = 0

    def on_failure(self, now: float | None = None) -> bool:
        """Count a transient failure; True when this one opened the circuit."""
        self.failure_ewma = 0.8 * self.failure_ewma + 0.2
        self.consecutive_failures += 1
        if self.state == "closed" and self.consecutive_failures >= self.threshold:
            self.open(now)
            return True
        return False

    def on_rate_limited(self) -> None:
        self.limit = max(1, self.limit // 2)
        self._successes_since_cut = 0

    def open(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.openings:
            self.current_cooldown = min(self.cooldown_max, self.current_cooldown * 2)
        self.state = "open"
        self.opened_at = now
        self.openings += 1

    def probe_due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.state == "open" and now - self.opened_at >= self.current_cooldown

    def probe_succeeded(self) -> None:
        self.state = "closed"
        self.consecutive_failures = 0
        self.current_cooldown = self.cooldown
        self.openings = 0

    def probe_failed(self, now: float | None = None) -> None:
        self.open(now)

    def penalty(self, best_latency: float | None) -> float:
        """Multiplier (≥ 1) on an engine's load: recent failures and slowness count."""
        factor = 1.0 + 2.0 * self.failure_ewma
        if best_latency and self.latency_ewma:
            factor *= min(4.0, (self.latency_ewma / best_latency) ** 0.5)
        return factor
