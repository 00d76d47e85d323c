"""The values that flow through the router: what is asked, and what comes back.

Plain dataclasses (STYLE.md 3): they are created per model call, on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

RequestKind = Literal["chat", "completions", "embeddings"]

PRIORITY_RANK: dict[str, int] = {"system": 0, "kernel": 1, "user": 2, "background": 3}
"""Strict order of the priority classes: a lower rank is served first."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is retried on transient engine errors."""

    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5


@dataclass
class InferenceRequest:
    """One model call as an agent asks for it, before any engine is chosen.

    ``params`` holds the sampling parameters (temperature, max_tokens, seed, …) and is sent
    as given; ``json_schema`` is the answer's schema, which engines that support structured
    output receive as ``response_format``.
    """

    kind: RequestKind
    model: str | None = None
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    input: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    sample: int = 0
    """Which sample of otherwise identical requests this is (an agent's attempt k asks for
    sample k): sent as the sampling ``seed`` and part of the cache key when temperature > 0,
    so retries get new samples and a re-run through the cache gets the same sequence."""

    @property
    def temperature(self) -> float:
        value = self.params.get("temperature")
        return 1.0 if value is None else float(value)


@dataclass
class Completion:
    """The answer to one job, with where and how it was produced."""

    text: str
    engine: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    call_id: str
    response: dict[str, Any]
    embedding: list[float] | None = None
    cache_hit: bool = False
    cache_key: str | None = None
    """The response-cache entry this answer is stored as (or was served from); what
    ``Router.reject`` drops when the agent refuses the answer."""


@dataclass
class Job:
    """A request waiting for, or being served by, an engine.

    ``attempts`` counts the requests already made for it; ``future`` is resolved exactly
    once, with a Completion or with the error that ended the job.
    """

    id: str
    request: InferenceRequest
    priority: str = "user"
    engine: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    run_id: str | None = None
    process: str = ""
    created_at: float = field(default_factory=time.monotonic)
    enqueued_at: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")
    attempts: int = 0
    use_cache: bool = True
    solo: bool = False
    """Set after a failed batch: the job is retried in a request of its own."""
    avoid: set[str] = field(default_factory=set)
    """Engines that failed this job; others are preferred when one can serve it."""
    key: str | None = None
    last_engine: str | None = None
    future: asyncio.Future[Completion] | None = None

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self.priority]


@dataclass
class CallRecord:
    """One HTTP request to one engine, as the store's ``llm_calls`` table records it."""

    id: str
    run_id: str | None
    job_id: str
    attempt: int
    engine: str
    model: str
    kind: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    status: str
    error: str | None
    error_class: str | None
    http_status: int | None
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    finished_at: float
    batch_id: str | None = None
    batch_size: int = 1
    cache_hit: bool = False
    process: str = ""
    """The job's process (:attr:`Job.process`): who asked."""
