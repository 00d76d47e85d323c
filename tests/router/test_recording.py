"""The store's call recorder writes every field of a CallRecord, as the columns say."""

from __future__ import annotations

import json
from pathlib import Path

from agentos.router.jobs import CallRecord
from agentos.router.recording import StoreCallRecorder, call_row
from agentos.store import LLM_CALL_COLUMNS, Store, run_llm_calls
from agentos.store.queries import create_run


def _call(run_id: str | None, **overrides: object) -> CallRecord:
    fields: dict[str, object] = {
        "id": "c1",
        "run_id": run_id,
        "job_id": "j1",
        "attempt": 1,
        "engine": "e",
        "model": "m",
        "kind": "chat",
        "request": {"model": "m", "messages": [{"role": "user", "content": "héllo"}]},
        "response": {"choices": [{"message": {"content": "hi"}}], "usage": {"x": 1e-9}},
        "status": "ok",
        "error": None,
        "error_class": None,
        "http_status": 200,
        "latency_ms": 1.5,
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "started_at": 10.0,
        "finished_at": 10.5,
        "batch_id": "b1",
        "batch_size": 2,
        "cache_hit": True,
        "process": "agent-a",
    }
    fields.update(overrides)
    return CallRecord(**fields)  # type: ignore[arg-type]


def test_the_row_has_every_column_of_llm_calls() -> None:
    assert set(call_row(_call(None))) == set(LLM_CALL_COLUMNS)


def test_recorded_calls_read_back_as_they_were(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        run_id = create_run(store, agent="a", kind="prompt", spec={}, wanted=1, agents_file=None)
        call = _call(run_id)
        StoreCallRecorder(store).record_call(call)
        call.request["messages"].append({"role": "user", "content": "changed later"})
        StoreCallRecorder(store).record_call(_call(run_id, id="c2", response=None))
        store.flush()
        first, second = run_llm_calls(store, run_id)
    assert first["request"] == {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}
    assert first["response"] == {"choices": [{"message": {"content": "hi"}}], "usage": {"x": 1e-9}}
    assert (first["cache_hit"], first["batch_id"], first["batch_size"]) == (1, "b1", 2)
    assert second["response"] is None
    assert json.loads(json.dumps(first["request"])) == first["request"]
