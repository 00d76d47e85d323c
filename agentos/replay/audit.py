"""The audit trail: proof that a run's recorded events are the ones that were written.

Every event of a run carries a gap-free ``seq`` and a link in a hash chain (written by
:class:`~agentos.store.queries.RunEvents`)::

    prev_hash(1)   = genesis_hash(run_id) = sha256("agentos-run:" + run_id)
    hash(n)        = sha256(prev_hash(n) + canonical JSON of {run_id, seq, type, time, payload})
    prev_hash(n+1) = hash(n)
    runs.final_hash = hash(last event), stored when the run finishes

:func:`audit_run` checks a run against that structure and names what does not fit: an
edited, deleted, reordered, inserted or unhashed event, or a truncated run (how, in
:mod:`agentos.replay.chain`). Runs recorded before the audit trail existed have no hashes;
they are reported as such (``legacy``), not as tampered with.

What it is not: a signature. The algorithm is public and there is no secret, so someone who
rewrites an event, every later hash and the run's ``final_hash`` produces a valid chain.
The chain catches edits made with SQL by hand, partial deletions and corruption; proof
against a determined forger needs the final hash kept somewhere else.
"""

from __future__ import annotations

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
from agentos.store import queries
from agentos.store.db import Store
from agentos.store.migrations import MIGRATIONS_TABLE, m003_audit_and_tools

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
    before_audit_trail = _started_before_audit_trail(store, run["started_at"])

    if not any(e.hashed for e in events) and final_hash is None:
        _report_unhashed_run(report, events, before_audit_trail)
    else:
        check = ChainCheck(
            run_id,
            events,
            final_hash=final_hash,
            status=run["status"],
            before_audit_trail=before_audit_trail,
        )
        report.problems = check.problems()
        report.ok = not report.problems
    if run["status"] == "running":
        report.notes.append(
            "the run is still running: events may still be added, and events deleted from "
            "its end cannot be detected until it finishes"
        )
    return report


def _started_before_audit_trail(store: Store, started_at: float) -> bool:
    row = store.db.conn.execute(
        f"SELECT applied_at FROM [{MIGRATIONS_TABLE}] WHERE name = ?",
        (m003_audit_and_tools.__name__,),
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
