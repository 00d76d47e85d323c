"""Turning one job's part of one request into the ``CallRecord`` the store keeps."""

from __future__ import annotations

from typing import Any

from agentos.ids import new_id
from agentos.redaction import redact
from agentos.router.client import usage_tokens
from agentos.router.handle import CallRecorder, EngineHandle
from agentos.router.jobs import CallRecord, Job
from agentos.router.retry import classify


def record_request(
    recorder: CallRecorder | None,
    job: Job,
    engine: EngineHandle,
    model: str,
    body: dict[str, Any],
    response: dict[str, Any] | None,
    error: Exception | None,
    started_wall: float,
    duration: float,
    batch_id: str | None,
    batch_size: int,
) -> str:
    call_id = new_id()
    if recorder is None:
        return call_id
    prompt_tokens, completion_tokens = usage_tokens(response)
    recorder.record_call(
        CallRecord(
            id=call_id,
            run_id=job.run_id,
            job_id=job.id,
            attempt=job.attempts,
            engine=engine.name,
            model=model,
            kind=job.request.kind,
            request=body,
            response=response,
            status="ok" if error is None else "error",
            error=redact(str(error)) if error is not None else None,
            error_class=(
                f"{type(error).__name__}/{classify(error).value}" if error is not None else None
            ),
            http_status=getattr(error, "status", None) if error is not None else 200,
            latency_ms=duration * 1000,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            started_at=started_wall,
            finished_at=started_wall + duration,
            batch_id=batch_id,
            batch_size=batch_size,
            process=job.process,
        )
    )
    return call_id


def cache_hit_record(job: Job, cached: Any, model: str, call_id: str, now: float) -> CallRecord:
    """A job answered from the cache: recorded like a call, with no engine time spent."""
    return CallRecord(
        id=call_id,
        run_id=job.run_id,
        job_id=job.id,
        attempt=0,
        engine=cached.engine,
        model=model,
        kind=job.request.kind,
        request={"cache_key": cached.key},
        response=cached.response,
        status="ok",
        error=None,
        error_class=None,
        http_status=None,
        latency_ms=0.0,
        prompt_tokens=0,
        completion_tokens=0,
        started_at=now,
        finished_at=now,
        cache_hit=True,
        process=job.process,
    )
