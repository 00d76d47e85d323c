"""Retry decisions and waits (``agentos.router.retry``) and Retry-After parsing."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
    ParseError,
)
from agentos.router.client import parse_retry_after
from agentos.router.jobs import RetryPolicy
from agentos.router.retry import RATE_LIMIT_DEFAULT_WAIT, RetryDecision, classify, next_wait

NO_JITTER = RetryPolicy(max_attempts=10, backoff_initial=0.5, backoff_max=3.0, jitter=0.0)


class FixedDraw(random.Random):
    """A random source whose every draw is ``value``, to pin the jitter at its bounds."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def status(code: int, retry_after: float | None = None) -> EngineStatusError:
    return EngineStatusError(f"answered {code}", engine="e", status=code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (EngineTimeout("slow", engine="e"), RetryDecision.TRANSIENT),
        (EngineConnectionError("refused", engine="e"), RetryDecision.TRANSIENT),
        (EngineMalformedAnswer("not json", engine="e"), RetryDecision.TRANSIENT),
        (status(500), RetryDecision.TRANSIENT),
        (status(502), RetryDecision.TRANSIENT),
        (status(503), RetryDecision.TRANSIENT),
        (status(429), RetryDecision.RATE_LIMITED),
        (status(400), RetryDecision.NO_RETRY),
        (status(401), RetryDecision.NO_RETRY),
        (status(403), RetryDecision.NO_RETRY),
        (status(404), RetryDecision.NO_RETRY),
        (status(422), RetryDecision.NO_RETRY),
        (ParseError("bad answer"), RetryDecision.NO_RETRY),
        (ValueError("a bug"), RetryDecision.NO_RETRY),
    ],
)
def test_classify(error: BaseException, decision: RetryDecision) -> None:
    assert classify(error) is decision


def test_a_generic_engine_error_is_transient() -> None:
    assert classify(EngineError("something", engine="e")) is RetryDecision.TRANSIENT


def test_backoff_grows_exponentially_then_is_capped() -> None:
    error = EngineTimeout("slow", engine="e")
    waits = [next_wait(error, n, NO_JITTER) for n in range(1, 7)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_stays_within_its_bounds() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_initial=0.2, backoff_max=30.0, jitter=0.5)
    error = status(500)
    rng = random.Random(7)
    for attempts in (1, 2, 3):
        base = 0.2 * 2 ** (attempts - 1)
        waits = [next_wait(error, attempts, policy, rng) for _ in range(300)]
        assert all(w is not None and base <= w <= base * 1.5 for w in waits)
        assert len(set(waits)) > 1, "jitter must spread the waits"
    assert next_wait(error, 1, policy, FixedDraw(0.0)) == pytest.approx(0.2)
    assert next_wait(error, 1, policy, FixedDraw(0.999)) == pytest.approx(0.2 * 1.4995)


def test_jitter_never_passes_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_initial=1.0, backoff_max=2.5, jitter=1.0)
    assert next_wait(status(503), 2, policy, FixedDraw(0.99)) == 2.5
    assert next_wait(status(503), 5, policy, FixedDraw(0.0)) == 2.5


def test_429_waits_what_retry_after_says() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=1.0)
    assert next_wait(status(429, retry_after=0.3), 1, policy, FixedDraw(0.9)) == 0.3
    assert next_wait(status(429, retry_after=7.0), 1, policy) == 7.0  # even above backoff_max
    assert next_wait(status(429, retry_after=0.0), 2, policy) == 0.0


def test_429_without_retry_after_waits_the_default() -> None:
    assert next_wait(status(429), 1, RetryPolicy()) == RATE_LIMIT_DEFAULT_WAIT


def test_no_wait_once_attempts_are_exhausted() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.01)
    assert next_wait(status(500), 2, policy) is not None
    assert next_wait(status(500), 3, policy) is None
    assert next_wait(status(429, retry_after=1.0), 3, policy) is None
    assert next_wait(EngineTimeout("slow"), 1, RetryPolicy(max_attempts=1)) is None


@pytest.mark.parametrize("error", [status(400), status(404), ValueError("a bug")])
def test_no_wait_for_errors_not_worth_retrying(error: BaseException) -> None:
    assert next_wait(error, 1, RetryPolicy(max_attempts=5)) is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.3", 0.3), (" 12 ", 12.0), ("0", 0.0), ("-5", 0.0)],
)
def test_parse_retry_after_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = parse_retry_after(future)
    assert wait is not None and 25.0 <= wait <= 30.5
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert parse_retry_after(past) == 0.0


@pytest.mark.parametrize(
    "header", [None, "", "soon", "Someday, 99 Foo 20xx", "inf", "1e999", "nan"]
)
def test_parse_retry_after_unusable(header: str | None) -> None:
    assert parse_retry_after(header) is None
