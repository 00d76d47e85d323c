"""Discovering an engine's capacity: what ``agentos engines --probe`` measures.

An engine's best ``max_batch_size`` and ``max_requests`` depend on hardware and server
settings that no config file knows, so the probe measures them. It sends short
``/v1/completions`` requests (distinct prompts, ``temperature`` 0, a few tokens each) and
measures prompts per second in two sweeps:

1. **Batch size** at concurrency 1: one request carrying a list of 1, 2, 4, … prompts.
   Only when the engine takes prompt lists (``prompt_batching``); otherwise the batch
   size stays 1, because such an engine would read a list as one odd prompt.
2. **Concurrency** at the batch size the first sweep suggests: 1, 2, 4, … streams, each
   sending its next request as soon as its previous one is answered.

A sweep stops raising its dimension at the first point whose throughput is not at least
10 % above the best so far (more does not help, and larger points only cost time), or
whose requests fail (a ``400`` for a batch that is too large, a ``429`` or ``503`` for too
much concurrency). The suggestion is the *smallest* value whose throughput is within 10 %
of the best error-free point: a smaller batch fills sooner and a lower concurrency leaves
room for other clients, so the last few per cent are not worth them. Measurements are
noisy, which is why both thresholds are relative and generous.

The whole probe is bounded by ``time_budget_s``; a point still running when the budget is
spent is dropped, and the suggestion uses the points measured before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentos.errors import EngineError, EngineMalformedAnswer
from agentos.router.client import EngineClient

COMPLETIONS_PATH = "/v1/completions"
IMPROVEMENT = 1.10
"""A point must beat the best so far by this factor for its dimension to be raised further."""
TOLERANCE = 0.90
"""The suggestion is the smallest value reaching this fraction of the best throughput."""


@dataclass
class ProbePoint:
    """One measured point: throughput and latency at one batch size and concurrency."""

    batch_size: int
    concurrency: int
    prompts_per_s: float
    """Prompts answered per second of wall time over the whole point (errors excluded)."""
    p50_ms: float
    """Median latency of the point's successful requests (0 when none succeeded)."""
    errors: int
    """Requests of the point that failed."""


@dataclass
class ProbeReport:
    """What the probe measured and what it suggests for the engine's config."""

    engine: str
    points: list[ProbePoint] = field(default_factory=list)
    suggested_max_batch_size: int = 1
    suggested_max_requests: int = 1
    notes: list[str] = field(default_factory=list)


@dataclass
class _PointResult:
    point: ProbePoint
    first_error: str | None


class _PromptSource:
    """Distinct prompts, so that no server-side prompt cache answers a probe for free."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, n: int) -> list[str]:
        start = self._next
        self._next += n
        return [f"Probe {i}: name one colour." for i in range(start, start + n)]


async def probe_engine(
    client: EngineClient,
    model: str,
    *,
    prompt_batching: bool,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    concurrencies: Sequence[int] = (1, 2, 4, 8),
    requests_per_point: int = 6,
    max_tokens: int = 4,
    time_budget_s: float = 60.0,
) -> ProbeReport:
    """Measure ``client``'s engine serving ``model`` and suggest its batch size and limit.

    ``requests_per_point`` is the number of requests *each* concurrent stream sends at one
    point, so every point measures a steady state rather than one wave of requests. One
    warm-up request goes first and is not measured; its failure (the engine is down, or
    does not serve ``model`` completions) is raised as the ``EngineError`` it is.
    """
    report = ProbeReport(engine=client.name)
    prompts = _PromptSource()
    deadline = time.monotonic() + time_budget_s
    await client.send(COMPLETIONS_PATH, _body(model, prompts.take(1), max_tokens))

    sizes = sorted({max(1, b) for b in batch_sizes}) or [1]
    if not prompt_batching:
        sizes = [1]
        report.notes.append("prompt batching off: every request carries one prompt")
    batch_points = await _sweep(
        report,
        sizes,
        "batch size",
        deadline,
        lambda b: _measure(client, model, prompts, b, 1, requests_per_point, max_tokens),
    )
    report.suggested_max_batch_size = _suggest(batch_points, "batch_size", report)

    levels = sorted({max(1, c) for c in concurrencies}) or [1]
    batch = report.suggested_max_batch_size
    known = {p.concurrency: p for p in batch_points if p.batch_size == batch and not p.errors}
    concurrency_points = await _sweep(
        report,
        levels,
        "concurrency",
        deadline,
        lambda c: _measure(client, model, prompts, batch, c, requests_per_point, max_tokens),
        known=known,
    )
    report.suggested_max_requests = _suggest(concurrency_points, "concurrency", report)
    return report


async def _sweep(
    report: ProbeReport,
    values: list[int],
    dimension: str,
    deadline: float,
    measure: Callable[[int], Awaitable[_PointResult]],
    *,
    known: dict[int, ProbePoint] | None = None,
) -> list[ProbePoint]:
    """Measure at rising ``values`` until throughput stops improving, errors appear or the
    time budget is spent; returns this sweep's points. Points in ``known`` (already
    measured by the other sweep, keyed by value) are reused, not measured or listed again.
    """
    points: list[ProbePoint] = []
    best = 0.0
    for value in values:
        remaining = deadline - time.monotonic()
        result: _PointResult | None = None
        if known and value in known:
            result = _PointResult(known[value], None)
        elif remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    result = await measure(value)
        if result is None:
            report.notes.append(
                f"time budget spent before {dimension} {value} was measured; "
                "the suggestion uses the points before it"
            )
            break
        point = result.point
        points.append(point)
        if not (known and value in known):
            report.points.append(point)
        if result.first_error is not None:
            report.notes.append(
                f"{dimension} {value}: {point.errors} of its requests failed "
                f"({result.first_error}); not raised further"
            )
            break
        if point.prompts_per_s < best * IMPROVEMENT:
            report.notes.append(
                f"{dimension} {value}: {point.prompts_per_s:.1f} prompts/s is not "
                f"{round((IMPROVEMENT - 1) * 100)}% above the best so far ({best:.1f}); "
                "not raised further"
            )
            break
        best = max(best, point.prompts_per_s)
    return points


def _suggest(points: list[ProbePoint], attribute: str, report: ProbeReport) -> int:
    """The smallest value of ``attribute`` whose throughput is within ``TOLERANCE`` of the
    best error-free point; 1 (with a note) when no point succeeded."""
    clean = [p for p in points if p.errors == 0 and p.prompts_per_s > 0]
    if not clean:
        report.notes.append(f"no {attribute.replace('_', ' ')} was measured without errors")
        return 1
    best = max(p.prompts_per_s for p in clean)
    good = [p for p in clean if p.prompts_per_s >= best * TOLERANCE]
    value: int = min(getattr(p, attribute) for p in good)
    return value


async def _measure(
    client: EngineClient,
    model: str,
    prompts: _PromptSource,
    batch_size: int,
    concurrency: int,
    requests_per_stream: int,
    max_tokens: int,
) -> _PointResult:
    """One point: ``concurrency`` streams, each sending ``requests_per_stream`` requests of
    ``batch_size`` prompts back to back."""
    latencies: list[float] = []
    answered = 0
    errors = 0
    first_error: str | None = None

    async def stream() -> None:
        nonlocal answered, errors, first_error
        for _ in range(requests_per_stream):
            body = _body(model, prompts.take(batch_size), max_tokens)
            t0 = time.perf_counter()
            try:
                response = await client.send(COMPLETIONS_PATH, body)
                choices = len(response["choices"])
                if choices != batch_size:
                    raise EngineMalformedAnswer(
                        f"{choices} choices for {batch_size} prompts", engine=client.name
                    )
            except EngineError as exc:
                errors += 1
                if first_error is None:
                    first_error = exc.message
                continue
            latencies.append(time.perf_counter() - t0)
            answered += batch_size

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(stream())
    elapsed = time.perf_counter() - started
    point = ProbePoint(
        batch_size=batch_size,
        concurrency=concurrency,
        prompts_per_s=answered / elapsed if elapsed > 0 else 0.0,
        p50_ms=statistics.median(latencies) * 1000 if latencies else 0.0,
        errors=errors,
    )
    return _PointResult(point, first_error)


def _body(model: str, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    """A completions body; a single prompt goes as a string, which every server takes."""
    prompt: str | list[str] = prompts[0] if len(prompts) == 1 else prompts
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
