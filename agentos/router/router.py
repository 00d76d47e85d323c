"""The inference router: every model call of every agent goes through here.

Jobs enter the admission queue (``queue.py``): intake first, then groups of compatible
jobs with one FIFO per priority class and aging. The dispatcher repeatedly picks the group
whose best job has the best effective priority among those an engine can take *now*, and
sends a batch of it to the least loaded engine (load relative to capacity and weight,
penalised by recent failures and latency). A group goes to a prompt-batching engine as
one ``/v1/completions`` request when it is full (``max_batch_size``) or when its oldest job
has waited ``batch_window``; chat and other requests go one job per request, concurrently
up to the engine's limit. No engine ever has more requests in flight than its limit.

Failures: a failed request is classified (``retry.py``). A failed batch's jobs are retried
one by one, preferring another engine that can serve them; an engine that keeps failing
is cooled down and probed before it gets traffic again (``health.py``). While no engine
can serve a job it waits, up to its deadline, and the router says so through
``notices`` at once and every ``notice_every_s`` while it waits: which engines do not
answer, why, and when the first waiting job fails. A job whose every engine has never
answered since start-up (``EngineHandle.answered``: down when agentos started, models
given in config) fails at once instead of waiting out the deadline in silence. Every job
ends exactly once, done or failed, with its reason; every request is handed to the call
recorder.

Concurrency: one asyncio event loop, no locks. The dispatcher is the only place that
takes capacity, and it runs between awaits, so the in-flight counts it reads are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from agentos.errors import (
    AgentosError,
    EngineError,
    EngineMalformedAnswer,
    NoEngineError,
)
from agentos.ids import new_id
from agentos.router.batch import batch_body, job_body, share_usage, split_answers
from agentos.router.chat_template import ChatTemplateError
from agentos.router.detection import detect_engine
from agentos.router.handle import (
    AnswerCache,
    CallRecorder,
    EngineHandle,
    RouterSettings,
    refused_content,
)
from agentos.router.jobs import (
    PRIORITY_RANK,
    Completion,
    InferenceRequest,
    Job,
    RetryPolicy,
)
from agentos.router.queue import AdmissionQueue, Group
from agentos.router.records import cache_hit_record, record_request
from agentos.router.retry import RetryDecision, classify, next_wait
from agentos.router.stats import ProcessStats
from agentos.router.waiting import WaitingNotices

__all__ = ["AnswerCache", "CallRecorder", "EngineHandle", "Router", "RouterSettings"]


class Router:
    """Use as ``async with Router(engines, recorder) as router: await router.submit(...)``."""

    def __init__(
        self,
        engines: Iterable[EngineHandle],
        recorder: CallRecorder | None = None,
        *,
        settings: RouterSettings | None = None,
        cache: AnswerCache | None = None,
        notices: Callable[[str], None] | None = None,
    ) -> None:
        """``notices`` gets a line for the person watching whenever jobs start or keep
        waiting for engines that do not answer, and when such an engine answers again."""
        self.settings = settings or RouterSettings()
        self.engines: dict[str, EngineHandle] = {e.name: e for e in engines}
        for engine in self.engines.values():
            engine.health.threshold = self.settings.failure_threshold
            engine.health.cooldown = engine.health.current_cooldown = self.settings.cooldown_s
            engine.health.cooldown_max = self.settings.cooldown_max_s
            engine.client.max_answer_bytes = self.settings.max_answer_bytes
        self.recorder = recorder
        self.cache = cache
        self.queue = AdmissionQueue(aging_s=self.settings.aging_s)
        self.processes: dict[str, ProcessStats] = {}
        self.started_at = time.monotonic()
        self.jobs_done = 0
        self.jobs_failed = 0
        self.cache_hits = 0
        self.planning_s = 0.0
        self.retrying = 0
        self._wake = asyncio.Event()
        self._next_wake: float | None = None
        self._group: asyncio.TaskGroup | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._probing: set[str] = set()
        self._executing: dict[asyncio.Task[None], list[Job]] = {}
        """Requests in flight, with their jobs."""
        self.notices = notices
        self._waiting = WaitingNotices(self.engines, self.settings.notice_every_s)

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
        for job in list(self.queue.all_jobs()):
            if job.future is not None and not job.future.done():
                job.future.cancel()
        # once the router closes nobody can wait for an answer: requests still in flight
        # (a client of agentos serve gone at shutdown, a cancelled run's) are cancelled
        # rather than waited for
        for task, jobs in list(self._executing.items()):
            task.cancel()
            for job in jobs:
                if job.future is not None and not job.future.done():
                    job.future.cancel()
        await self._group.__aexit__(exc_type, exc, tb)

    # -- submitting ---------------------------------------------------------------------

    def check_servable(self, request: InferenceRequest, engine: str | None = None) -> None:
        """Raise NoEngineError naming what is missing when no configured engine offers the
        request's model and kind. Engines that offer it but are cooling down count: the job
        waits for them (up to its deadline) instead of failing."""
        if engine is not None and engine not in self.engines:
            known = ", ".join(self.engines) or "none"
            raise NoEngineError(f"unknown engine '{engine}' (configured: {known})")
        pool = [self.engines[engine]] if engine else list(self.engines.values())
        if any(e.offers(request) for e in pool):
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

    def check_answered(self, request: InferenceRequest, engine: str | None = None) -> None:
        """Raise NoEngineError when every engine that offers the request has never
        answered since start-up: waiting for one until the deadline would only be a
        silent way to fail later."""
        pool = [self.engines[engine]] if engine else list(self.engines.values())
        offering = [e for e in pool if e.offers(request)]
        if not offering or any(e.answered for e in offering):
            return
        what = f"model '{request.model}'" if request.model else f"{request.kind} requests"
        described = "; ".join(f"{e.name} at {e.client.base_url}: {e.trouble()}" for e in offering)
        raise NoEngineError(
            f"no engine for {what} has answered since agentos started, so the job fails at "
            f"once instead of waiting for one ({described})"
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
        use_cache: bool = True,
        deadline_s: float | None = None,
    ) -> Completion:
        """Queue one request and wait for its answer; raises the error that ended it."""
        if priority not in PRIORITY_RANK:
            raise AgentosError(
                f"unknown priority class {priority!r} (one of {', '.join(PRIORITY_RANK)})"
            )
        self.check_servable(request, engine)
        self.check_answered(request, engine)
        now = time.monotonic()
        job = Job(
            id=job_id or new_id(),
            request=request,
            priority=priority,
            engine=engine,
            retry=retry or RetryPolicy(),
            run_id=run_id,
            process=process,
            created_at=now,
            enqueued_at=now,
            deadline=now + (self.settings.deadline_s if deadline_s is None else deadline_s),
            use_cache=use_cache,
            future=asyncio.get_running_loop().create_future(),
        )
        process_stats = self._process(process)
        if use_cache and self.cache is not None:
            hit = self._from_cache(job)
            if hit is not None:
                return hit
        process_stats.queued += 1
        self.queue.push(job)
        self._wake.set()
        assert job.future is not None
        try:
            return await job.future
        finally:
            process_stats.queued -= 1

    def reject(self, completion: Completion) -> None:
        """The agent refused ``completion`` (its parser could not use it): it is not served
        from the cache again (``cache.py``, rejected answers)."""
        if self.cache is not None and completion.cache_key is not None:
            self.cache.reject(completion.cache_key, completion.text)

    def _from_cache(self, job: Job) -> Completion | None:
        """The cached answer for the job as one of the engines that may serve it would
        send it (its model and :meth:`EngineHandle.cache_shape`), or None."""
        assert self.cache is not None
        request = job.request
        pool = [self.engines[job.engine]] if job.engine else list(self.engines.values())
        asked: list[tuple[str, dict[str, Any]]] = []
        for handle in pool:
            if not handle.offers(request):
                continue
            model = request.model or handle.info.models[0]
            shape = handle.cache_shape(request)
            if (model, shape) in asked:
                continue
            asked.append((model, shape))
            cached = self.cache.get(request, model, shape=shape)
            if cached is None:
                continue
            call_id = new_id()
            now = time.time()
            self.cache_hits += 1
            self.jobs_done += 1
            process = self._process(job.process)
            process.jobs += 1
            process.cache_hits += 1
            if self.recorder is not None:
                self.recorder.record_call(cache_hit_record(job, cached, model, call_id, now))
            return Completion(
                text=cached.text,
                engine=cached.engine,
                model=model,
                prompt_tokens=cached.prompt_tokens,
                completion_tokens=cached.completion_tokens,
                latency_ms=0.0,
                call_id=call_id,
                response=cached.response,
                embedding=cached.embedding,
                cache_hit=True,
                cache_key=cached.key,
            )
        return None

    # -- dispatching --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        last_sweep = 0.0
        while True:
            timeout = None
            if self._next_wake is not None:
                timeout = max(0.0, self._next_wake - time.monotonic())
            if (
                len(self.queue)
                or any(not e.health.available for e in self.engines.values())
                or self._waiting.said
            ):
                # waiting jobs have deadlines, cooled-down engines need probes, and a
                # notice that jobs waited is followed by one that they go on
                timeout = 0.5 if timeout is None else min(timeout, 0.5)
            if timeout is None or timeout > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that lands in the same loop turn as a wake-up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            t0 = time.monotonic()
            if t0 - last_sweep >= 0.5:
                self._sweep(t0)
                last_sweep = t0
            assert self._group is not None
            for engine, jobs in self._plan(t0):
                task = self._group.create_task(
                    self._execute(engine, jobs), name=f"batch-{engine.name}"
                )
                self._executing[task] = jobs
                task.add_done_callback(self._executing.pop)
            self.planning_s += time.monotonic() - t0

    def _sweep(self, now: float) -> None:
        """Fail jobs past their deadline, drop cancelled ones, start due health probes."""
        doomed: set[str] = set()
        for job in self.queue.all_jobs():
            assert job.future is not None
            if job.future.done():
                doomed.add(job.id)
            elif now >= job.deadline:
                doomed.add(job.id)
                self._fail(job, None, self._deadline_error(job))
        if doomed:
            self.queue.purge(doomed)
        if self.notices is not None:
            self._waiting.report(self.queue.all_jobs(), now, self.notices)
        assert self._group is not None
        for engine in self.engines.values():
            if engine.name not in self._probing and engine.health.probe_due(now):
                self._probing.add(engine.name)
                self._group.create_task(self._probe(engine), name=f"probe-{engine.name}")

    def _deadline_error(self, job: Job) -> NoEngineError:
        states = ", ".join(
            f"{e.name} {e.health.state}" for e in self.engines.values() if e.offers(job.request)
        )
        return NoEngineError(
            f"no engine could serve the job before its deadline ({states or 'none offers it'})"
        )

    def _plan(self, now: float) -> list[tuple[EngineHandle, list[Job]]]:
        """Decide which batches start now: best effective priority first, each on the least
        loaded engine that can take it, until no engine has room or no group is ready."""
        self.queue.sort_intake()
        self._next_wake = None
        started: list[tuple[EngineHandle, list[Job]]] = []
        latencies = [e.health.latency_ewma for e in self.engines.values() if e.health.latency_ewma]
        best_latency = min(latencies) if latencies else None
        while True:
            free = [e for e in self.engines.values() if e.has_room()]
            if not free:
                break
            choice: tuple[float, Group, EngineHandle, int] | None = None
            for group in self.queue.active_groups():
                request = group.sample.request
                pinned = group.sample.engine
                engines = [
                    e for e in free if (pinned is None or e.name == pinned) and e.serves(request)
                ]
                if not engines:
                    continue
                preferred = [e for e in engines if e.name not in group.sample.avoid] or engines
                engine = min(preferred, key=lambda e: e.load(best_latency))
                cap = engine.batch_cap(request)
                if cap > 1 and group.size < cap:
                    window = (
                        engine.batch_window_s
                        if engine.batch_window_s is not None
                        else self.settings.batch_window_s
                    )
                    due = group.oldest_enqueued() + window
                    if due > now:
                        if self._next_wake is None or due < self._next_wake:
                            self._next_wake = due
                        continue
                score = group.effective_priority(now, self.settings.aging_s)
                if choice is None or score < choice[0]:
                    choice = (score, group, engine, cap)
            if choice is None:
                break
            _, group, engine, cap = choice
            jobs = self.queue.take(group, cap, now)
            engine.stats.request_started(now)
            started.append((engine, jobs))
        return started

    # -- executing ----------------------------------------------------------------------

    def _process(self, name: str) -> ProcessStats:
        stats = self.processes.get(name)
        if stats is None:
            stats = self.processes[name] = ProcessStats(name=name)
        return stats

    async def _execute(self, engine: EngineHandle, jobs: list[Job]) -> None:
        """One request for a batch of jobs on one engine; the slot was taken by _plan. A
        local engine started on first use is started here (its failure fails the jobs)."""
        if not engine.started:
            try:
                await engine.ensure_started()
            except AgentosError as exc:
                engine.stats.request_abandoned()
                self._wake.set()
                for job in jobs:
                    self._fail(job, engine, exc)
                return
            self._wake.set()
        request = jobs[0].request
        model = request.model or engine.info.models[0]
        try:
            path, body, template = batch_body(engine, jobs, model)
        except ChatTemplateError as exc:
            engine.stats.request_abandoned()
            self._wake.set()
            for job in jobs:
                self._fail(job, engine, exc)
            return
        batch_id = new_id() if len(jobs) > 1 else None
        started = time.monotonic()
        for name in {job.process for job in jobs}:
            self._process(name).requests += 1
        for job in jobs:
            job.attempts += 1
            job.last_engine = engine.name
            process = self._process(job.process)
            if job.attempts == 1:
                process.wait_total_s += started - job.created_at
                process.waited += 1
        started_wall = time.time()
        try:
            response = await engine.client.send(path, body)
            answers = split_answers(path, response, len(jobs), engine.name, template)
        except asyncio.CancelledError:
            engine.stats.request_finished(
                jobs=len(jobs), ok=False, duration_s=time.monotonic() - started
            )
            raise
        except (EngineError, KeyError, TypeError, ValueError, IndexError) as exc:
            error = (
                exc
                if isinstance(exc, EngineError)
                else EngineMalformedAnswer(f"unexpected answer shape: {exc!r}", engine=engine.name)
            )
            duration = time.monotonic() - started
            engine.stats.request_finished(jobs=len(jobs), ok=False, duration_s=duration)
            self._note_failure(engine, error)
            for index, job in enumerate(jobs):
                record_request(
                    self.recorder,
                    job,
                    engine,
                    model,
                    job_body(body, index, len(jobs)),
                    None,
                    error,
                    started_wall,
                    duration,
                    batch_id,
                    len(jobs),
                )
            self._wake.set()
            await self._retry_all(jobs, engine, error)
            return
        duration = time.monotonic() - started
        prompt_share, completion_share = share_usage(response, len(jobs))
        missing = [job for job, (text, _) in zip(jobs, answers, strict=True) if text is None]
        engine.stats.request_finished(
            jobs=len(jobs) - len(missing),
            ok=True,
            duration_s=duration,
            prompt_tokens=prompt_share * (len(jobs) - len(missing)),
            completion_tokens=completion_share * (len(jobs) - len(missing)),
        )
        engine.health.on_success(duration)
        engine.answered = True
        engine.last_error = ""
        self._wake.set()
        for index, (job, (text, choice)) in enumerate(zip(jobs, answers, strict=True)):
            own_body = job_body(body, index, len(jobs))
            if text is None or choice is None:
                error = EngineMalformedAnswer(
                    f"the answer to a batch of {len(jobs)} has no choice for prompt {index}",
                    engine=engine.name,
                )
                record_request(
                    self.recorder,
                    job,
                    engine,
                    model,
                    own_body,
                    None,
                    error,
                    started_wall,
                    duration,
                    batch_id,
                    len(jobs),
                )
                continue
            own_response = (
                response
                if len(jobs) == 1
                else {
                    **response,
                    ("data" if path.endswith("embeddings") else "choices"): [choice],
                    "usage": {"prompt_tokens": prompt_share, "completion_tokens": completion_share},
                }
            )
            call_id = record_request(
                self.recorder,
                job,
                engine,
                model,
                own_body,
                own_response,
                None,
                started_wall,
                duration,
                batch_id,
                len(jobs),
            )
            embedding = None
            if path.endswith("embeddings"):
                try:
                    embedding = [float(x) for x in choice["embedding"]]
                except (KeyError, TypeError, ValueError):
                    # e.g. llama-cpp-python's server without pooling: a vector per token
                    self._fail(
                        job,
                        engine,
                        EngineMalformedAnswer(
                            "the embedding is not one list of numbers", engine=engine.name
                        ),
                    )
                    continue
            self._succeed(
                job,
                Completion(
                    text=text,
                    engine=engine.name,
                    model=model,
                    prompt_tokens=prompt_share,
                    completion_tokens=completion_share,
                    latency_ms=(time.monotonic() - job.created_at) * 1000,
                    call_id=call_id,
                    response=own_response,
                    embedding=embedding,
                ),
            )
        if missing:
            await self._retry_all(
                missing,
                engine,
                EngineMalformedAnswer("answer missing from a batch", engine=engine.name),
            )

    def _note_failure(self, engine: EngineHandle, error: Exception) -> None:
        engine.last_error = error.message if isinstance(error, AgentosError) else repr(error)
        decision = classify(error)
        if decision is RetryDecision.RATE_LIMITED:
            engine.health.on_rate_limited()
        elif decision is RetryDecision.TRANSIENT:
            engine.health.on_failure()

    def _succeed(self, job: Job, completion: Completion) -> None:
        assert job.future is not None
        if job.future.done():
            return
        process = self._process(job.process)
        process.jobs += 1
        process.latency.add(time.monotonic() - job.created_at)
        process.prompt_tokens += completion.prompt_tokens
        process.completion_tokens += completion.completion_tokens
        self.jobs_done += 1
        if self.cache is not None and job.use_cache:
            engine = self.engines.get(completion.engine)
            completion.cache_key = self.cache.put(
                job.request,
                completion.model,
                text=completion.text,
                response=completion.response,
                embedding=completion.embedding,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                engine=completion.engine,
                shape=engine.cache_shape(job.request) if engine is not None else None,
            )
        job.future.set_result(completion)

    def _fail(self, job: Job, engine: EngineHandle | None, error: Exception) -> None:
        assert job.future is not None
        if job.future.done():
            return
        if engine is not None:
            engine.stats.job_failed()
        self._process(job.process).failed_jobs += 1
        self.jobs_failed += 1
        job.future.set_exception(error)

    async def _retry_all(self, jobs: list[Job], engine: EngineHandle, error: Exception) -> None:
        """Retry each job of a failed request on its own, after its backoff, preferring
        other engines; jobs out of attempts (or with a non-retryable error) fail."""
        batch = len(jobs) > 1
        waits: list[tuple[float, Job]] = []
        for job in jobs:
            limit = job.retry.max_attempts
            if batch or job.solo:
                limit = max(limit, self.settings.failover_attempts)
            policy = RetryPolicy(
                max_attempts=limit,
                backoff_initial=job.retry.backoff_initial,
                backoff_max=job.retry.backoff_max,
                jitter=job.retry.jitter,
            )
            wait = next_wait(error, job.attempts, policy)
            if wait is None and batch and job.attempts < limit and refused_content(error):
                wait = 0.0  # maybe one prompt's fault: each job alone gets its own verdict
            if wait is None or time.monotonic() + wait > job.deadline:
                self._fail(job, engine, error)
                continue
            if batch and classify(error) is not RetryDecision.RATE_LIMITED:
                # one by one; a rate-limited batch stays whole, splitting would multiply
                # requests against an engine that asks for fewer
                job.solo = True
                job.key = None
            job.avoid.add(engine.name)
            waits.append((time.monotonic() + wait, job))
        if not waits:
            return
        self.retrying += len(waits)
        pending = sorted(waits, key=lambda w: w[0])
        try:
            for due, job in pending:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                assert job.future is not None
                if not job.future.done():
                    if self._dispatcher is None or self._dispatcher.done():
                        job.future.cancel()  # the router is shutting down
                    else:
                        job.enqueued_at = time.monotonic()
                        self.queue.push(job)
                        self._wake.set()
                self.retrying -= 1
        except asyncio.CancelledError:
            for _, job in pending:
                if job.future is not None and not job.future.done():
                    job.future.cancel()
            raise

    async def _probe(self, engine: EngineHandle) -> None:
        """After a cooldown, ask the engine for its models; only a good answer lets
        traffic back in."""
        try:
            models = await engine.client.list_models()
        except EngineError as exc:
            engine.health.probe_failed()
            engine.info.detail = f"probe failed: {exc.message}"
            engine.last_error = f"health probe: {exc.message}"
        else:
            if not engine.info.healthy:
                # the configured models, where config gave them (what jobs ask for)
                info = await detect_engine(engine.client, engine.info.models or models or None)
                engine.info = info
                if not info.healthy:
                    engine.health.probe_failed()
                    engine.last_error = f"health probe: {info.detail}"
                    return
            engine.health.probe_succeeded()
            engine.info.detail = "ok"
            engine.answered = True
            engine.last_error = ""
            if self.notices is not None:
                self._waiting.back(engine.name, self.notices)
            self._wake.set()
        finally:
            self._probing.discard(engine.name)

    # -- accounting ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The accounting as ``top`` shows it, at this instant."""
        now = time.monotonic()
        engines = []
        for e in self.engines.values():
            snap = e.stats.snapshot(now)
            snap["circuit"] = e.health.state
            snap["limit"] = e.health.limit
            snap["healthy"] = e.health.available
            if e.server_pid is not None:
                snap.update(e.server_usage.read(e.server_pid(), now))
            engines.append(snap)
        requests = sum(e["requests"] for e in engines)
        oldest: dict[str, float] = {}
        for job in self.queue.all_jobs():
            if job.created_at < oldest.get(job.process, now):
                oldest[job.process] = job.created_at
        return {
            "uptime_s": round(now - self.started_at, 3),
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "cache_hits": self.cache_hits,
            "requests": requests,
            "jobs_per_request": round((self.jobs_done - self.cache_hits) / requests, 3)
            if requests
            else 0.0,
            "request_time_s": round(sum(e["busy_s"] for e in engines), 4),
            "idle_s": round(sum(e["idle_s"] for e in engines), 4),
            "waiting": self.queue.prioritized,
            "intake": len(self.queue.intake),
            "retrying": self.retrying,
            "planning_s": round(self.planning_s, 4),
            "engines": engines,
            "processes": [
                p.snapshot(now, now - oldest.get(p.name, now)) for p in self.processes.values()
            ],
        }
