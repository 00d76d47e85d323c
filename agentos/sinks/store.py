"""Sinks: named, durable queues in SQLite between agents.

An agent with an ``output_sink`` publishes each parsed result as an *item* of that sink;
every agent whose ``input_sink`` is that sink gets every item as a job (fan-out:
consumers are agent names, and each keeps its own delivery state per item). Items live in
``sink_items``, one row per item; ``sink_deliveries`` holds one row per (item, consumer)
once that consumer has claimed it. An item without a delivery row for a consumer is
pending for it, so a reader added later starts with the whole backlog.

Guarantees, and why they hold:

- **Durable.** :meth:`SinkStore.publish` commits before it returns, so an item survives a
  crash of its producer from then on. :meth:`SinkStore.publish_op` is the same insert as a
  write op for the store's writer (never blocks the event loop; durable once the writer
  commits it, and committed after every write queued before it, e.g. the result it
  came from).
- **De-duplicated.** ``UNIQUE(sink, dedupe_key)``; the default key is the SHA-256 of the
  item's canonical JSON, so the same result published twice (a run redone after a crash,
  a cached answer) is one item. A duplicate is ignored, never an error.
- **Claims are exclusive.** A claim is one ``BEGIN IMMEDIATE`` transaction on the sink
  store's own connection: it takes SQLite's write lock before reading what is free, so two
  runtimes (threads or processes) never both hold one item for one consumer.
- **At-least-once.** A claim is a lease (``lease_s``); an item whose lease ran out (its
  holder crashed or hung) is claimable again, and its ``attempts`` count up. A claim
  whose holder is provably gone (:mod:`agentos.store.owners`: a dead process on this
  host, a silent heartbeat from another) does not wait for its lease: every claim first
  sweeps the gone owners, which ends their leases now. An item a
  consumer acknowledged is never delivered to that consumer again. After
  ``max_attempts`` claims without an ack (nacks, or leases that ran out) it is marked
  ``failed`` and no longer delivered, so one poison item cannot loop forever.
- **Outputs before acks.** :meth:`SinkStore.ack` flushes the store's writer before it
  commits, so whatever the consuming run wrote through the writer (its results, the items
  it published) is committed before its input counts as done: a crash in between
  redelivers the input (and de-duplication absorbs the repeated output), it never loses
  one. :meth:`SinkStore.ack_op` gives the same guarantee by queueing the ack behind those
  writes; put it in an :class:`~agentos.store.writer.Atomic` with the consumer's own
  writes and the work and its ack commit together (nothing done twice).

Delivery states (``sink_deliveries.status``): ``claimed`` (held under a lease),
``pending`` (released by a nack; claimable once ``lease_until`` has passed), ``done``,
``failed``.

Every method but :meth:`SinkStore.wait` blocks on SQLite for one short transaction (a
claim may wait up to the busy timeout for another writer); from asyncio code call the
``a``-prefixed variants, which run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

from agentos.errors import StoreError
from agentos.store import Store, owners
from agentos.store.writer import BUSY_TIMEOUT_MS, Execute

if TYPE_CHECKING:
    from agentos.agents.base import ResultHook
    from agentos.spec.agents import AgentSpec

logger = logging.getLogger(__name__)

DeliveryStatus = Literal["claimed", "pending", "done", "failed"]
DELIVERY_STATUSES: Final = ("claimed", "pending", "done", "failed")
FINISHED_DELIVERY: Final = ("done", "failed")

DEFAULT_LEASE_S: Final = 300.0
"""How long a claim holds an item before another runtime may take it over."""

DEFAULT_MAX_ATTEMPTS: Final = 3
"""Claims of one item by one consumer, without an ack, before it is marked failed."""

POLL_INTERVAL_S: Final = 0.25
"""How often :meth:`SinkStore.wait` looks at the database."""


@dataclass(frozen=True, slots=True)
class SinkItem:
    """One item claimed from a sink by one consumer.

    ``data`` is always a mapping (the template variables of the consumer's run);
    ``attempts`` counts this consumer's claims of the item, this one included, so a value
    above 1 means an earlier try was nacked or its holder crashed.
    """

    id: int
    sink: str
    data: dict[str, Any]
    dedupe_key: str
    produced_by: str | None
    created_at: float
    attempts: int


def item_data(data: Any) -> dict[str, Any]:
    """``data`` as an item stores it: a mapping (anything else becomes ``{"value": data}``)
    that survives a JSON round trip unchanged. Raises StoreError for what is not JSON."""
    value = data if isinstance(data, dict) else {"value": data}
    try:
        return dict(json.loads(canonical_json(value)))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"a sink item must be JSON data: {exc}") from exc


def canonical_json(value: Any) -> str:
    """One spelling per JSON value (sorted keys, no spaces), so equal data hash equal."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def default_dedupe_key(data: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of an item's data."""
    return hashlib.sha256(canonical_json(data).encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise StoreError(f"a {kind} name must be a non-empty string, got {name!r}")


_INSERT_ITEM = (
    "INSERT OR IGNORE INTO sink_items (sink, data, dedupe_key, produced_by, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)

_FAIL_EXHAUSTED = """
UPDATE sink_deliveries SET status = 'failed', done_at = :now
WHERE consumer = :consumer AND status = 'claimed' AND lease_until <= :now
  AND attempts >= :max_attempts
  AND item_id IN (SELECT id FROM sink_items WHERE sink = :sink)
"""

_CLAIMABLE = """
SELECT i.id, i.data, i.dedupe_key, i.produced_by, i.created_at, coalesce(d.attempts, 0)
FROM sink_items AS i
LEFT JOIN sink_deliveries AS d ON d.item_id = i.id AND d.consumer = :consumer
WHERE i.sink = :sink
  AND (d.item_id IS NULL
       OR (d.status IN ('claimed', 'pending') AND coalesce(d.lease_until, 0) <= :now))
ORDER BY i.id
LIMIT :limit
"""

_CLAIM = """
INSERT INTO sink_deliveries
  (item_id, consumer, status, claimed_by, claimed_at, lease_until, attempts)
VALUES (:item, :consumer, 'claimed', :owner, :now, :until, 1)
ON CONFLICT (item_id, consumer) DO UPDATE SET
  status = 'claimed', claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at,
  lease_until = excluded.lease_until, attempts = sink_deliveries.attempts + 1
"""

_ACK = """
INSERT INTO sink_deliveries
  (item_id, consumer, status, claimed_by, claimed_at, attempts, run_id, done_at)
VALUES (?, ?, 'done', ?, ?, 1, ?, ?)
ON CONFLICT (item_id, consumer) DO UPDATE SET
  status = 'done', run_id = excluded.run_id, done_at = excluded.done_at, lease_until = NULL
WHERE sink_deliveries.status != 'done'
"""

_NACK = """
UPDATE sink_deliveries SET
  status = CASE WHEN attempts >= :max_attempts THEN 'failed' ELSE 'pending' END,
  lease_until = :until,
  done_at = CASE WHEN attempts >= :max_attempts THEN :now ELSE done_at END
WHERE item_id = :item AND consumer = :consumer AND status = 'claimed' AND claimed_by = :owner
"""

_RENEW = """
UPDATE sink_deliveries SET lease_until = :until
WHERE item_id = :item AND consumer = :consumer AND status = 'claimed' AND claimed_by = :owner
"""

_DEPTH_FOR_CONSUMER = """
SELECT count(*) FROM sink_items AS i
WHERE i.sink = ? AND NOT EXISTS (
  SELECT 1 FROM sink_deliveries AS d
  WHERE d.item_id = i.id AND d.consumer = ? AND d.status IN ('done', 'failed'))
"""

_DEPTH_FOR_ALL = """
SELECT count(*) FROM sink_items AS i
WHERE i.sink = :sink AND (
  SELECT count(*) FROM sink_deliveries AS d
  WHERE d.item_id = i.id AND d.status IN ('done', 'failed')
) < max(1, (
  SELECT count(DISTINCT d.consumer) FROM sink_deliveries AS d
  JOIN sink_items AS j ON j.id = d.item_id WHERE j.sink = :sink))
"""


class SinkStore:
    """Publishing to, claiming from and acknowledging the items of sinks in one database.

    ``owner`` names this runtime (its id); it is written as ``claimed_by`` of its claims
    and only the owner of a claim may nack or renew it. ``clock`` gives the time for
    leases and timestamps (tests pass a controllable one).

    The sink store has its own connection to ``store.path`` (the store's writer thread
    groups writes and cannot answer "did this claim win?"), used by one thread at a time.
    Close it with :meth:`close` (or use it as a context manager) before the store.
    """

    def __init__(
        self,
        store: Store,
        *,
        owner: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        if store.readonly:
            raise StoreError(f"the store {store.path} was opened read-only; sinks need writes")
        _check_name("runtime", owner)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.owner = owner
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self._clock = clock
        # Protects _conn and _closed: one transaction or read at a time on the connection.
        self._lock = threading.Lock()
        self._closed = False
        timeout = BUSY_TIMEOUT_MS / 1000
        try:
            self._conn = sqlite3.connect(
                str(store.path), isolation_level=None, timeout=timeout, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {store.path} for sinks: {exc}") from exc

    # -- connection -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Idempotent; the store itself stays open."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SinkStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the sink store of {self.store.path} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE … COMMIT`` on the connection; rolled back on any error."""
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                self._begin(conn)
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"a sink operation on {self.store.path} failed: {exc}") from exc

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, however long another writer holds it (as the store's
        writer does: a lock held long means another process is working, not that this
        one is wrong)."""
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != sqlite3.SQLITE_BUSY:
                    raise
                logger.warning(
                    "agentos sinks: %s is locked by another writer; waiting", self.store.path
                )

    def _read(self, sql: str, params: Any) -> list[Any]:
        with self._lock:
            self._check_open()
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"reading sinks from {self.store.path} failed: {exc}") from exc

    # -- producing ----------------------------------------------------------------------

    def _item_row(
        self, sink: str, data: Any, produced_by: str | None, dedupe_key: str | None
    ) -> list[Any]:
        _check_name("sink", sink)
        value = item_data(data)
        key = dedupe_key if dedupe_key is not None else default_dedupe_key(value)
        return [sink, canonical_json(value), key, produced_by, self._clock()]

    def publish(
        self,
        sink: str,
        data: Any,
        *,
        produced_by: str | None,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Add an item to ``sink`` and commit it; its id, or None for a duplicate.

        Durable when it returns (it commits on the sink store's connection; it does not
        flush the store's writer). ``data`` that is not a mapping is stored as
        ``{"value": data}``; ``dedupe_key`` defaults to :func:`default_dedupe_key`.
        """
        row = self._item_row(sink, data, produced_by, dedupe_key)
        with self._transaction() as conn:
            cursor = conn.execute(_INSERT_ITEM, row)
            return cursor.lastrowid if cursor.rowcount == 1 else None

    def publish_op(
        self,
        sink: str,
        data: Any,
        *,
        produced_by: str | None,
        dedupe_key: str | None = None,
    ) -> Execute:
        """:meth:`publish` as a write op for ``store.submit`` (duplicates ignored alike)."""
        return publish_item_op(
            sink, data, produced_by=produced_by, dedupe_key=dedupe_key, now=self._clock()
        )

    # -- consuming ----------------------------------------------------------------------

    def claim(
        self,
        sink: str,
        consumer: str,
        *,
        limit: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> list[SinkItem]:
        """Up to ``limit`` items of ``sink`` for ``consumer``, oldest first, each leased
        to this runtime for ``lease_s`` seconds.

        Claimable: items this consumer has not finished and that no live lease holds
        (never claimed, nacked, or a lease that ran out). An expired claim that already
        had ``max_attempts`` tries is marked failed instead.
        """
        _check_name("sink", sink)
        _check_name("consumer", consumer)
        if limit < 1:
            return []
        now = self._clock()
        claimed: list[SinkItem] = []
        with self._transaction() as conn:
            owners.sweep_connection(conn, now=now)
            conn.execute(
                _FAIL_EXHAUSTED,
                {"now": now, "consumer": consumer, "sink": sink, "max_attempts": self.max_attempts},
            )
            rows = conn.execute(
                _CLAIMABLE, {"sink": sink, "consumer": consumer, "now": now, "limit": limit}
            ).fetchall()
            for item_id, data, key, produced_by, created_at, attempts in rows:
                conn.execute(
                    _CLAIM,
                    {
                        "item": item_id,
                        "consumer": consumer,
                        "owner": self.owner,
                        "now": now,
                        "until": now + lease_s,
                    },
                )
                value = json.loads(data)
                claimed.append(
                    SinkItem(
                        id=item_id,
                        sink=sink,
                        data=value if isinstance(value, dict) else {"value": value},
                        dedupe_key=key,
                        produced_by=produced_by,
                        created_at=created_at,
                        attempts=attempts + 1,
                    )
                )
        return claimed

    def ack(self, item_id: int, consumer: str, *, run_id: str | None) -> bool:
        """Mark the item done for ``consumer``: never delivered to it again.

        Flushes the store's writer first (see the module docstring: outputs before
        acks). True if this call marked it done, False if it already was (another
        runtime finished it after this one's lease ran out). An ack without a claim is
        allowed (work done out of band). Raises StoreError when a write queued on the
        store failed; the item is then not acked, and will be delivered again.
        """
        _check_name("consumer", consumer)
        self.store.flush()
        now = self._clock()
        with self._transaction() as conn:
            cursor = conn.execute(_ACK, [item_id, consumer, self.owner, now, run_id, now])
            return cursor.rowcount == 1

    def ack_op(self, item_id: int, consumer: str, *, run_id: str | None) -> Execute:
        """:meth:`ack` as a write op: committed after every write queued before it, and
        atomically with the consumer's own writes when put in one ``Atomic``."""
        _check_name("consumer", consumer)
        now = self._clock()
        return Execute(
            _ACK, [item_id, consumer, self.owner, now, run_id, now], ("sink_deliveries",)
        )

    def nack(self, item_id: int, consumer: str, *, delay_s: float = 0.0) -> DeliveryStatus | None:
        """Release this runtime's claim for another try after ``delay_s`` seconds.

        Returns the new status: ``pending``, or ``failed`` once the item has had
        ``max_attempts`` claims; None when this runtime does not hold the claim (its lease
        ran out and another took it, or it was finished), which changes nothing.
        """
        _check_name("consumer", consumer)
        now = self._clock()
        with self._transaction() as conn:
            cursor = conn.execute(
                _NACK,
                {
                    "item": item_id,
                    "consumer": consumer,
                    "owner": self.owner,
                    "now": now,
                    "until": now + max(0.0, delay_s),
                    "max_attempts": self.max_attempts,
                },
            )
            if cursor.rowcount != 1:
                return None
            row = conn.execute(
                "SELECT status FROM sink_deliveries WHERE item_id = ? AND consumer = ?",
                [item_id, consumer],
            ).fetchone()
        status: DeliveryStatus = "failed" if row[0] == "failed" else "pending"
        return status

    def renew(self, item_id: int, consumer: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend this runtime's claim to ``lease_s`` from now (for work that outlasts a
        lease); False when it no longer holds the claim."""
        _check_name("consumer", consumer)
        now = self._clock()
        with self._transaction() as conn:
            cursor = conn.execute(
                _RENEW,
                {
                    "item": item_id,
                    "consumer": consumer,
                    "owner": self.owner,
                    "until": now + lease_s,
                },
            )
            return cursor.rowcount == 1

    async def aclaim(
        self, sink: str, consumer: str, *, limit: int = 1, lease_s: float = DEFAULT_LEASE_S
    ) -> list[SinkItem]:
        """:meth:`claim` in a worker thread."""
        return await asyncio.to_thread(self.claim, sink, consumer, limit=limit, lease_s=lease_s)

    async def aack(self, item_id: int, consumer: str, *, run_id: str | None) -> bool:
        """:meth:`ack` in a worker thread."""
        return await asyncio.to_thread(self.ack, item_id, consumer, run_id=run_id)

    async def anack(
        self, item_id: int, consumer: str, *, delay_s: float = 0.0
    ) -> DeliveryStatus | None:
        """:meth:`nack` in a worker thread."""
        return await asyncio.to_thread(self.nack, item_id, consumer, delay_s=delay_s)

    # -- looking ------------------------------------------------------------------------

    def depth(self, sink: str, consumer: str | None = None) -> int:
        """Items of ``sink`` not yet finished (done or failed) by ``consumer``, claimed
        ones included; without a consumer, items some consumer that ever claimed from the
        sink has not finished (all items while none has)."""
        if consumer is not None:
            return int(self._read(_DEPTH_FOR_CONSUMER, [sink, consumer])[0][0])
        return int(self._read(_DEPTH_FOR_ALL, {"sink": sink})[0][0])

    def claimable(self, sink: str, consumer: str) -> bool:
        """Whether :meth:`claim` would return an item now."""
        now = self._clock()
        rows = self._read(_CLAIMABLE, {"sink": sink, "consumer": consumer, "now": now, "limit": 1})
        return bool(rows)

    def _last_item_id(self, sink: str) -> int:
        rows = self._read("SELECT max(id) FROM sink_items WHERE sink = ?", [sink])
        return int(rows[0][0] or 0)

    async def wait(self, sink: str, timeout: float, *, consumer: str | None = None) -> bool:
        """Wait up to ``timeout`` seconds for work; True when there may be some.

        With ``consumer``: returns as soon as it has a claimable item (at once for a
        backlog, and when a lease runs out or an item is nacked). Without one: as soon as
        an item is published to the sink after the call began. Polls every
        ``poll_interval`` seconds in a worker thread, so the event loop never waits for
        SQLite; a claim may still find nothing (another runtime was faster).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        baseline = (
            None if consumer is not None else await asyncio.to_thread(self._last_item_id, sink)
        )
        while True:
            if consumer is not None:
                if await asyncio.to_thread(self.claimable, sink, consumer):
                    return True
            elif await asyncio.to_thread(self._last_item_id, sink) > (baseline or 0):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval, remaining))


def publish_item_op(
    sink: str, data: Any, *, produced_by: str | None, dedupe_key: str | None = None, now: float
) -> Execute:
    """The write op that adds an item to ``sink`` (:meth:`SinkStore.publish_op`), made
    without a sink store: what a run on a cluster's worker publishes through."""
    _check_name("sink", sink)
    value = item_data(data)
    key = dedupe_key if dedupe_key is not None else default_dedupe_key(value)
    row = [sink, canonical_json(value), key, produced_by, now]
    return Execute(_INSERT_ITEM, row, ("sink_items",))


def publisher(sinks: SinkStore) -> ResultHook:
    """A ``RunContext.on_result`` hook: each result of an agent with an ``output_sink``
    becomes an item of that sink (``produced_by`` the run id), queued on the store's
    writer so the event loop never waits and the item commits after the result itself."""

    def publish_result(spec: AgentSpec, run_id: str, data: Any) -> None:
        if spec.output_sink:
            sinks.store.submit(sinks.publish_op(spec.output_sink, data, produced_by=run_id))

    return publish_result
