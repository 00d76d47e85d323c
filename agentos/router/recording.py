"""The router's call recorder backed by the store: one ``llm_calls`` row per request."""

from __future__ import annotations

from typing import Any

from agentos.router.jobs import CallRecord
from agentos.store import Store, codec, digests
from agentos.store.writer import Insert


def call_row(call: CallRecord, mac: digests.Mac | None = None) -> dict[str, Any]:
    """The ``llm_calls`` row of ``call``, its request and response as JSON text, with its
    audit digest (:func:`agentos.store.digests.llm_call_digest`; ``mac`` carries the audit
    key, default none).

    Built field by field: ``dataclasses.asdict`` deep-copies the request and response
    dicts only for them to be serialized, and was the most expensive step of recording.
    Serializing here, on the caller's thread, also means a body changed after the call
    cannot change what is stored, and the digest is of exactly the text stored.
    """
    row = {
        "id": call.id,
        "run_id": call.run_id,
        "job_id": call.job_id,
        "attempt": call.attempt,
        "engine": call.engine,
        "model": call.model,
        "kind": call.kind,
        "request": codec.dumps(call.request),
        "response": None if call.response is None else codec.dumps(call.response),
        "status": call.status,
        "error": call.error,
        "error_class": call.error_class,
        "http_status": call.http_status,
        "latency_ms": call.latency_ms,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "batch_id": call.batch_id,
        "batch_size": call.batch_size,
        "cache_hit": int(call.cache_hit),
        "process": call.process or None,
        "started_at": call.started_at,
        "finished_at": call.finished_at,
    }
    row["digest"] = digests.llm_call_digest(mac or digests.mac_for(None), row)
    return row


class StoreCallRecorder:
    """Hands each request to the store's writer; never blocks the event loop. The audit
    key is read from the environment once, here."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mac = digests.mac_for(digests.audit_key())

    def record_call(self, call: CallRecord) -> None:
        self.store.submit(Insert("llm_calls", call_row(call, self.mac)))
