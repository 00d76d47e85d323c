"""The router's call recorder backed by the store: one ``llm_calls`` row per request."""

from __future__ import annotations

import dataclasses

from agentos.router.jobs import CallRecord
from agentos.store import Store, queries


class StoreCallRecorder:
    """Hands each request to the store's writer; never blocks the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record_call(self, call: CallRecord) -> None:
        fields = dataclasses.asdict(call)
        fields["cache_hit"] = int(call.cache_hit)
        queries.record_llm_call(self.store, **fields)
