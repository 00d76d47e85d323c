"""The inference router: every model call of every agent goes through here.

Jobs enter an admission queue ordered by priority class; a dispatcher hands each one to an
engine that serves its model and has a free request slot (least loaded relative to its
capacity and weight), so no engine ever has more than ``max_requests`` requests in flight.
A failed request is classified (``retry.classify``) and either retried after the wait
``retry.next_wait`` gives, or ends its job with the error. Every request, good or bad, is
handed to the call recorder (the store's ``llm_calls``) and counted in the accounting.

Concurrency: one asyncio event loop, no locks. The dispatcher is the only place that takes
capacity, and it runs between awaits, so the in-flight counts it reads are exact.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from agentos.errors import AgentosError, EngineError, NoEngineError
from agentos.router.client import EngineClient, EngineInfo, answer_text, usage_tokens
from agentos.router.jobs import (
    PRIORITY_RANK,
    CallRecord,
    Completion,
    InferenceRequest,
    Job,
    RetryPolicy,
)
from agentos.router.queue import AdmissionQueue
from agentos.router.retry import classify, next_wait
from agentos.router.stats import EngineStats, ProcessStats


class CallRecorder(Protocol):
    """Where the router reports each request it made (the store, in practice)."""

    def record_call(self, call: CallRecord) -> None: ...


@dataclass
class EngineHandle:
    """An engine as the router uses it: its client, what it serves, and its counters."""

    name: str
    client: EngineClient
    info: EngineInfo
    max_requests: int
    max_batch_size: int = 1
    weight: float = 1.0
    kind: str = "openai"
    stats: EngineStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = EngineStats(
            name=self.name,
            endpoint=self.client.base_url,
            max_requests=self.max_requests,
            max_batch_size=self.max_batch_size,
        )

    @property
    def healthy(self) -> bool:
        return self.info.healthy

    def serves(self, request: InferenceRequest) -> bool:
        if not self.healthy or request.kind not in self.info.capabilities:
            return False
        return request.model is None or request.model in self.info.models

    def load(self) -> float:
        return self.stats.in_flight / (self.max_requests * max(self.weight, 1e-9))


class Router:
    """Use as ``async with Router(engines, recorder) as router: await router.submit(...)``."""

    def __init__(self, engines: Iterable[EngineHandle], recorder: CallRecorder | None = None):
        self.engines: dict[str, EngineHandle] = {e.name: e for e in engines}
        self.recorder = recorder
        self.queue = AdmissionQueue()
        self.processes: dict[str, ProcessStats] = {}
        self.started_at = time.monotonic()
        self.jobs_done = 0
        self.jobs_failed = 0
        self._wake = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._retrying = 0

    async def __aenter__(self) -> Router:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._dispatcher = self._group.create_task(self._dispatch_loop(), name="router-dispatch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None and self._dispatcher is not None
        self._dispatcher.cancel()
        await self._group.__aexit__(exc_type, exc, tb)

    def check_servable(self, request: InferenceRequest, engine: str | None = None) -> None:
        """Raise NoEngineError naming what is missing when no healthy engine can serve."""
        if engine is not None and engine not in self.engines:
            known = ", ".join(self.engines) or "none"
            raise NoEngineError(f"unknown engine '{engine}' (configured: {known})")
        pool = [self.engines[engine]] if engine else list(self.engines.values())
        if any(e.serves(request) for e in pool):
            return
        described = "; ".join(
            f"{e.name}: "
            + (
                f"models {', '.join(e.info.models) or 'none'}, "
                f"capabilities {', '.join(e.info.capabilities) or 'none'}"
                if e.healthy
                else f"unhealthy ({e.info.detail})"
            )
            for e in pool
        )
        what = f"model '{request.model}'" if request.model else "any model"
        raise NoEngineError(
            f"no engine serves {what} for {request.kind} requests "
            f"({described or 'no engines configured'})"
        )

    async def submit(
        self,
        request: InferenceRequest,
        *,
        priority: str = "user",
        engine: str | None = None,
        retry: RetryPolicy | None = None,
        run_id: str | None = None,
        process: str = "",
        job_id: str | None = None,
    ) -> Completion:
        """Queue one request and wait for its answer; raises the error that ended it."""
        if priority not in PRIORITY_RANK:
            raise AgentosError(
                f"unknown priority class {priority!r} (one of {', '.join(PRIORITY_RANK)})"
            )
        self.check_servable(request, engine)
        loop = asyncio.get_running_loop()
        job = Job(
            id=job_id or uuid.uuid4().hex,
            request=request,
            priority=priority,
            engine=engine,
            retry=retry or RetryPolicy(),
            run_id=run_id,
            process=process,
            future=loop.create_future(),
        )
        self.queue.push(job)
        self._wake.set()
        assert job.future is not None
        return await job.future

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            assert self._group is not None
            for job, engine in self._take_startable():
                self._group.create_task(self._execute(engine, job), name=f"job-{job.id}")

    def _take_startable(self) -> list[tuple[Job, EngineHandle]]:
        chosen: list[tuple[Job, EngineHandle]] = []

        def can_start(job: Job) -> bool:
            pool = [self.engines[job.engine]] if job.engine else self.engines.values()
            free = [e for e in pool if e.serves(job.request) and e.stats.in_flight < e.max_requests]
            if not free:
                return False
            engine = min(free, key=EngineHandle.load)
            engine.stats.request_started()
            chosen.append((job, engine))
            return True

        self.queue.take(can_start)
        return chosen

    def _process(self, name: str) -> ProcessStats:
        stats = self.processes.get(name)
        if stats is None:
            stats = self.processes[name] = ProcessStats(name=name)
        return stats

    async def _execute(self, engine: EngineHandle, job: Job) -> None:
        """One request for one job on one engine; the slot was taken by the dispatcher."""
        job.attempts += 1
        request = job.request
        model = request.model or engine.info.models[0]
        path, body = engine.client.build_body(request, model)
        process = self._process(job.process)
        process.requests += 1
        if job.attempts == 1:
            process.wait_total_s += time.monotonic() - job.created_at
        started_wall = time.time()
        t0 = time.monotonic()
        call_id = uuid.uuid4().hex
        try:
            response = await engine.client.send(path, body)
            if request.kind == "embeddings":
                embedding = [float(x) for x in response["data"][0]["embedding"]]
                text = ""
            else:
                embedding = None
                text = answer_text(path, response)
        except asyncio.CancelledError:
            engine.stats.request_finished(jobs=1, ok=False, duration_s=time.monotonic() - t0)
            self._wake.set()
            raise
        except (EngineError, KeyError, TypeError, ValueError) as exc:
            error: AgentosError | Exception = exc
            if not isinstance(exc, EngineError):
                from agentos.errors import EngineMalformedAnswer

                error = EngineMalformedAnswer(
                    f"unexpected answer shape: {exc!r}", engine=engine.name
                )
            duration = time.monotonic() - t0
            engine.stats.request_finished(jobs=1, ok=False, duration_s=duration)
            self._record(
                job, engine, call_id, model, request.kind, body, None, error, started_wall, duration
            )
            self._wake.set()
            await self._after_failure(job, engine, error)
            return
        duration = time.monotonic() - t0
        prompt_tokens, completion_tokens = usage_tokens(response)
        engine.stats.request_finished(
            jobs=1,
            ok=True,
            duration_s=duration,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        self._wake.set()
        self._record(
            job, engine, call_id, model, request.kind, body, response, None, started_wall, duration
        )
        process.jobs += 1
        process.prompt_tokens += prompt_tokens
        process.completion_tokens += completion_tokens
        self.jobs_done += 1
        assert job.future is not None
        if not job.future.done():
            job.future.set_result(
                Completion(
                    text=text,
                    engine=engine.name,
                    model=model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_ms=duration * 1000,
                    call_id=call_id,
                    response=response,
                    embedding=embedding,
                )
            )

    async def _after_failure(self, job: Job, engine: EngineHandle, error: Exception) -> None:
        wait = next_wait(error, job.attempts, job.retry)
        assert job.future is not None
        if wait is None or job.future.done():
            engine.stats.job_failed()
            self._process(job.process).failed_jobs += 1
            self.jobs_failed += 1
            if not job.future.done():
                job.future.set_exception(error)
            return
        self._retrying += 1
        try:
            await asyncio.sleep(wait)
        finally:
            self._retrying -= 1
        if not job.future.done():
            self.queue.push(job)
            self._wake.set()

    def _record(
        self,
        job: Job,
        engine: EngineHandle,
        call_id: str,
        model: str,
        kind: str,
        body: dict[str, Any],
        response: dict[str, Any] | None,
        error: Exception | None,
        started_wall: float,
        duration: float,
    ) -> None:
        if self.recorder is None:
            return
        prompt_tokens, completion_tokens = usage_tokens(response) if response else (0, 0)
        self.recorder.record_call(
            CallRecord(
                id=call_id,
                run_id=job.run_id,
                job_id=job.id,
                attempt=job.attempts,
                engine=engine.name,
                model=model,
                kind=kind,
                request=body,
                response=response,
                status="ok" if error is None else "error",
                error=str(error) if error is not None else None,
                error_class=(
                    f"{type(error).__name__}/{classify(error).value}" if error is not None else None
                ),
                http_status=getattr(error, "status", None) if error is not None else 200,
                latency_ms=duration * 1000,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                started_at=started_wall,
                finished_at=started_wall + duration,
            )
        )

    def snapshot(self) -> dict[str, Any]:
        """The accounting as ``top`` shows it, at this instant."""
        now = time.monotonic()
        engines = [e.stats.snapshot(now) for e in self.engines.values()]
        return {
            "uptime_s": round(now - self.started_at, 3),
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "requests": sum(e["requests"] for e in engines),
            "request_time_s": round(sum(e["busy_s"] for e in engines), 4),
            "idle_s": round(sum(e["idle_s"] for e in engines), 4),
            "waiting": len(self.queue),
            "retrying": self._retrying,
            "engines": engines,
            "processes": [p.snapshot() for p in self.processes.values()],
        }
