"""Retry decisions are values; this module alone turns them into waits and stop rules.

An engine error is classified once (``classify``) into a ``RetryDecision``; the router asks
``next_wait`` whether and how long to wait before the next attempt. Keeping both here
means every engine type retries the same way (STYLE.md 4, after inspect_ai's
``model/_retry.py``).
"""

from __future__ import annotations

import enum
import random

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
)
from agentos.router.jobs import RetryPolicy

RATE_LIMIT_DEFAULT_WAIT = 1.0
"""Seconds to wait after a 429 that carries no Retry-After header."""


class RetryDecision(enum.Enum):
    NO_RETRY = "no-retry"
    TRANSIENT = "transient"
    RATE_LIMITED = "rate-limited"


def classify(error: BaseException) -> RetryDecision:
    """Timeouts (408 included), connection failures, 5xx and malformed answers are
    transient; 429 is rate limiting; every other error (other 4xx, bugs) is not worth
    another try."""
    if isinstance(error, EngineStatusError):
        if error.status == 429:
            return RetryDecision.RATE_LIMITED
        if error.status >= 500 or error.status == 408:
            return RetryDecision.TRANSIENT
        return RetryDecision.NO_RETRY
    if isinstance(error, EngineTimeout | EngineConnectionError | EngineMalformedAnswer):
        return RetryDecision.TRANSIENT
    if isinstance(error, EngineError):
        return RetryDecision.TRANSIENT
    return RetryDecision.NO_RETRY


def next_wait(
    error: BaseException,
    attempts_made: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempts_made + 1``, or None to give up.

    Transient errors back off exponentially (``backoff_initial * 2**(n-1)``, capped at
    ``backoff_max``) with up to ``jitter`` of that wait added at random, so that many
    jobs failing together do not retry together. A 429 waits exactly what Retry-After
    says (never less), or a default second when it says nothing.
    """
    decision = classify(error)
    if decision is RetryDecision.NO_RETRY or attempts_made >= policy.max_attempts:
        return None
    if decision is RetryDecision.RATE_LIMITED:
        assert isinstance(error, EngineStatusError)
        if error.retry_after is not None:
            return max(0.0, error.retry_after)
        return RATE_LIMIT_DEFAULT_WAIT
    base = min(policy.backoff_max, policy.backoff_initial * 2 ** max(0, attempts_made - 1))
    r = (rng or random).random()
    return min(policy.backoff_max, base * (1.0 + policy.jitter * r))
