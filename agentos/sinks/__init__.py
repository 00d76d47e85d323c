"""Sinks: durable queues in SQLite between agents (an agent's results become the items
that start the runs of the agents reading the sink).

``store`` holds the queue itself (:class:`SinkStore`: publish, claim, ack, nack, wait) and
the result hook that publishes to output sinks; ``stats`` what ``agentos sinks`` shows.
"""

from agentos.sinks.stats import sink_readers, sink_stats, sinks_table
from agentos.sinks.store import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    DELIVERY_STATUSES,
    DeliveryStatus,
    SinkItem,
    SinkStore,
    canonical_json,
    default_dedupe_key,
    item_data,
    publisher,
)

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DELIVERY_STATUSES",
    "DeliveryStatus",
    "SinkItem",
    "SinkStore",
    "canonical_json",
    "default_dedupe_key",
    "item_data",
    "publisher",
    "sink_readers",
    "sink_stats",
    "sinks_table",
]
