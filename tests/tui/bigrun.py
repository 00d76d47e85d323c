"""A long run for the timeline's tests and its measurement: thousands of events written
with the store's writer, as ``agentos run`` writes them, every attempt asking the same
long prompt (what a perpetual or high-``length`` agent does)."""

from __future__ import annotations

import json
from pathlib import Path

from agentos.store import Store
from agentos.store.writer import Insert

BIG_RUN = "019aa5d2bb00000000000001"
START = 1795248000.0
SYSTEM = "You extract dates from news items. " * 40
PROMPT = "Extract every date from: " + "the council met on 3 May and again later. " * 12


def write_big_run(db_path: Path, events: int = 10_000) -> str:
    """Run :data:`BIG_RUN` with ``events`` events (a ``run_started``, then per attempt a
    request, an answer and a parse, and a ``run_finished``); every tenth attempt also has
    a failed call before its answer. Returns the run id."""
    attempts = max(1, (events - 2) // 3)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    with Store(db_path) as store:
        store.submit(
            Insert(
                "runs",
                {
                    "id": BIG_RUN,
                    "agent": "extract-dates",
                    "kind": "prompt",
                    "status": "succeeded",
                    "started_at": START,
                    "finished_at": START + attempts * 0.5 + 1,
                    "wanted": attempts,
                    "successes": attempts,
                    "attempts": attempts,
                    "spec": "{}",
                    "pid": 4242,
                    "host": "studio",
                },
            )
        )
        seq = 0

        def event(at: float, type_: str, payload: dict[str, object]) -> None:
            nonlocal seq
            seq += 1
            row = {"run_id": BIG_RUN, "seq": seq, "type": type_, "time": START + at}
            store.submit(Insert("events", {**row, "payload": json.dumps(payload)}))

        event(0.001, "run_started", {"wanted": attempts, "attempt_cap": attempts})
        for a in range(1, attempts + 1):
            t = a * 0.5
            call = f"big-call-{a}"
            event(t, "request", {"attempt": a, "turn": 0, "messages": messages})
            if a % 10 == 0:
                store.submit(Insert("llm_calls", _call(f"{call}-failed", a, t + 0.1, "error")))
            store.submit(Insert("llm_calls", _call(call, a, t + 0.3, "ok")))
            answer = {"attempt": a, "turn": 0, "call_id": call, "engine": "local",
                      "model": "smollm2-135m", "text": '{"date": "3 May"}',
                      "latency_ms": 290.0, "tokens": 412}  # fmt: skip
            event(t + 0.3, "answer", answer)
            event(t + 0.31, "parsed", {"attempt": a, "turn": 0, "data": {"date": "3 May"}})
        event(attempts * 0.5 + 1, "run_finished", {"status": "succeeded", "successes": attempts})
    return BIG_RUN


def _call(call_id: str, attempt: int, finished: float, status: str) -> dict[str, object]:
    ok = status == "ok"
    return {
        "id": call_id,
        "run_id": BIG_RUN,
        "job_id": f"{BIG_RUN}:{attempt}:0",
        "attempt": attempt,
        "engine": "local",
        "model": "smollm2-135m",
        "kind": "chat",
        "request": "{}",
        "status": status,
        "error": None if ok else "connection reset",
        "error_class": None if ok else "EngineConnectionError",
        "latency_ms": 290.0 if ok else 80.0,
        "prompt_tokens": 400 if ok else 0,
        "completion_tokens": 12 if ok else 0,
        "batch_size": 4 if ok else 1,
        "cache_hit": 0,
        "started_at": START + finished - 0.29,
        "finished_at": START + finished,
    }
