"""The SQLite store: one database file, WAL, migrated on open, written by one thread.

``Store`` opens it, ``Writer`` owns every write, ``queries`` holds what the rest of
agentos reads and writes, ``paths`` finds the file.
"""

from agentos.store.db import Store
from agentos.store.migrations import MIGRATIONS, MIGRATIONS_TABLE, migration
from agentos.store.paths import default_db_path, resolve_db_path
from agentos.store.queries import (
    FINISHED_STATUSES,
    LLM_CALL_COLUMNS,
    RUN_STATUSES,
    RunEvents,
    RunStatus,
    create_run,
    engine_health,
    finish_run,
    get_run,
    list_runs,
    new_id,
    record_llm_call,
    record_result,
    run_events,
    run_llm_calls,
    run_results,
    upsert_engine_health,
)
from agentos.store.writer import Atomic, Execute, Insert, Update, WriteOp, Writer

__all__ = [
    "FINISHED_STATUSES",
    "LLM_CALL_COLUMNS",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "RUN_STATUSES",
    "Atomic",
    "Execute",
    "Insert",
    "RunEvents",
    "RunStatus",
    "Store",
    "Update",
    "WriteOp",
    "Writer",
    "create_run",
    "default_db_path",
    "engine_health",
    "finish_run",
    "get_run",
    "list_runs",
    "migration",
    "new_id",
    "record_llm_call",
    "record_result",
    "resolve_db_path",
    "run_events",
    "run_llm_calls",
    "run_results",
    "upsert_engine_health",
]
