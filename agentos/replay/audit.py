"""The audit trail: proof that a run's recorded events and outputs are the ones written.

Every event of a run carries a gap-free ``seq`` and a link in a hash chain (written by
:class:`~agentos.store.queries.RunEvents`)::

    prev_hash(1)   = genesis_hash(run_id) = sha256("agentos-run:" + run_id)
    hash(n)        = sha256(prev_hash(n) + canonical JSON of {run_id, seq, type, time, payload})
    prev_hash(n+1) = hash(n)
    runs.final_hash = hash(last event), stored when the run finishes

(every ``sha256`` an HMAC-SHA256 with the key when the run was recorded with
``AGENTOS_AUDIT_KEY`` set).

:func:`audit_run` checks a run against that structure and names what does not fit: an
edited, deleted, reordered, inserted or unhashed event, or a truncated run (how, in
:mod:`agentos.replay.chain`). Runs recorded before the audit trail existed have no hashes;
they are reported as such (``legacy``), not as tampered with.

It checks the run's outputs too (:mod:`agentos.replay.outputs`): every ``results``,
``llm_calls`` and ``tool_calls`` row against the digest written with it, and their number
against the seal written when the run finished (:mod:`agentos.store.digests`), naming the
row and the field that changed. Runs recorded before outputs were covered say so
(``outputs_covered`` False) instead of passing as if they had been checked.

Without a key it is not a signature: the algorithm is public, so someone who rewrites an
event, every later hash and the run's ``final_hash`` produces a valid chain; it catches
edits made with SQL by hand, partial deletions and corruption. With ``AGENTOS_AUDIT_KEY``
set when the run is recorded, every hash and digest is an HMAC with that key, and only
someone who knows the key can rebuild one; the audit then needs the same key. A run that
was keyed cannot be verified without it; a run that was not is reported as such when a key
is given (someone could have stripped the key from it and rebuilt it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from agentos.errors import AgentosError
from agentos.replay.chain import (
    SEARCH_BUDGET,
    AuditProblem,
    AuditProblemKind,
    ChainCheck,
    ChainEvent,
    load_chain,
)
from agentos.replay.outputs import check_outputs
from agentos.store import digests, queries
from agentos.store.db import Store
from agentos.store.migrations import MIGRATIONS_TABLE, m003_audit_and_tools, m009_output_digests

__all__ = [
    "SEARCH_BUDGET",
    "AuditError",
    "AuditProblem",
    "AuditProblemKind",
    "AuditReport",
    "audit_run",
]


class AuditError(AgentosError):
    """A run that cannot be audited at all (it does not exist)."""

    title = "audit"


@dataclass(slots=True)
class AuditReport:
    """The result of :func:`audit_run`. ``ok`` means every event verified and nothing is
    missing: the record is exactly what agentos wrote (see the module docstring for the
    limits of that proof)."""

    run_id: str
    ok: bool
    events: int
    """How many events the run has now."""
    problems: list[AuditProblem] = field(default_factory=list)
    legacy: bool = False
    """The run was recorded before the audit trail existed: none of its events has a
    hash, so it cannot be verified (``ok`` is False, but nothing points at tampering)."""
    notes: list[str] = field(default_factory=list)
    """Limits of this audit that are not problems (a run still running)."""
    outputs: dict[str, int] = field(default_factory=dict)
    """Output rows checked, per table (results, llm_calls, tool_calls)."""
    outputs_covered: bool = True
    """False for a run recorded before its outputs got digests: they are not verified."""
    keyed: bool = False
    """The run was recorded with an audit key (its hashes are HMACs)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def audit_run(store: Store, run_id: str) -> AuditReport:
    """Check run ``run_id`` (a unique prefix will do) against its hash chain.

    Read-only. Raises :class:`AuditError` for an unknown run id, StoreError for an
    ambiguous prefix.
    """
    run = queries.get_run(store, run_id)
    if run is None:
        raise AuditError(f"no run '{run_id}' in {store.path} (see `agentos runs`)")
    run_id = run["id"]
    events = load_chain(store, run_id)
    report = AuditReport(run_id=run_id, ok=False, events=len(events))
    final_hash: str | None = run.get("final_hash")
    before_audit_trail = _started_before(store, run["started_at"], m003_audit_and_tools)
    key, key_problem = _audit_key(run)
    report.keyed = run.get("audit_key") is not None
    if key_problem is not None and key_problem.kind != "unkeyed":
        report.problems.append(key_problem)  # nothing can be verified without the key
        return report

    if not any(e.hashed for e in events) and final_hash is None:
        _report_unhashed_run(report, events, before_audit_trail)
    else:
        check = ChainCheck(
            run_id,
            events,
            final_hash=final_hash,
            status=run["status"],
            before_audit_trail=before_audit_trail,
            key=key,
        )
        report.problems = check.problems()
    _audit_outputs(store, run, events, key, report)
    if key_problem is not None:
        report.problems.insert(0, key_problem)
    report.ok = not report.problems
    if run["status"] == "running":
        report.notes.append(
            "the run is still running: events may still be added, and events deleted from "
            "its end cannot be detected until it finishes"
        )
    elif run["status"] == "crashed":
        report.notes.append(
            "the run crashed (its process died) before it anchored its last event: events "
            "deleted from its end cannot be detected"
        )
    return report


def audit_runs(
    store: Store, *, agent: str | None = None, since: float | None = None
) -> Iterator[AuditReport]:
    """Audit every run (of ``agent``, started since ``since``), oldest first, one report
    at a time (the ids are read first, so a long audit holds no read transaction open)."""
    sql = "SELECT id FROM runs"
    where: list[str] = []
    params: list[Any] = []
    if agent is not None:
        where.append("agent = ?")
        params.append(agent)
    if since is not None:
        where.append("started_at >= ?")
        params.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    ids = [row[0] for row in store.db.execute(sql + " ORDER BY started_at, id", params)]
    for run_id in ids:
        yield audit_run(store, run_id)


def _audit_key(run: dict[str, Any]) -> tuple[bytes | None, AuditProblem | None]:
    """The key to check ``run`` with, and the problem that keying makes, if any."""
    marker = run.get("audit_key")
    key = digests.audit_key()
    env = digests.AUDIT_KEY_ENV
    if marker is None:
        if key is None:
            return None, None
        return None, AuditProblem(
            None,
            "unkeyed",
            f"the run was recorded without an audit key ({env} was not set), so its hashes "
            "prove no more than that nobody edited it by hand: anyone with write access "
            "could have rebuilt them (or stripped the key from it)",
        )
    if key is None:
        return None, AuditProblem(
            None,
            "keyed",
            f"the run's audit trail is keyed (it was recorded with {env} set): set {env} "
            "to that key to verify it",
        )
    if digests.key_marker(key) != marker:
        return None, AuditProblem(
            None,
            "wrong_key",
            f"the run does not verify with this {env}: it was recorded with a different key "
            "(or its key fingerprint, runs.audit_key, was changed)",
        )
    return key, None


def _audit_outputs(
    store: Store,
    run: dict[str, Any],
    events: list[ChainEvent],
    key: bytes | None,
    report: AuditReport,
) -> None:
    covered = (
        not _started_before(store, run["started_at"], m009_output_digests)
        or run.get("outputs_seal") is not None
        or (bool(events) and not _started_before(store, events[0].time, m009_output_digests))
    )
    check = check_outputs(store.db.conn, run, events, key) if covered else None
    if check is None:
        report.outputs_covered = False
        report.outputs = _count_outputs(store, run["id"])
        total = sum(report.outputs.values())
        report.notes.append(
            f"its outputs ({_describe(report.outputs) if total else 'none'}) were recorded "
            "before the audit trail covered outputs: they are not verified"
        )
        return
    report.outputs = check.rows
    report.problems.extend(check.problems)
    report.notes.extend(check.notes)


def _count_outputs(store: Store, run_id: str) -> dict[str, int]:
    counts = {}
    for table in digests.OUTPUT_TABLES:
        row = store.db.conn.execute(
            f"SELECT count(*) FROM [{table}] WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row[0]:
            counts[table] = row[0]
    return counts


def _describe(outputs: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in outputs.items())


def _started_before(store: Store, started_at: float, migration: Any) -> bool:
    row = store.db.conn.execute(
        f"SELECT applied_at FROM [{MIGRATIONS_TABLE}] WHERE name = ?",
        (migration.__name__,),
    ).fetchone()
    return row is not None and started_at < row[0]


def _report_unhashed_run(
    report: AuditReport, events: list[ChainEvent], before_audit_trail: bool
) -> None:
    count = f"its {len(events)} event(s)" if events else "it"
    if before_audit_trail:
        report.legacy = True
        detail = (
            f"the run was recorded before the audit trail existed; {count} carry no hashes "
            "and cannot be verified"
        )
    else:
        detail = (
            f"none of the run's {len(events)} event(s) carries a hash, although the run "
            "started after the audit trail existed: the hashes were removed, or an agentos "
            "older than the audit trail wrote them"
        )
    report.problems.append(AuditProblem(None, "unhashed", detail))
