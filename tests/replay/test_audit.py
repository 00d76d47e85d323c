"""The audit trail: a real run recorded through RunEvents, then tampered with plain SQL.

Every tampering test closes the store first and edits the file with ``sqlite3`` the way a
person with the file would, then audits it through a freshly opened store.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.errors import AgentosError
from agentos.replay.audit import AuditReport, audit_run
from agentos.store import RunEvents, Store, create_run, finish_run
from agentos.store.queries import event_hash, genesis_hash

SPEC = {"name": "summarize", "kind": "single-shot", "prompt": "Summarize {{ text }}"}
TYPES = [
    "run_started",
    "prompt",
    "request",
    "response",
    "parse_error",
    "prompt",
    "answer",
    "request",
    "response",
    "result",
    "stats",
    "run_finished",
]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentos.db"


def record(db_path: Path, *, finish: bool = True, anchor: bool = True) -> str:
    """A run of 12 events; finished with the chain's end passed in (``anchor``) or left to
    ``finish_run`` to look up."""
    with Store(db_path) as store:
        run_id = create_run(
            store, agent="summarize", kind="single-shot", spec=SPEC, wanted=1, agents_file=None
        )
        events = RunEvents(store, run_id)
        for i, type_ in enumerate(TYPES, start=1):
            events.add(type_, {"step": i, "text": f"ünïcode {i}", "score": i / 3, "ok": None})
        if finish:
            finish_run(
                store,
                run_id,
                status="succeeded",
                successes=1,
                attempts=2,
                final_hash=events.last_hash if anchor else None,
            )
    return run_id


def audit(db_path: Path, run_id: str) -> AuditReport:
    with Store(db_path) as store:
        return audit_run(store, run_id)


@pytest.fixture
def sql(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to tamper with; record the run before using it."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


def swap(sql: sqlite3.Connection, run_id: str, a: int, b: int) -> None:
    where = "WHERE run_id = ? AND seq = ?"
    sql.execute(f"UPDATE events SET seq = -1 {where}", (run_id, a))
    sql.execute(f"UPDATE events SET seq = ? {where}", (a, run_id, b))
    sql.execute("UPDATE events SET seq = ? WHERE run_id = ? AND seq = -1", (b, run_id))


def kinds(report: AuditReport) -> list[tuple[int | None, str]]:
    return [(p.seq, p.kind) for p in report.problems]


def test_an_untouched_run_is_ok(db_path: Path) -> None:
    run_id = record(db_path)
    report = audit(db_path, run_id)
    assert report.ok
    assert report.events == 12
    assert report.problems == []
    assert not report.legacy
    assert report.notes == []


def test_the_chain_is_the_documented_formula(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    rows = sql.execute(
        "SELECT seq, type, time, payload, prev_hash, hash FROM events WHERE run_id = ? "
        "ORDER BY seq",
        (run_id,),
    ).fetchall()
    expected_prev = hashlib.sha256(f"agentos-run:{run_id}".encode()).hexdigest()
    for seq, type_, time_, payload, prev_hash, hash_ in rows:
        document = {
            "run_id": run_id,
            "seq": seq,
            "type": type_,
            "time": time_,
            "payload": json.loads(payload),
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert prev_hash == expected_prev
        assert hash_ == hashlib.sha256((prev_hash + canonical).encode()).hexdigest()
        expected_prev = hash_
    final = sql.execute("SELECT final_hash FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    assert final == expected_prev


def test_finish_run_anchors_the_chain_by_itself(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path, anchor=False)
    last = sql.execute("SELECT hash FROM events WHERE run_id = ? AND seq = 12", (run_id,))
    final = sql.execute("SELECT final_hash FROM runs WHERE id = ?", (run_id,))
    assert final.fetchone()[0] == last.fetchone()[0]
    assert audit(db_path, run_id).ok

    with Store(db_path) as store:
        empty = create_run(
            store, agent="a", kind="single-shot", spec={}, wanted=1, agents_file=None
        )
        finish_run(store, empty, status="failed", error="no engine", successes=0, attempts=0)
    final = sql.execute("SELECT final_hash FROM runs WHERE id = ?", (empty,))
    assert final.fetchone()[0] == genesis_hash(empty)
    assert audit(db_path, empty).ok


def test_a_continued_run_continues_the_chain(db_path: Path) -> None:
    run_id = record(db_path, finish=False)
    with Store(db_path) as store:
        again = RunEvents(store, run_id)
        assert again.add("resumed", {}) == 13
        finish_run(store, run_id, status="succeeded", successes=1, attempts=1)
    assert audit(db_path, run_id).ok


def test_an_edited_event_is_named(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute(
        "UPDATE events SET payload = ? WHERE run_id = ? AND seq = 7",
        ('{"step": 7, "text": "forged"}', run_id),
    )
    report = audit(db_path, run_id)
    assert not report.ok
    assert kinds(report) == [(7, "edited")]
    assert report.problems[0].detail.startswith("event 7 (answer) was edited")


def test_an_edited_time_or_type_is_caught_too(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("UPDATE events SET time = time + 1 WHERE run_id = ? AND seq = 2", (run_id,))
    sql.execute("UPDATE events SET type = 'result' WHERE run_id = ? AND seq = 9", (run_id,))
    assert kinds(audit(db_path, run_id)) == [(2, "edited"), (9, "edited")]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = record(db_path)
    seq, type_, time_, prev_hash = sql.execute(
        "SELECT seq, type, time, prev_hash FROM events WHERE run_id = ? AND seq = 7", (run_id,)
    ).fetchone()
    forged = {"text": "forged"}
    new_hash = event_hash(prev_hash, run_id=run_id, seq=seq, type=type_, time=time_, payload=forged)
    sql.execute(
        "UPDATE events SET payload = ?, hash = ? WHERE run_id = ? AND seq = 7",
        (json.dumps(forged), new_hash, run_id),
    )
    report = audit(db_path, run_id)
    assert kinds(report) == [(7, "edited")]
    assert "between event 7 (answer) and event 8 (request)" in report.problems[0].detail


def test_a_deleted_event_is_named(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("DELETE FROM events WHERE run_id = ? AND seq = 5", (run_id,))
    report = audit(db_path, run_id)
    assert kinds(report) == [(5, "deleted")]
    assert report.problems[0].detail == "event 5 is missing"


def test_a_deletion_hidden_by_renumbering_is_named(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("DELETE FROM events WHERE run_id = ? AND seq IN (5, 6)", (run_id,))
    for seq in range(7, 13):
        sql.execute(
            "UPDATE events SET seq = ? WHERE run_id = ? AND seq = ?", (seq - 2, run_id, seq)
        )
    report = audit(db_path, run_id)
    assert kinds(report) == [(5, "deleted")]
    assert report.problems[0].detail.startswith(
        "events 5–6 are missing (later events were renumbered"
    )


def test_swapped_events_are_named_together(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    swap(sql, run_id, 3, 4)
    report = audit(db_path, run_id)
    assert kinds(report) == [(3, "reordered")]
    assert report.problems[0].detail.startswith("events 3 (request) and 4 (response) were swapped")


def test_exchanged_contents_are_named_as_a_swap(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    rows = {
        seq: (type_, time_, payload)
        for seq, type_, time_, payload in sql.execute(
            "SELECT seq, type, time, payload FROM events WHERE run_id = ? AND seq IN (9, 10)",
            (run_id,),
        )
    }
    for seq, other in ((9, 10), (10, 9)):
        sql.execute(
            "UPDATE events SET type = ?, time = ?, payload = ? WHERE run_id = ? AND seq = ?",
            (*rows[other], run_id, seq),
        )
    report = audit(db_path, run_id)
    assert kinds(report) == [(9, "reordered")]
    assert "events 9 (response) and 10 (result) were swapped" in report.problems[0].detail


def test_edited_deleted_and_swapped_events_in_one_run(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = record(db_path)
    sql.execute("UPDATE events SET payload = '{}' WHERE run_id = ? AND seq = 2", (run_id,))
    sql.execute("DELETE FROM events WHERE run_id = ? AND seq = 6", (run_id,))
    swap(sql, run_id, 9, 10)
    report = audit(db_path, run_id)
    assert kinds(report) == [(2, "edited"), (6, "deleted"), (9, "reordered")]
    details = [p.detail for p in report.problems]
    assert details[0].startswith("event 2 (prompt) was edited")
    assert details[1] == "event 6 is missing"
    assert details[2].startswith("events 9 (response) and 10 (result) were swapped")


def test_a_deleted_tail_is_caught_by_the_final_hash(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("DELETE FROM events WHERE run_id = ? AND seq >= 11", (run_id,))
    report = audit(db_path, run_id)
    assert kinds(report) == [(11, "truncated")]
    assert report.problems[0].detail.startswith("events after 10 are missing")
    assert "final hash does not match" in report.problems[0].detail


def test_removing_the_final_hash_is_not_a_way_out(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("DELETE FROM events WHERE run_id = ? AND seq = 12", (run_id,))
    sql.execute("UPDATE runs SET final_hash = NULL WHERE id = ?", (run_id,))
    # the outputs seal is bound to the final hash, so it no longer verifies either
    assert kinds(audit(db_path, run_id)) == [(None, "truncated"), (None, "output_unsealed")]


def test_events_added_after_the_run_finished(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    last_hash, time_ = sql.execute(
        "SELECT hash, time FROM events WHERE run_id = ? AND seq = 12", (run_id,)
    ).fetchone()
    forged = event_hash(last_hash, run_id=run_id, seq=13, type="result", time=time_, payload={})
    sql.execute(
        "INSERT INTO events (run_id, seq, type, time, payload, prev_hash, hash) "
        "VALUES (?, 13, 'result', ?, '{}', ?, ?)",
        (run_id, time_, last_hash, forged),
    )
    sql.execute(
        "INSERT INTO events (run_id, seq, type, time, payload) VALUES (?, 14, 'note', 0, '{}')",
        (run_id,),
    )
    report = audit(db_path, run_id)
    assert kinds(report) == [(13, "inserted"), (14, "inserted")]
    assert "added after the run finished" in report.problems[0].detail


def test_an_event_inserted_in_the_middle(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    for seq in range(12, 5, -1):
        sql.execute(
            "UPDATE events SET seq = ? WHERE run_id = ? AND seq = ?", (seq + 1, run_id, seq)
        )
    prev_hash, time_ = sql.execute(
        "SELECT hash, time FROM events WHERE run_id = ? AND seq = 5", (run_id,)
    ).fetchone()
    forged = event_hash(prev_hash, run_id=run_id, seq=6, type="answer", time=time_, payload={})
    sql.execute(
        "INSERT INTO events (run_id, seq, type, time, payload, prev_hash, hash) "
        "VALUES (?, 6, 'answer', ?, '{}', ?, ?)",
        (run_id, time_, prev_hash, forged),
    )
    report = audit(db_path, run_id)
    assert kinds(report) == [(6, "inserted")]
    assert report.problems[0].detail.startswith("event 6 (answer) was inserted")


def test_a_removed_hash_is_reported_as_unverifiable(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = record(db_path)
    sql.execute("UPDATE events SET hash = NULL WHERE run_id = ? AND seq IN (4, 5)", (run_id,))
    report = audit(db_path, run_id)
    assert kinds(report) == [(4, "unhashed")]
    assert report.problems[0].detail.startswith("events 4–5 have no hash")
    assert not report.legacy


def test_a_run_from_before_the_audit_trail_is_not_called_tampered(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = record(db_path)
    sql.execute(
        "UPDATE events SET hash = NULL, prev_hash = NULL, time = 1000 + seq WHERE run_id = ?",
        (run_id,),
    )
    sql.execute(
        "UPDATE runs SET final_hash = NULL, outputs_seal = NULL, started_at = 1000 WHERE id = ?",
        (run_id,),
    )
    report = audit(db_path, run_id)
    assert report.legacy
    assert not report.ok
    assert kinds(report) == [(None, "unhashed")]
    assert "recorded before the audit trail existed" in report.problems[0].detail

    sql.execute("UPDATE runs SET started_at = 4e9 WHERE id = ?", (run_id,))
    report = audit(db_path, run_id)
    assert not report.legacy
    assert "the hashes were removed" in report.problems[0].detail


def test_a_running_run_says_what_cannot_be_checked_yet(db_path: Path) -> None:
    run_id = record(db_path, finish=False)
    report = audit(db_path, run_id)
    assert report.ok
    assert "still running" in report.notes[0]


def test_unknown_and_prefix_run_ids(db_path: Path) -> None:
    run_id = record(db_path)
    assert audit(db_path, run_id[:16]).run_id == run_id
    with pytest.raises(AgentosError, match="no run 'feedface'"):
        audit(db_path, "feedface")


def test_a_crashed_run_is_not_called_tampered_and_says_what_cannot_be_checked(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    from agentos.store import owners

    run_id = record(db_path, finish=False)  # its store closed without finishing it
    with Store(db_path) as store:
        assert owners.sweep(store).runs == [run_id]
    report = audit(db_path, run_id)
    assert report.ok, report.problems
    assert any("crashed" in note and "cannot be detected" in note for note in report.notes)
    sql.execute("UPDATE events SET payload = '{}' WHERE run_id = ? AND seq = 3", (run_id,))
    assert kinds(audit(db_path, run_id)) == [(3, "edited")], "its chain is still checked"
