"""What the rest of agentos reads from and writes to the store.

Writes go through the store's writer (queued, grouped, never blocking the caller unless
the function says it flushes); reads run on ``store.db`` and see what has been committed.
JSON columns are serialized here, on the caller's thread, so a value that is not JSON fails
where it was produced, and a dict mutated after the call cannot change what is stored.
Read functions decode them again: ``spec``, ``payload``, ``request``, ``response``,
``data``, ``models`` and ``capabilities`` come back as Python values.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from agentos.errors import StoreError
from agentos.ids import new_id
from agentos.store import codec, digests, owners
from agentos.store.db import Store
from agentos.store.writer import Atomic, Call, Execute, Insert, Update

RunStatus = Literal["running", "succeeded", "failed", "cancelled", "crashed"]
RUN_STATUSES: Final = ("running", "succeeded", "failed", "cancelled", "crashed")
FINISHED_STATUSES: Final = ("succeeded", "failed", "cancelled")
"""How a run's own process ends it; ``crashed`` is set by another process, which found
that the run's owner is gone (:mod:`agentos.store.owners`)."""

LLM_CALL_COLUMNS: Final = frozenset(
    {
        "id",
        "run_id",
        "job_id",
        "attempt",
        "engine",
        "model",
        "kind",
        "request",
        "response",
        "status",
        "error",
        "error_class",
        "http_status",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "batch_id",
        "batch_size",
        "cache_hit",
        "started_at",
        "finished_at",
        "digest",
        "process",
    }
)
"""The fields :func:`record_llm_call` accepts (the columns of ``llm_calls``)."""

_RUN_LIST_COLUMNS = (
    "id, agent, kind, status, started_at, finished_at, error, agents_file, wanted, "
    "successes, attempts, parent_id, forked_from, pid, host, owner, last_seen_at, node"
)


def _dumps(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return codec.dumps(value)


def _loads(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _decoded(row: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    for column in columns:
        if column in row:
            row[column] = _loads(row[column])
    return row


# -- runs --------------------------------------------------------------------------------


def create_run(
    store: Store,
    *,
    agent: str,
    kind: str,
    spec: dict[str, Any],
    wanted: int | None,
    agents_file: str | None,
    parent_id: str | None = None,
    forked_from: str | None = None,
    flush: bool = True,
) -> str:
    """Record a new ``running`` run and return its id.

    The run's owner is the store's (:func:`agentos.store.owners.register`, done here on a
    store's first run), so a crash of this process is found out. Flushes, so the run row
    is committed (and visible to ``top``) before anything refers to it; this blocks for
    one commit, so asyncio code should call it in a thread. ``flush=False`` only queues
    the row: for a caller whose later writes reach the same writer after it (a cluster's
    driver, whose workers' records are submitted by its drain), order is enough.
    """
    owner = owners.register(store)
    run_id = new_id()
    store.submit(
        Insert(
            "runs",
            {
                "id": run_id,
                "agent": agent,
                "kind": kind,
                "status": "running",
                "started_at": time.time(),
                "spec": _dumps(spec),
                "agents_file": agents_file,
                "wanted": wanted,
                "successes": 0,
                "attempts": 0,
                "parent_id": parent_id,
                "forked_from": forked_from,
                "pid": owner.pid,
                "host": owner.host,
                "owner": owner.id,
                "audit_key": digests.key_marker(digests.audit_key()),
            },
        )
    )
    if flush:
        store.flush()
    return run_id


def finish_run(
    store: Store,
    run_id: str,
    *,
    status: RunStatus,
    error: str | None = None,
    successes: int,
    attempts: int,
    final_hash: str | None = None,
) -> None:
    """Record how a run ended (queued; flush or close the store to make it durable).

    ``final_hash`` anchors the end of the run's event hash chain, so that deleting its
    last events is detected by the audit: pass the run's ``RunEvents.last_hash``. Without
    it, the hash of the run's last committed event is stored (the genesis hash for a run
    without events); that is the same value, because the writer applies ops in the order
    they were submitted, so every event added before this call is written before it. In
    the same transaction, the run's outputs are sealed (:func:`digests.seal_outputs`): what
    was recorded for it before this call, counted and hashed. ``crashed`` is for a
    cluster's driver finishing a run whose node died (:mod:`agentos.cluster.executor`).
    """
    if status not in (*FINISHED_STATUSES, "crashed"):
        raise ValueError(f"a run finishes as one of {FINISHED_STATUSES}, not {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "successes": successes,
        "attempts": attempts,
        "finished_at": time.time(),
    }
    key = digests.audit_key()
    seal = Call(functools.partial(digests.seal_outputs, run_id=run_id, key=key))
    if final_hash is not None:
        store.submit(Atomic((Update("runs", run_id, {**values, "final_hash": final_hash}), seal)))
        return
    anchor = Execute(
        "UPDATE runs SET final_hash = coalesce("
        "(SELECT hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1), "
        "CASE WHEN EXISTS (SELECT 1 FROM events WHERE run_id = ?) THEN NULL ELSE ? END"
        ") WHERE id = ?",
        (run_id, run_id, genesis_hash(run_id, key=key), run_id),
    )
    store.submit(Atomic((Update("runs", run_id, values), anchor, seal)))


def list_runs(
    store: Store,
    *,
    agent: str | None = None,
    status: str | None = None,
    limit: int | None = 20,
) -> list[dict[str, Any]]:
    """Runs, newest first, without their spec snapshot; ``limit=None`` for all."""
    where: list[str] = []
    params: list[Any] = []
    if agent is not None:
        where.append("agent = ?")
        params.append(agent)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    sql = f"SELECT {_RUN_LIST_COLUMNS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return list(store.db.query(sql, params))


def get_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run with id ``run_id``, or with an id that starts with it (git-style).

    Returns None when nothing matches; raises StoreError listing the candidates when a
    prefix matches several runs.
    """
    if not run_id:
        return None
    rows = list(store.db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = list(
            store.db.query(
                "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 11",
                [escaped + "%"],
            )
        )
    if not rows:
        return None
    if len(rows) > 1:
        shown = ", ".join(f"{r['id']} ({r['agent']})" for r in rows[:10])
        more = " and more" if len(rows) > 10 else ""
        raise StoreError(
            f"run id prefix {run_id!r} is ambiguous; it matches {shown}{more}. "
            "Give more characters of the id."
        )
    return _decoded(rows[0], ["spec"])


RUN_PREFIX_MIN = 8
"""The shortest run id prefix ``agentos runs`` shows (git shows 7 of a hash)."""


def unique_prefixes(
    store: Store, run_ids: Sequence[str], *, minimum: int = RUN_PREFIX_MIN
) -> dict[str, str]:
    """Per run id, its shortest prefix (at least ``minimum`` characters) that no other run
    of the database shares, so :func:`get_run` resolves it to that run alone.

    The ids sorted next to it are the ones it shares most with; two indexed look-ups each.
    """
    out: dict[str, str] = {}
    for run_id in run_ids:
        longest = 0
        for sql in (
            "SELECT max(id) FROM runs WHERE id < ?",
            "SELECT min(id) FROM runs WHERE id > ?",
        ):
            other = store.db.execute(sql, [run_id]).fetchone()[0]
            if other:
                shared = next(
                    (i for i, (a, b) in enumerate(zip(run_id, other, strict=False)) if a != b),
                    min(len(run_id), len(other)),
                )
                longest = max(longest, shared)
        out[run_id] = run_id[: max(minimum, longest + 1)]
    return out


def model_calls_of(store: Store, run_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per run id: (answers it got, of them served from the cache), from ``llm_calls``
    (failed requests not counted)."""
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    rows = store.db.execute(
        f"SELECT run_id, count(*), coalesce(sum(cache_hit), 0) FROM llm_calls "
        f"WHERE run_id IN ({marks}) AND status = 'ok' GROUP BY run_id",
        list(run_ids),
    ).fetchall()
    return {run_id: (int(calls), int(hits)) for run_id, calls, hits in rows}


# -- events ------------------------------------------------------------------------------


EVENT_CHAIN_GENESIS_PREFIX: Final = "agentos-run:"
"""``sha256(prefix + run_id)`` is the ``prev_hash`` of a run's first event."""


def genesis_hash(run_id: str, *, key: bytes | None = None) -> str:
    """The ``prev_hash`` of event 1 of ``run_id``: fixed by the id, so a chain cannot be
    moved to another run and the first event cannot be dropped unnoticed. With the audit
    ``key`` (:mod:`agentos.store.digests`) every link is an HMAC, the genesis too."""
    return digests.mac(key, (EVENT_CHAIN_GENESIS_PREFIX + run_id).encode())


def event_hash(
    prev_hash: str,
    *,
    run_id: str,
    seq: int,
    type: str,
    time: float,
    payload: Any,
    key: bytes | None = None,
) -> str:
    """The link of one event in its run's hash chain.

    ``sha256(prev_hash + canonical JSON of {run_id, seq, type, time, payload})``, where
    ``payload`` is the decoded JSON value as stored and canonical means sorted keys, no
    spaces, UTF-8 (``time`` is the stored REAL, whose repr round-trips exactly). Hashing
    the decoded value, not the stored text, keeps the chain independent of how the JSON
    happens to be spelled. Lone surrogates (which SQLite refuses anyway) are hashed as they
    are instead of raising here, so the writer reports them as before.
    """
    document = codec.canonical(
        {"payload": payload, "run_id": run_id, "seq": seq, "time": time, "type": type}
    )
    return _link(prev_hash, document, key)


def _link(prev_hash: str, document: str, key: bytes | None = None) -> str:
    return digests.mac_for(key).hex((prev_hash + document).encode("utf-8", "surrogatepass"))


class RunEvents:
    """Appends one run's events, numbered 1, 2, 3, … without gaps and chained by hashes.

    The counter lives here, not in the database, so :meth:`add` never reads or waits; it
    starts after the highest ``seq`` already committed for the run (0 for a new run). Use
    one instance per run (it is thread-safe); two instances for one run would collide on
    the unique ``(run_id, seq)``.

    Every event is written with ``prev_hash`` (the previous event's ``hash``, or
    :func:`genesis_hash` for event 1) and its own :func:`event_hash`, computed here on the
    caller's thread (microseconds) so the row is written complete. :attr:`last_hash` is the
    end of the chain, which :func:`finish_run` stores as the run's ``final_hash``. A run
    continued after events written before the audit trail existed (no hash) starts a new
    chain at the genesis hash; ``agentos audit`` reports the older events as unverifiable.
    With the audit key in the environment (read once, here) the links are HMACs.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        seeded: tuple[int, str | None] | None = None,
    ) -> None:
        """``seeded``: the run's last ``(seq, hash)`` when the caller knows it (``(0,
        None)`` for a run created elsewhere that has no events yet): nothing is read,
        which a run on a cluster's worker needs (its row is committed by the driver)."""
        self.store = store
        self.run_id = run_id
        self._key = digests.audit_key()
        if seeded is None:
            row = store.db.execute(
                "SELECT seq, hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
                [run_id],
            ).fetchone()
        else:
            row = seeded
        self.last_seq: int = row[0] if row else 0
        """The seq of the latest event added."""
        self._last_hash: str = row[1] if row and row[1] else genesis_hash(run_id, key=self._key)
        # Protects last_seq and _last_hash: numbering, chaining and queueing the insert
        # happen together, so events reach the writer in seq order with matching links.
        self._lock = threading.Lock()

    @property
    def last_hash(self) -> str:
        """The hash of the latest event added (the genesis hash while there is none)."""
        with self._lock:
            return self._last_hash

    def add(self, type: str, payload: dict[str, Any] | None = None) -> int:
        """Queue an event of ``type`` (e.g. "prompt", "response", "tool_call"); its seq."""
        value = payload if payload is not None else {}
        now = time.time()
        with self._lock:
            seq = self.last_seq + 1
            prev_hash = self._last_hash
            document = {
                "payload": value,
                "run_id": self.run_id,
                "seq": seq,
                "time": now,
                "type": type,
            }
            if codec.is_plain(document):
                # stored as it is hashed: what is stored decodes to ``value`` itself, so
                # there is nothing to decode before hashing (one walk, two orjson calls)
                encoded = codec.dumps_plain(value)
                digest = _link(prev_hash, codec.canonical_plain(document), self._key)
            else:
                encoded = json.dumps(value, ensure_ascii=False)
                stored = json.loads(encoded)
                digest = event_hash(
                    prev_hash,
                    run_id=self.run_id,
                    seq=seq,
                    type=type,
                    time=now,
                    payload=stored,
                    key=self._key,
                )
            self.store.submit(
                Insert(
                    "events",
                    {
                        "run_id": self.run_id,
                        "seq": seq,
                        "type": type,
                        "time": now,
                        "payload": encoded,
                        "prev_hash": prev_hash,
                        "hash": digest,
                    },
                )
            )
            self.last_seq = seq
            self._last_hash = digest
        return seq


def run_events(
    store: Store, run_id: str, *, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """A run's events in seq order, payloads decoded; with ``after``, only those with a
    greater seq, and at most ``limit`` of them (a page of a long run's timeline)."""
    sql = "SELECT id, run_id, seq, type, time, payload FROM events WHERE run_id = ?"
    params: list[Any] = [run_id]
    if after is not None:
        sql += " AND seq > ?"
        params.append(after)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_decoded(row, ["payload"]) for row in store.db.query(sql, params)]


# -- model calls -------------------------------------------------------------------------


def record_llm_call(store: Store, **fields: Any) -> str:
    """Queue one model request and its outcome; returns its id (``fields["id"]`` or new).

    ``fields`` are columns of ``llm_calls`` (see :data:`LLM_CALL_COLUMNS`); ``request``
    and ``response`` may be dicts. Unknown fields are a programming error (ValueError).
    """
    unknown = set(fields) - LLM_CALL_COLUMNS
    if unknown:
        raise ValueError(f"llm_calls has no column(s) {sorted(unknown)}")
    row = dict(fields)
    row["id"] = row.get("id") or new_id()
    for column in ("request", "response"):
        if column in row:
            row[column] = _dumps(row[column])
    if isinstance(row.get("cache_hit"), bool):
        row["cache_hit"] = int(row["cache_hit"])
    row["digest"] = digests.row_digest(digests.audit_key(), "llm_calls", row)
    store.submit(Insert("llm_calls", row))
    return str(row["id"])


def run_llm_calls(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's model calls in the order they started, request and response decoded."""
    rows = store.db.query(
        "SELECT * FROM llm_calls WHERE run_id = ? ORDER BY started_at, id", [run_id]
    )
    return [_decoded(row, ["request", "response"]) for row in rows]


# -- results -----------------------------------------------------------------------------


def record_result(store: Store, run_id: str, job_id: str | None, data: Any) -> None:
    """Queue one parsed result of a run (``data`` is stored as JSON, with its digest)."""
    row = {"run_id": run_id, "job_id": job_id, "data": codec.dumps(data), "created_at": time.time()}
    row["digest"] = digests.row_digest(digests.audit_key(), "results", row)
    store.submit(Insert("results", row))


def run_results(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's results in the order they were recorded, ``data`` decoded."""
    rows = store.db.query("SELECT * FROM results WHERE run_id = ? ORDER BY id", [run_id])
    return [_decoded(row, ["data"]) for row in rows]


# -- engines -----------------------------------------------------------------------------


def upsert_engine_health(
    store: Store,
    *,
    name: str,
    base_url: str,
    models: list[str],
    capabilities: list[str],
    healthy: bool,
    detail: str | None = None,
    checked_at: float | None = None,
) -> None:
    """Queue the latest health check of engine ``name``, replacing the previous one."""
    store.submit(
        Insert(
            "engine_health",
            {
                "name": name,
                "base_url": base_url,
                "models": json.dumps(list(models)),
                "capabilities": json.dumps(list(capabilities)),
                "healthy": int(healthy),
                "detail": detail,
                "checked_at": time.time() if checked_at is None else checked_at,
            },
            replace=True,
        )
    )


def engine_health(store: Store) -> list[dict[str, Any]]:
    """The last health check of every engine, by name; ``healthy`` as a bool."""
    rows = store.db.query("SELECT * FROM engine_health ORDER BY name")
    result = []
    for row in rows:
        row = _decoded(row, ["models", "capabilities"])
        row["healthy"] = bool(row["healthy"])
        result.append(row)
    return result
