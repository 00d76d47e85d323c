"""Runs, events, model calls, results and engine health through the query functions."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from agentos.errors import StoreError
from agentos.store import (
    LLM_CALL_COLUMNS,
    Insert,
    RunEvents,
    Store,
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
from agentos.store.queries import event_hash, genesis_hash

SPEC = {"name": "summarize", "kind": "single-shot", "prompt": "Summarize {{ text }}"}


def make_run(store: Store, agent: str = "summarize", parent_id: str | None = None) -> str:
    return create_run(
        store,
        agent=agent,
        kind="single-shot",
        spec=SPEC,
        wanted=3,
        agents_file="agents.yaml",
        parent_id=parent_id,
    )


def test_new_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 22 and int(i, 16) >= 0 for i in ids)
    assert int(ids[0][:12], 16) == pytest.approx(time.time() * 1000, abs=5000)


def test_create_run_is_committed_at_once(store: Store) -> None:
    run_id = make_run(store, parent_id=None)
    row = store.db.table("runs").get(run_id)  # no flush needed
    assert row["status"] == "running"
    assert row["pid"] == os.getpid()
    assert row["host"]
    assert row["started_at"] == pytest.approx(time.time(), abs=60)
    assert row["finished_at"] is None


def test_finish_run_records_the_outcome(store: Store) -> None:
    run_id = make_run(store)
    finish_run(store, run_id, status="failed", error="boom", successes=1, attempts=4)
    store.flush()
    run = get_run(store, run_id)
    assert run is not None
    assert (run["status"], run["error"], run["successes"], run["attempts"]) == (
        "failed",
        "boom",
        1,
        4,
    )
    assert run["finished_at"] >= run["started_at"]
    assert run["spec"] == SPEC
    with pytest.raises(ValueError, match="running"):
        finish_run(store, run_id, status="running", successes=0, attempts=0)


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    a1 = make_run(store, "alpha")
    b1 = make_run(store, "beta")
    a2 = make_run(store, "alpha")
    finish_run(store, a1, status="succeeded", successes=3, attempts=3)
    store.flush()

    assert [r["id"] for r in list_runs(store)] == [a2, b1, a1]
    assert [r["id"] for r in list_runs(store, agent="alpha")] == [a2, a1]
    assert [r["id"] for r in list_runs(store, status="running")] == [a2, b1]
    assert [r["id"] for r in list_runs(store, agent="alpha", status="succeeded")] == [a1]
    assert [r["id"] for r in list_runs(store, limit=1)] == [a2]
    assert list_runs(store, agent="gamma") == []
    assert all("spec" not in r for r in list_runs(store))


def test_get_run_by_full_id_or_unique_prefix(store: Store) -> None:
    first = make_run(store)
    second = make_run(store)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    common = first[:shared]
    assert shared >= 8  # both ids start with the same milliseconds
    by_full_id = get_run(store, first)
    by_prefix = get_run(store, second[: shared + 1])
    assert by_full_id is not None and by_full_id["id"] == first
    assert by_prefix is not None and by_prefix["id"] == second
    assert get_run(store, "ffffffff") is None
    assert get_run(store, "") is None
    assert get_run(store, "%") is None  # LIKE wildcards are taken literally
    with pytest.raises(StoreError) as info:
        get_run(store, common)
    assert first in str(info.value)
    assert second in str(info.value)


def test_event_seq_is_gap_free_per_run_across_threads(store: Store) -> None:
    run_a, run_b = make_run(store), make_run(store)
    events_a, events_b = RunEvents(store, run_a), RunEvents(store, run_b)

    def add_many(events: RunEvents, n: int) -> None:
        for i in range(n):
            events.add("step", {"i": i})

    threads = [threading.Thread(target=add_many, args=(events_a, 250)) for _ in range(4)]
    threads.append(threading.Thread(target=add_many, args=(events_b, 100)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.flush()

    assert [e["seq"] for e in run_events(store, run_a)] == list(range(1, 1001))
    assert [e["seq"] for e in run_events(store, run_b)] == list(range(1, 101))
    assert run_events(store, run_b)[0]["payload"] == {"i": 0}

    again = RunEvents(store, run_b)
    assert again.add("resumed", {}) == 101


def test_every_event_hash_matches_its_stored_payload(store: Store) -> None:
    """Payloads orjson writes like json (the fast path) and those it does not (exponent
    floats, NaN, integers beyond 64 bits, non-string keys) are chained alike: each hash is
    the one the audit recomputes from the decoded stored payload."""
    run_id = make_run(store)
    events = RunEvents(store, run_id)
    payloads = [
        {"messages": [{"role": "user", "content": "héllo"}], "attempt": 1, "t": (1, 2.5)},
        {"tiny": 1e-9, "huge": 1e300},
        {"nan": float("nan")},
        {"big": 2**80},
        {"keys": {1: "one", 2: "two"}},
        {},
    ]
    for payload in payloads:
        events.add("step", payload)
    store.flush()
    rows = store.db.execute(
        "SELECT seq, type, time, payload, prev_hash, hash FROM events WHERE run_id = ? "
        "ORDER BY seq",
        [run_id],
    ).fetchall()
    prev = genesis_hash(run_id)
    for seq, type_, time_, payload, prev_hash, digest in rows:
        assert prev_hash == prev
        decoded = json.loads(payload)
        expected = event_hash(prev, run_id=run_id, seq=seq, type=type_, time=time_, payload=decoded)
        assert digest == expected, payload
        prev = digest
    assert json.loads(rows[1][3]) == {"tiny": 1e-9, "huge": 1e300}
    assert json.loads(rows[3][3]) == {"big": 2**80}
    assert events.last_hash == prev


def test_llm_calls_round_trip(store: Store) -> None:
    run_id = make_run(store)
    request = {"model": "smollm2", "messages": [{"role": "user", "content": "héllo"}]}
    call_id = record_llm_call(
        store,
        run_id=run_id,
        job_id="j1",
        attempt=1,
        engine="local",
        model="smollm2",
        kind="chat",
        request=request,
        response={"choices": [{"message": {"content": "hi"}}]},
        status="ok",
        latency_ms=12.5,
        prompt_tokens=7,
        completion_tokens=2,
        cache_hit=False,
        started_at=time.time(),
    )
    record_llm_call(store, run_id=None, kind="embeddings", request={"input": ["x"]})
    store.flush()
    calls = run_llm_calls(store, run_id)
    assert [c["id"] for c in calls] == [call_id]
    assert calls[0]["request"] == request
    assert calls[0]["response"]["choices"][0]["message"]["content"] == "hi"
    assert calls[0]["cache_hit"] == 0
    assert store.db.table("llm_calls").count == 2
    with pytest.raises(ValueError, match="temperature"):
        record_llm_call(store, temperature=0.2)
    assert "request" in LLM_CALL_COLUMNS


def test_results_round_trip(store: Store) -> None:
    run_id = make_run(store)
    record_result(store, run_id, "j1", {"summary": "short"})
    record_result(store, run_id, None, ["a", 1])
    store.flush()
    assert [r["data"] for r in run_results(store, run_id)] == [{"summary": "short"}, ["a", 1]]


def test_events_for_an_unknown_run_are_refused(store: Store) -> None:
    RunEvents(store, "no-such-run").add("step", {})
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        store.flush()


def test_engine_health_upsert_replaces_the_previous_check(store: Store) -> None:
    upsert_engine_health(
        store,
        name="local",
        base_url="http://127.0.0.1:1",
        models=["smollm2"],
        capabilities=["chat"],
        healthy=False,
        detail="starting",
    )
    upsert_engine_health(
        store,
        name="local",
        base_url="http://127.0.0.1:1",
        models=["smollm2"],
        capabilities=["chat", "completions"],
        healthy=True,
        checked_at=123.0,
    )
    store.flush()
    assert engine_health(store) == [
        {
            "name": "local",
            "base_url": "http://127.0.0.1:1",
            "models": ["smollm2"],
            "capabilities": ["chat", "completions"],
            "healthy": True,
            "detail": None,
            "checked_at": 123.0,
        }
    ]


def test_json_columns_written_directly_are_decoded_too(store: Store) -> None:
    run_id = make_run(store)
    store.submit(
        Insert(
            "events",
            {"run_id": run_id, "seq": 1, "type": "raw", "time": 0.0, "payload": "not json"},
        )
    )
    store.flush()
    assert run_events(store, run_id)[0]["payload"] == "not json"
