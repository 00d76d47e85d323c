"""The audit trail covers outputs: results, model answers and tool outputs.

A run is recorded through the code that records real runs (the router's call recorder,
the tool registry, ``record_result``, ``finish_run``), the store is closed, the file is
edited with plain ``sqlite3`` the way a person with the file would, and the run is audited
through a freshly opened store; the CLI tests run a real agent against the loopback
engine and ``agentos audit`` in a subprocess.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.replay.audit import AuditReport, audit_run
from agentos.router.jobs import CallRecord
from agentos.router.recording import StoreCallRecorder
from agentos.spec.config import ToolsConfig
from agentos.store import RunEvents, Store, create_run, digests, finish_run, new_id, record_result
from agentos.store.queries import event_hash, genesis_hash
from agentos.testing.engine import LoopbackEngine
from agentos.tools.registry import ToolContext, ToolRegistry
from tests.cli_process import run_agentos

KEY_ENV = digests.AUDIT_KEY_ENV


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentos.db"


@pytest.fixture
def sql(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


def call(run_id: str, job: str, content: str, *, status: str = "ok") -> CallRecord:
    now = time.time()
    return CallRecord(
        id=new_id(),
        run_id=run_id,
        job_id=job,
        attempt=1,
        engine="loop",
        model="m",
        kind="chat",
        request={"messages": [{"role": "user", "content": "Capital of France?"}]},
        response={"choices": [{"message": {"role": "assistant", "content": content}}]},
        status=status,
        error=None,
        error_class=None,
        http_status=200,
        latency_ms=1.5,
        prompt_tokens=4,
        completion_tokens=2,
        started_at=now,
        finished_at=now + 0.001,
    )


async def record(db_path: Path, *, finish: bool = True) -> str:
    """A run with 2 model calls (answer events refer to them), 2 tool calls, 2 results."""
    with Store(db_path) as store:
        run_id = create_run(
            store, agent="capitals", kind="single-shot", spec={}, wanted=2, agents_file=None
        )
        events = RunEvents(store, run_id)
        events.add("run_started", {"wanted": 2})
        recorder = StoreCallRecorder(store)
        registry = ToolRegistry(ToolsConfig(), store=store)
        context = ToolContext(config=registry.config, store=store, agent="capitals", run_id=run_id)
        for attempt, city in ((1, "Paris"), (2, "Lyon")):
            answer = call(run_id, f"{run_id}:{attempt}:1", json.dumps({"capital": city}))
            recorder.record_call(answer)
            events.add("answer", {"attempt": attempt, "call_id": answer.id, "text": city})
            await registry.call(
                registry.tools["calculator"],
                {"expression": f"{attempt} * 7"},
                context=context,
                step=attempt,
                events=events,
            )
            record_result(store, run_id, f"{run_id}:{attempt}", {"capital": city})
        if finish:
            events.add("run_finished", {"status": "succeeded"})
            finish_run(
                store,
                run_id,
                status="succeeded",
                successes=2,
                attempts=2,
                final_hash=events.last_hash,
            )
    return run_id


def audit(db_path: Path, run_id: str) -> AuditReport:
    with Store(db_path) as store:
        return audit_run(store, run_id)


def found(report: AuditReport) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(p.kind, p.table, p.fields) for p in report.problems]


def first_id(sql: sqlite3.Connection, table: str, run_id: str) -> str:
    row = sql.execute(f"SELECT id FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))
    return str(row.fetchone()[0])


@pytest.mark.parametrize("key", [None, b"k", b"x" * 100])
@pytest.mark.parametrize(
    "row",
    [
        {"id": "a", "run_id": "r", "response": '{"x": "ünï ✓"}', "status": "ok", "error": None},
        {"id": "b", "run_id": None, "response": None, "status": "error", "error": "HTTP 503"},
        {"id": "c", "run_id": "r", "response": "", "status": "", "error": ""},
    ],
)
def test_the_routers_fast_digest_is_the_general_one(
    key: bytes | None, row: dict[str, str | None]
) -> None:
    fast = digests.llm_call_digest(digests.mac_for(key), row)
    assert fast == digests.row_digest(key, "llm_calls", row)
    assert digests.check_row(key, "llm_calls", {**row, "digest": fast}).intact


async def test_an_untouched_run_verifies_with_its_outputs(db_path: Path) -> None:
    run_id = await record(db_path)
    report = audit(db_path, run_id)
    assert report.ok, report.problems
    assert report.outputs == {"results": 2, "llm_calls": 2, "tool_calls": 2}
    assert report.outputs_covered and not report.keyed


@pytest.mark.parametrize(
    ("table", "field", "value"),
    [
        ("results", "data", '{"capital": "Marseille"}'),
        ("llm_calls", "response", '{"choices": [{"message": {"content": "Marseille"}}]}'),
        ("llm_calls", "status", "error"),
        ("tool_calls", "output", "43"),
        ("tool_calls", "error", "division by zero"),
    ],
)
async def test_an_edited_output_is_named_by_row_and_field(
    db_path: Path, sql: sqlite3.Connection, table: str, field: str, value: str
) -> None:
    run_id = await record(db_path)
    row_id = first_id(sql, table, run_id)
    sql.execute(f"UPDATE {table} SET {field} = ? WHERE id = ?", (value, row_id))
    report = audit(db_path, run_id)
    assert not report.ok
    assert found(report) == [("output_edited", table, (field,))]
    problem = report.problems[0]
    assert problem.row == row_id
    assert problem.detail.startswith(f"{table} row {row_id} (")
    assert f"its {field} was edited" in problem.detail


async def test_a_deleted_model_call_is_counted_and_named(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = await record(db_path)
    row_id = first_id(sql, "llm_calls", run_id)
    sql.execute("DELETE FROM llm_calls WHERE id = ?", (row_id,))
    report = audit(db_path, run_id)
    assert found(report) == [("output_deleted", "llm_calls", ())]
    detail = report.problems[0].detail
    assert "1 llm_calls row(s) of the run are missing: it finished with 2, 1 are left" in detail
    assert f"llm_calls row {row_id} (model call of event 2)" in detail


async def test_a_deleted_result_is_counted(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = await record(db_path)
    sql.execute("DELETE FROM results WHERE id = ?", (first_id(sql, "results", run_id),))
    assert found(audit(db_path, run_id)) == [("output_deleted", "results", ())]


async def test_a_result_added_by_hand_is_found(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = await record(db_path)
    sql.execute(
        "INSERT INTO results (run_id, job_id, data, created_at) VALUES (?, 'x', '1', 1.0)",
        (run_id,),
    )
    report = audit(db_path, run_id)
    assert found(report) == [("output_unhashed", "results", ()), ("output_inserted", "results", ())]
    assert "has no digest" in report.problems[0].detail
    assert "1 results row(s) were added to the run after it finished" in report.problems[1].detail


async def test_a_copied_row_with_its_digest_does_not_verify_elsewhere(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    """A digest is bound to its row: copying a verified row (digest and all) into another
    run, or under another id, does not make a verified row there."""
    first = await record(db_path)
    second = await record(db_path)
    sql.execute(
        "INSERT INTO llm_calls (id, run_id, job_id, attempt, response, status, error, digest) "
        "SELECT 'forged', run_id, job_id, attempt, response, status, error, digest "
        "FROM llm_calls WHERE id = ?",
        (first_id(sql, "llm_calls", first),),
    )
    sql.execute(
        "UPDATE results SET data = (SELECT data FROM results WHERE run_id = ? LIMIT 1), "
        "digest = (SELECT digest FROM results WHERE run_id = ? LIMIT 1) WHERE id = ?",
        (first, first, first_id(sql, "results", second)),
    )
    report = audit(db_path, first)
    assert found(report) == [("output_edited", "llm_calls", ())]
    assert report.problems[0].row == "forged"
    assert "no longer matches its digest: it was moved or copied" in report.problems[0].detail
    assert found(audit(db_path, second)) == [("output_edited", "results", ())]


async def test_a_forger_without_the_key_cannot_rebuild_a_digest(
    db_path: Path, sql: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "correct horse battery staple")
    run_id = await record(db_path)
    row = dict(
        zip(
            ("id", "run_id", "job_id", "created_at"),
            sql.execute(
                "SELECT id, run_id, job_id, created_at FROM results WHERE run_id = ?", (run_id,)
            ).fetchone(),
            strict=True,
        )
    )
    row["data"] = '{"capital": "Marseille"}'
    rebuilt = digests.row_digest(None, "results", row)  # what someone without the key can do
    sql.execute(
        "UPDATE results SET data = ?, digest = ? WHERE id = ?", (row["data"], rebuilt, row["id"])
    )
    report = audit(db_path, run_id)
    assert report.keyed
    # the rebuilt digest's CRCs match the new data, so the field cannot be told; the row can
    assert found(report) == [("output_edited", "results", ())]
    assert report.problems[0].row == str(row["id"])
    assert "a field and its digest were both rewritten" in report.problems[0].detail


async def test_the_keyed_chain_needs_the_key(
    db_path: Path, sql: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "k1")
    run_id = await record(db_path)
    assert audit(db_path, run_id).ok

    monkeypatch.delenv(KEY_ENV)
    report = audit(db_path, run_id)
    assert not report.ok and report.keyed
    assert [p.kind for p in report.problems] == ["keyed"]
    assert f"set {KEY_ENV}" in report.problems[0].detail

    monkeypatch.setenv(KEY_ENV, "k2")
    report = audit(db_path, run_id)
    assert [p.kind for p in report.problems] == ["wrong_key"]
    assert "recorded with a different key" in report.problems[0].detail

    # the key is in every link: an edited event is found with the right key
    monkeypatch.setenv(KEY_ENV, "k1")
    sql.execute("UPDATE events SET payload = '{}' WHERE run_id = ? AND seq = 2", (run_id,))
    assert [(p.seq, p.kind) for p in audit(db_path, run_id).problems] == [(2, "edited")]


async def test_stripping_the_key_and_rebuilding_unkeyed_is_caught_by_the_key_holder(
    db_path: Path, sql: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forger rewrites a keyed run as an unkeyed one: every event hash, the final hash,
    the row digests and the seal recomputed with plain SHA-256 (which needs no key). Only
    an audit with the key can tell; it reports the run as not keyed."""
    monkeypatch.setenv(KEY_ENV, "k1")
    run_id = await record(db_path)
    monkeypatch.delenv(KEY_ENV)
    sql.execute("UPDATE runs SET audit_key = NULL WHERE id = ?", (run_id,))
    rows = sql.execute(
        "SELECT seq, type, time, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    prev = genesis_hash(run_id)
    for seq, type_, time_, payload in rows:
        link = event_hash(
            prev, run_id=run_id, seq=seq, type=type_, time=time_, payload=json.loads(payload)
        )
        sql.execute(
            "UPDATE events SET prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?",
            (prev, link, run_id, seq),
        )
        prev = link
    sql.execute("UPDATE runs SET final_hash = ? WHERE id = ?", (prev, run_id))
    for table in digests.OUTPUT_TABLES:
        cursor = sql.execute(f"SELECT * FROM {table} WHERE run_id = ?", (run_id,))
        names = [d[0] for d in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            sql.execute(
                f"UPDATE {table} SET digest = ? WHERE id = ?",
                (digests.row_digest(None, table, row), row["id"]),
            )
    digests.seal_outputs(sql, run_id, None)

    assert audit(db_path, run_id).ok  # without the key, a perfect forgery passes
    monkeypatch.setenv(KEY_ENV, "k1")
    report = audit(db_path, run_id)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["unkeyed"]


async def test_a_call_recorded_after_the_run_finished_is_noted_not_blamed(
    db_path: Path,
) -> None:
    run_id = await record(db_path)
    with Store(db_path) as store:
        StoreCallRecorder(store).record_call(call(run_id, f"{run_id}:3:1", "late"))
    report = audit(db_path, run_id)
    assert report.ok, report.problems
    assert report.outputs["llm_calls"] == 3
    assert any("1 llm_calls row(s) were recorded after the run finished" in n for n in report.notes)


async def test_a_removed_seal_is_reported(db_path: Path, sql: sqlite3.Connection) -> None:
    run_id = await record(db_path)
    sql.execute("UPDATE runs SET outputs_seal = NULL WHERE id = ?", (run_id,))
    assert [p.kind for p in audit(db_path, run_id).problems] == ["output_unsealed"]
    run_id = await record(db_path)
    sql.execute(
        "UPDATE runs SET outputs_seal = replace(outputs_seal, ':2:', ':3:') WHERE id = ?", (run_id,)
    )
    assert [p.kind for p in audit(db_path, run_id).problems] == ["output_unsealed"]


async def test_a_running_run_checks_rows_and_says_what_waits(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = await record(db_path, finish=False)
    report = audit(db_path, run_id)
    assert report.ok
    assert any("deleted ones can be detected once it finishes" in n for n in report.notes)
    sql.execute(
        "UPDATE tool_calls SET output = '0' WHERE id = ?", (first_id(sql, "tool_calls", run_id),)
    )
    assert found(audit(db_path, run_id)) == [("output_edited", "tool_calls", ("output",))]


async def test_a_run_from_before_outputs_were_covered_says_so(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    run_id = await record(db_path)
    sql.execute(
        "UPDATE _agentos_migrations SET applied_at = 4e9 WHERE name = 'm009_output_digests'"
    )
    for table in digests.OUTPUT_TABLES:
        sql.execute(f"UPDATE {table} SET digest = NULL")
    sql.execute("UPDATE runs SET outputs_seal = NULL")
    sql.execute("UPDATE results SET data = '\"edited\"'")
    report = audit(db_path, run_id)
    assert report.ok  # its events verify ...
    assert not report.outputs_covered  # ... and it says its outputs are not verified
    assert report.outputs == {"results": 2, "llm_calls": 2, "tool_calls": 2}
    assert any(
        "were recorded before the audit trail covered outputs: they are not verified" in note
        for note in report.notes
    )


# -- as a user runs it -----------------------------------------------------------------


AGENTS = """\
agents:
  - name: capitals
    prompt: 'Capital of France? ANSWER: {"capital": "Paris"}'
    response_format:
      capital: the capital
    life_cycle: {type: single-shot, length: 2}
"""


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def agentos(cwd: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_agentos(*args, cwd=cwd, env={KEY_ENV: key} if key is not None else None)


def run_agent(tmp_path: Path, engine: LoopbackEngine, key: str | None = None) -> tuple[Path, str]:
    (tmp_path / "agents.yaml").write_text(AGENTS)
    (tmp_path / "config.yaml").write_text(
        f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
    )
    db = tmp_path / "runs.db"
    done = agentos(tmp_path, "run", "agents.yaml", "--once", "--db", str(db), key=key)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = sqlite3.connect(db)
    (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
    conn.close()
    return db, run_id


def test_cli_audit_names_an_edited_result_and_model_answer(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    db, run_id = run_agent(tmp_path, engine)
    done = agentos(tmp_path, "audit", run_id, "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain intact" in done.stdout and "2 results" in done.stdout

    conn = sqlite3.connect(db, isolation_level=None)
    (result_id,) = conn.execute("SELECT id FROM results ORDER BY id LIMIT 1").fetchone()
    (call_id,) = conn.execute("SELECT id FROM llm_calls WHERE status = 'ok' LIMIT 1").fetchone()
    conn.execute('UPDATE results SET data = \'{"capital": "Lyon"}\' WHERE id = ?', (result_id,))
    conn.execute("UPDATE llm_calls SET response = '{}' WHERE id = ?", (call_id,))
    conn.close()
    for command in (["audit", run_id], ["replay", run_id, "--verify"]):
        done = agentos(tmp_path, *command, "--db", str(db))
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"tampered run {run_id}" in done.stdout
        assert f"results row {result_id} (job {run_id}:" in done.stdout
        assert "its data was edited" in done.stdout
        assert (
            f"llm_calls row {call_id}" in done.stdout and "its response was edited" in done.stdout
        )
    done = agentos(tmp_path, "audit", run_id, "--db", str(db), "--json")
    problems = json.loads(done.stdout)["problems"]
    assert {(p["table"], p["row"], tuple(p["fields"])) for p in problems} == {
        ("results", str(result_id), ("data",)),
        ("llm_calls", call_id, ("response",)),
    }


def test_cli_keyed_audit(tmp_path: Path, engine: LoopbackEngine) -> None:
    db, run_id = run_agent(tmp_path, engine, key="s3cret")
    done = agentos(tmp_path, "audit", run_id, "--db", str(db), key="s3cret")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keyed" in done.stdout and "chain intact" in done.stdout

    done = agentos(tmp_path, "audit", run_id, "--db", str(db))
    assert done.returncode == 1
    assert "cannot be verified" in done.stdout and f"set {KEY_ENV}" in done.stdout

    done = agentos(tmp_path, "audit", run_id, "--db", str(db), key="guess")
    assert done.returncode == 1
    assert "does not verify" in done.stdout and "different key" in done.stdout


def test_cli_audit_without_a_run_checks_every_run(tmp_path: Path, engine: LoopbackEngine) -> None:
    db, first = run_agent(tmp_path, engine)
    done = agentos(tmp_path, "run", "agents.yaml", "--once", "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    done = agentos(tmp_path, "audit", "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 runs audited: 2 verified, 0 not" in done.stdout
    assert "chain intact" not in done.stdout  # runs that verify are only counted

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "UPDATE results SET data = '\"x\"' WHERE id = "
        "(SELECT MIN(id) FROM results WHERE run_id = ?)",
        (first,),
    )
    conn.close()
    done = agentos(tmp_path, "audit", "--db", str(db))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"tampered run {first}" in done.stdout and "its data was edited" in done.stdout
    assert "2 runs audited: 1 verified, 1 not" in done.stdout

    done = agentos(tmp_path, "audit", "--db", str(db), "--json")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["run_id"] == first, r["ok"]) for r in lines] == [(True, False), (False, True)]
    done = agentos(tmp_path, "audit", "--db", str(db), "--since", "1d", "--agent", "nobody")
    assert done.returncode == 0 and "0 runs audited" in done.stdout
    done = agentos(tmp_path, "audit", first, "--db", str(db), "--agent", "x")
    assert done.returncode == 2 and "not both" in done.stderr
