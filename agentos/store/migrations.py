"""The database schema, as an ordered list of migrations applied on open.

Each migration is a function ``mNNN_what(db)`` registered with :func:`migration`; the
names of the applied ones are recorded in ``_agentos_migrations``. Rules:

- A migration is never edited after it lands: databases in the wild have already run it.
  A schema change is a new function appended at the end (``m002_tool_calls`` …).
- All pending migrations run in one ``BEGIN IMMEDIATE`` transaction together with their
  records, so two processes opening a fresh database at once cannot both migrate it, and
  a crash mid-migration leaves the database as it was.
- A database that records a migration this code does not know was written by a newer
  agentos; it is refused (:class:`~agentos.errors.SchemaTooNewError`) rather than written
  with a schema that may mean something else now.

Conventions for the tables: timestamps are REAL unix seconds, JSON is stored as TEXT,
ids made by :func:`agentos.store.queries.new_id` are TEXT.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from agentos.errors import SchemaTooNewError

MIGRATIONS_TABLE = "_agentos_migrations"
"""Table recording the name and time of every applied migration."""

Migration = Callable[[sqlite_utils.Database], None]

MIGRATIONS: list[Migration] = []
"""Every migration, in the order it is applied."""

_NAME = re.compile(r"^m(\d{3})_[a-z0-9_]+$")


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; names must be ``mNNN_…`` and increase."""
    match = _NAME.match(fn.__name__)
    if match is None:
        raise ValueError(f"migration name {fn.__name__!r} is not of the form mNNN_what")
    if MIGRATIONS and MIGRATIONS[-1].__name__[:4] >= fn.__name__[:4]:
        raise ValueError(f"migration {fn.__name__} must sort after {MIGRATIONS[-1].__name__}")
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    """Runs, their events, model calls, results, and the last known state of each engine."""
    db.table("runs").create(
        {
            "id": str,
            "agent": str,
            "kind": str,
            "status": str,
            "started_at": float,
            "finished_at": float,
            "error": str,
            "spec": str,
            "agents_file": str,
            "wanted": int,
            "successes": int,
            "attempts": int,
            "parent_id": str,
            "forked_from": str,
            "pid": int,
            "host": str,
        },
        pk="id",
        not_null={"agent", "kind", "status", "started_at"},
    )
    db.table("runs").create_index(["agent", "started_at"])
    db.table("runs").create_index(["status"])

    db.table("events").create(
        {
            "id": int,
            "run_id": str,
            "seq": int,
            "type": str,
            "time": float,
            "payload": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "seq", "type", "time"},
    )
    db.table("events").create_index(["run_id", "seq"], unique=True)

    db.table("llm_calls").create(
        {
            "id": str,
            "run_id": str,
            "job_id": str,
            "attempt": int,
            "engine": str,
            "model": str,
            "kind": str,
            "request": str,
            "response": str,
            "status": str,
            "error": str,
            "error_class": str,
            "http_status": int,
            "latency_ms": float,
            "prompt_tokens": int,
            "completion_tokens": int,
            "batch_id": str,
            "batch_size": int,
            "cache_hit": int,
            "started_at": float,
            "finished_at": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("llm_calls").create_index(["run_id"])

    db.table("results").create(
        {"id": int, "run_id": str, "job_id": str, "data": str, "created_at": float},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "created_at"},
    )
    db.table("results").create_index(["run_id"])

    db.table("engine_health").create(
        {
            "name": str,
            "base_url": str,
            "models": str,
            "capabilities": str,
            "healthy": int,
            "detail": str,
            "checked_at": float,
        },
        pk="name",
    )


@migration
def m002_cache_and_snapshots(db: sqlite_utils.Database) -> None:
    """The router's response cache, the runtime accounting snapshots, and control commands.

    ``cache``: one row per distinct request (``key`` is the sha256 of ``request``, the
    canonical JSON of :func:`agentos.router.cache.canonical_request`), holding the engine's
    full answer; ``expires_at`` is NULL for entries written without a TTL.
    ``runtime_snapshots``: the accounting a running agentos writes for ``top``, one row per
    runtime. ``control``: commands for a running runtime (from the dashboard), marked done
    by the runtime that carried them out.
    """
    db.table("cache").create(
        {
            "key": str,
            "kind": str,
            "model": str,
            "request": str,
            "response": str,
            "text": str,
            "embedding": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "engine": str,
            "created_at": float,
            "expires_at": float,
            "hits": int,
            "last_hit_at": float,
        },
        pk="key",
        not_null={"kind", "model", "request", "response", "text", "created_at", "hits"},
        defaults={"hits": 0},
    )
    db.table("cache").create_index(["created_at"])

    db.table("runtime_snapshots").create(
        {
            "runtime_id": str,
            "pid": int,
            "host": str,
            "started_at": float,
            "updated_at": float,
            "data": str,
        },
        pk="runtime_id",
    )

    db.table("control").create(
        {
            "id": int,
            "created_at": float,
            "command": str,
            "target": str,
            "args": str,
            "done_at": float,
            "done_by": str,
        },
        pk="id",
        not_null={"created_at", "command"},
    )


@migration
def m003_audit_and_tools(db: sqlite_utils.Database) -> None:
    """The audit trail's hash chain, and the table of tool calls.

    ``events.prev_hash`` / ``events.hash``: each event's link in its run's hash chain (see
    :mod:`agentos.replay.audit`); NULL for events written before this migration, which the
    audit reports as recorded before the audit trail existed. ``runs.final_hash``: the hash
    of a finished run's last event, so that deleting events at the end is detected too.
    ``tool_calls``: one row per tool call of a run (``arguments`` and ``output`` are JSON).
    """
    db.table("events").add_column("prev_hash", str)
    db.table("events").add_column("hash", str)
    db.table("runs").add_column("final_hash", str)

    db.table("tool_calls").create(
        {
            "id": str,
            "run_id": str,
            "step": int,
            "tool": str,
            "arguments": str,
            "output": str,
            "error": str,
            "duration_ms": float,
            "started_at": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("tool_calls").create_index(["run_id"])


def known_migration_names() -> list[str]:
    return [fn.__name__ for fn in MIGRATIONS]


def applied_migrations(db: sqlite_utils.Database) -> list[str]:
    """Names recorded in the migrations table, oldest first; [] for a fresh database."""
    if not db.table(MIGRATIONS_TABLE).exists():
        return []
    rows = db.execute(f"SELECT name FROM [{MIGRATIONS_TABLE}] ORDER BY applied_at, name")
    return [row[0] for row in rows.fetchall()]


def check_not_too_new(applied: list[str], path: Path) -> None:
    """Raise :class:`SchemaTooNewError` if ``applied`` names a migration we do not know."""
    unknown = sorted(set(applied) - set(known_migration_names()))
    if unknown:
        raise SchemaTooNewError(
            f"the database {path} was written by a newer agentos (it has migration "
            f"{', '.join(unknown)}, which this version does not know); upgrade agentos "
            "to use it"
        )


def pending_migrations(db: sqlite_utils.Database, path: Path) -> list[Migration]:
    """Migrations not yet applied to ``db``, in order; refuses databases that are too new."""
    applied = applied_migrations(db)
    check_not_too_new(applied, path)
    done = set(applied)
    return [fn for fn in MIGRATIONS if fn.__name__ not in done]


@migration
def m004_dashboard_indexes(db: sqlite_utils.Database) -> None:
    """Indexes for ``agentos top``, which reads newest runs and freshest snapshots every
    second (38 ms → 1.6 ms with 100k runs and 20k snapshot rows)."""
    db.execute("CREATE INDEX IF NOT EXISTS idx_runs_started_at ON runs (started_at)")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_runtime_snapshots_updated_at "
        "ON runtime_snapshots (updated_at)"
    )


@migration
def m005_schedules_sinks_state_tools(db: sqlite_utils.Database) -> None:
    """Tables of life-cycles, sinks, agent state and the built-in tools.

    ``schedule_fires``: one row per claimed fire of a scheduled or perpetual agent; ``key``
    (agent + fire time) is unique, so a daemon and a ``--once`` call that fire the same
    slot run it once. ``sink_items``: the durable queue between agents, de-duplicated per
    sink by ``dedupe_key``; ``sink_deliveries``: which reader has claimed or finished which
    item (at-least-once: a claim whose lease ran out is delivered again). ``agent_state``:
    a persistent key/value store per agent. ``todos``: the todo tool's items.
    ``task_results``: results of task agents, unique per agent, period and item key, so a
    collector run twice for the same period stores nothing twice.
    """
    db.table("schedule_fires").create(
        {
            "id": int,
            "agent": str,
            "fire_time": float,
            "key": str,
            "claimed_by": str,
            "claimed_at": float,
            "source": str,
            "run_id": str,
            "status": str,
            "finished_at": float,
        },
        pk="id",
        not_null={"agent", "fire_time", "key"},
    )
    db.execute("CREATE UNIQUE INDEX idx_schedule_fires_key ON schedule_fires (key)")
    db.execute("CREATE INDEX idx_schedule_fires_agent ON schedule_fires (agent, fire_time)")
    db.table("sink_items").create(
        {
            "id": int,
            "sink": str,
            "data": str,
            "dedupe_key": str,
            "produced_by": str,
            "created_at": float,
        },
        pk="id",
        not_null={"sink", "data", "dedupe_key"},
    )
    db.execute("CREATE UNIQUE INDEX idx_sink_items_dedupe ON sink_items (sink, dedupe_key)")
    db.table("sink_deliveries").create(
        {
            "item_id": int,
            "consumer": str,
            "status": str,
            "claimed_by": str,
            "claimed_at": float,
            "lease_until": float,
            "attempts": int,
            "run_id": str,
            "done_at": float,
        },
        pk=("item_id", "consumer"),
        foreign_keys=[("item_id", "sink_items", "id")],
    )
    db.execute("CREATE INDEX idx_sink_deliveries_status ON sink_deliveries (consumer, status)")
    db.table("agent_state").create(
        {"agent": str, "key": str, "value": str, "updated_at": float},
        pk=("agent", "key"),
    )
    db.table("todos").create(
        {
            "id": int,
            "title": str,
            "done": int,
            "created_at": float,
            "done_at": float,
            "agent": str,
        },
        pk="id",
        not_null={"title"},
    )
    db.table("task_results").create(
        {
            "id": int,
            "agent": str,
            "period": str,
            "item_key": str,
            "data": str,
            "run_id": str,
            "created_at": float,
        },
        pk="id",
        not_null={"agent", "period", "item_key"},
    )
    db.execute(
        "CREATE UNIQUE INDEX idx_task_results_item ON task_results (agent, period, item_key)"
    )


@migration
def m006_embeddings(db: sqlite_utils.Database) -> None:
    """Semantic memory: the vectors of embedded records, and which records are done.

    ``embeddings``: the SQLite vector store (:mod:`agentos.memory.vectors`), one row per
    record and vector space. A space is a model *and* a dimension, both in the primary
    key, so vectors of different models or sizes never meet in one comparison. ``vector``
    is the unit-length vector as little-endian float32; ``text`` is what was embedded;
    ``run_id`` references the run, so pruning a run removes its vectors too.
    ``embedded_sources``: what the background indexer has done, keyed by (source table,
    row id, model); ``status`` is ``embedded``, ``empty`` (no text to embed) or
    ``failed`` (the engine refused the text), so a restart resumes where it stopped.
    """
    db.table("embeddings").create(
        {
            "model": str,
            "dim": int,
            "source": str,
            "source_id": str,
            "run_id": str,
            "agent": str,
            "created_at": float,
            "text": str,
            "vector": bytes,
            "embedded_at": float,
        },
        pk=("model", "dim", "source", "source_id"),
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"model", "dim", "source", "source_id", "text", "vector"},
    )
    db.execute("CREATE INDEX idx_embeddings_agent ON embeddings (model, dim, agent)")
    db.execute("CREATE INDEX idx_embeddings_run ON embeddings (run_id)")
    db.table("embedded_sources").create(
        {
            "source": str,
            "source_id": str,
            "model": str,
            "dim": int,
            "status": str,
            "error": str,
            "embedded_at": float,
        },
        pk=("source", "source_id", "model"),
        not_null={"source", "source_id", "model", "status", "embedded_at"},
    )


@migration
def m007_embedded_sources_store(db: sqlite_utils.Database) -> None:
    """Which vector store holds each embedded record: ``embedded_sources.store``.

    A mark used to say only "embedded with this model", so after ``vector_store:`` was
    switched (to Qdrant, say) the indexer took every record as done and the new store
    held only what came afterwards. ``store`` is the vector store's key (``sqlite``, or
    ``qdrant:WHERE/PREFIX``); a record marked ``embedded`` for another store is pending
    again. Existing marks whose vector is in the ``embeddings`` table get ``sqlite``;
    the others (vectors in a Qdrant store that cannot be named here) stay NULL and are
    indexed again once, into whatever store is configured.
    """
    db.execute("ALTER TABLE embedded_sources ADD COLUMN store TEXT")
    db.execute(
        "UPDATE embedded_sources SET store = 'sqlite' WHERE status = 'embedded' AND EXISTS "
        "(SELECT 1 FROM embeddings e WHERE e.model = embedded_sources.model "
        "AND e.dim = embedded_sources.dim AND e.source = embedded_sources.source "
        "AND e.source_id = embedded_sources.source_id)"
    )


@migration
def m008_sample_counters(db: sqlite_utils.Database) -> None:
    """Fresh samples for every run of a perpetual or scheduled agent.

    ``sample_counters``: per agent, the next sample index a run of it may take
    (:mod:`agentos.scheduler.samples`); a run reserves a range, so each tick or fire asks
    for samples no earlier run of the agent asked for, also after a restart.
    ``runs.sample_base``: the offset added to the run's attempt numbers to make its
    sample indices (null = 0), so a replay asks for the samples the run asked for.
    """
    db.table("sample_counters").create(
        {"agent": str, "next_base": int, "updated_at": float},
        pk="agent",
        not_null={"next_base"},
    )
    db.table("runs").add_column("sample_base", int)


@migration
def m009_output_digests(db: sqlite_utils.Database) -> None:
    """The audit trail covers outputs, and may be keyed (see :mod:`agentos.store.digests`).

    ``results.digest``, ``llm_calls.digest``, ``tool_calls.digest``: MACs of the fields a
    row's audit covers, written with the row; ``runs.outputs_seal``: the count and hash of
    the run's output rows, written when it finishes; ``runs.audit_key``: the fingerprint of
    the key its chain was written with (NULL when not keyed). NULL everywhere for what was
    recorded before this migration, which the audit reports as not covered.
    """
    for table in ("results", "llm_calls", "tool_calls"):
        db.table(table).add_column("digest", str)
    db.table("runs").add_column("outputs_seal", str)
    db.table("runs").add_column("audit_key", str)


@migration
def m011_owners(db: sqlite_utils.Database) -> None:
    """Which process owns a run or a sink claim, so a crashed one is found out.

    ``owners``: one row per agentos process and database (see
    :mod:`agentos.store.owners`): ``host``, ``pid``, ``pid_start`` (the process's start as
    ``BOOT_ID:TICKS``, NULL where it cannot be read), ``heartbeat_at`` (NULL for an owner
    that sends none), ``status`` (``live``, ``ended``, ``crashed``) and ``ended_at``.
    ``runs.owner``: the owner's id (NULL for runs recorded before this migration, which
    are judged by their ``pid`` and ``host``); ``runs.last_seen_at``: for a ``crashed``
    run, when its process was last seen alive. ``sink_deliveries.claimed_by`` already
    names the owner of a claim.
    """
    db.table("owners").create(
        {
            "id": str,
            "host": str,
            "pid": int,
            "pid_start": str,
            "started_at": float,
            "heartbeat_at": float,
            "status": str,
            "ended_at": float,
        },
        pk="id",
        not_null={"host", "pid", "started_at", "status"},
    )
    db.execute("CREATE INDEX idx_owners_status ON owners (status)")
    db.table("runs").add_column("owner", str)
    db.table("runs").add_column("last_seen_at", float)
    db.execute("CREATE INDEX idx_runs_owner ON runs (owner, status)")
    db.execute(
        "CREATE INDEX idx_sink_deliveries_claimed_by ON sink_deliveries (claimed_by, status)"
    )


@migration
def m012_llm_calls_process(db: sqlite_utils.Database) -> None:
    """Who asked for each model call: ``llm_calls.process`` is the router's process name
    of the job (the agent, ``background[embeddings]``, or ``client[NAME]`` for a client
    of ``agentos serve``, whose calls have no run). NULL for calls recorded before."""
    db.table("llm_calls").add_column("process", str)
    db.execute("CREATE INDEX idx_llm_calls_process ON llm_calls (process, started_at)")


@migration
def m013_llm_calls_started_at(db: sqlite_utils.Database) -> None:
    """``agentos usage --since``, ``top``'s cost today and agents' budgets read the model
    calls of a time range across processes: an index on ``llm_calls.started_at``."""
    db.execute("CREATE INDEX IF NOT EXISTS idx_llm_calls_started_at ON llm_calls (started_at)")


@migration
def m014_tool_cache(db: sqlite_utils.Database) -> None:
    """Answers of cached tools (``web_fetch``, ``web_search``), and which calls they served.

    ``tool_cache``: one row per tool and normalised arguments (``key``, a hash of both;
    see :mod:`agentos.tools.cache`): the output as JSON, when it was fetched, and when it
    stops being served (``expires_at``); a call after that replaces the row.
    ``tool_calls.cache_hit``: 1 for a call served from the cache (nothing was run), 0
    for one that ran, NULL for calls recorded before this migration.
    """
    db.table("tool_cache").create(
        {
            "key": str,
            "tool": str,
            "arguments": str,
            "output": str,
            "created_at": float,
            "expires_at": float,
        },
        pk="key",
        not_null={"tool", "arguments", "output", "created_at", "expires_at"},
    )
    db.execute("CREATE INDEX idx_tool_cache_expires_at ON tool_cache (expires_at)")
    db.table("tool_calls").add_column("cache_hit", int)


@migration
def m015_agent_health(db: sqlite_utils.Database) -> None:
    """How each daemon is doing, and the alerts sent about it (:mod:`agentos.health`).

    ``agent_health``: one row per perpetual or scheduled agent (by name), replaced by the
    runtime that drives it: its ``owner`` (``owners.id``, whose status says whether the
    process lives), ``life_cycle``, ``heartbeat_at`` (every few seconds while it runs),
    ``next_fire_at``, the last run (``last_run_id``, ``last_status``, ``last_error``),
    ``last_success_at``, ``last_failure_at``, ``consecutive_failures`` and ``runs``.
    ``alerts``: every alert, sent or not: ``agent``, ``kind`` (``failures``, ``missed``,
    ``stopped``), ``message``, ``ref`` (what it is about, so one thing is alerted once),
    ``target`` (``command`` or the webhook's address without its path), ``status``
    (``sent`` or ``failed``), ``error``, ``run_id``, ``created_at``.
    """
    db.table("agent_health").create(
        {
            "agent": str,
            "owner": str,
            "life_cycle": str,
            "heartbeat_at": float,
            "next_fire_at": float,
            "last_run_id": str,
            "last_status": str,
            "last_error": str,
            "last_success_at": float,
            "last_failure_at": float,
            "consecutive_failures": int,
            "runs": int,
            "updated_at": float,
        },
        pk="agent",
        not_null={"owner", "life_cycle", "updated_at"},
    )
    db.table("alerts").create(
        {
            "id": str,
            "agent": str,
            "kind": str,
            "message": str,
            "ref": str,
            "target": str,
            "status": str,
            "error": str,
            "run_id": str,
            "created_at": float,
        },
        pk="id",
        not_null={"agent", "kind", "message", "target", "status", "created_at"},
    )
    db.execute("CREATE INDEX idx_alerts_agent ON alerts (agent, kind, ref)")


@migration
def m016_run_node(db: sqlite_utils.Database) -> None:
    """``runs.node``: the Ray node a run executed on (its id's first 12 hex digits),
    written by the worker when the run starts there; NULL for runs of one machine."""
    db.table("runs").add_column("node", str)


def migrate(db: sqlite_utils.Database, path: Path) -> list[str]:
    """Apply every pending migration atomically; returns the names applied (often none).

    The check without a lock comes first, so opening an up-to-date database never takes
    the write lock away from a running writer; the check is repeated under the lock
    because another process may have migrated in between.
    """
    if not pending_migrations(db, path):
        return []
    conn: sqlite3.Connection = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        db.table(MIGRATIONS_TABLE).create(
            {"name": str, "applied_at": float}, pk="name", if_not_exists=True
        )
        pending = pending_migrations(db, path)
        for fn in pending:
            fn(db)
            db.execute(
                f"INSERT INTO [{MIGRATIONS_TABLE}] (name, applied_at) VALUES (?, ?)",
                [fn.__name__, time.time()],
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return [fn.__name__ for fn in pending]
