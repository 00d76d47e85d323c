"""A run's record as a timeline of steps: what ``agentos replay RUN_ID`` shows.

A *step* is one question to a model: attempt ``a``, turn ``t`` (a re-ask after an answer
that did not parse is the next turn of the same attempt). Steps are numbered 1, 2, … in
the order their requests were recorded; ``replay live --from-step N`` uses these numbers.
Each step carries its request, every HTTP attempt made for it (retries, engine, batch,
latency, cache hit), the answer, and what parsing made of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agentos.errors import AgentosError
from agentos.store import Store, queries


class ReplayError(AgentosError):
    """A run that cannot be shown or replayed as asked."""

    title = "replay"


@dataclass
class CallView:
    """One HTTP request made for a step."""

    call_id: str
    attempt: int
    engine: str
    model: str
    status: str
    latency_ms: float
    cache_hit: bool
    batch_id: str | None
    batch_size: int
    error: str | None
    error_class: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Step:
    number: int
    attempt: int
    turn: int
    time: float
    messages: list[dict[str, Any]]
    answer: str | None = None
    engine: str | None = None
    latency_ms: float | None = None
    parsed: Any = None
    repairs: list[str] = field(default_factory=list)
    parse_error: str | None = None
    error: str | None = None
    calls: list[CallView] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.parse_error is not None:
            return "parse error"
        if self.error is not None:
            return "error"
        if self.answer is None:
            return "no answer"
        return "ok"


@dataclass
class Timeline:
    run: dict[str, Any]
    steps: list[Step]
    started: dict[str, Any]
    finished: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        run = {k: v for k, v in self.run.items() if k != "spec"}
        return {
            "run": run,
            "spec": self.run.get("spec"),
            "started": self.started,
            "finished": self.finished,
            "steps": [{**asdict(s), "outcome": s.outcome} for s in self.steps],
        }


def load_run(store: Store, run_id: str) -> dict[str, Any]:
    run = queries.get_run(store, run_id)
    if run is None:
        raise ReplayError(f"no run '{run_id}' in {store.path} (see `agentos runs`)")
    return run


def build_timeline(store: Store, run_id: str) -> Timeline:
    """The run's steps from its events and model calls."""
    run = load_run(store, run_id)
    events = queries.run_events(store, run["id"])
    calls_by_job: dict[str, list[dict[str, Any]]] = {}
    for call in queries.run_llm_calls(store, run["id"]):
        calls_by_job.setdefault(call.get("job_id") or "", []).append(call)
    steps: dict[tuple[int, int], Step] = {}
    started: dict[str, Any] = {}
    finished: dict[str, Any] | None = None
    for event in events:
        payload = event.get("payload") or {}
        kind = event["type"]
        if kind == "run_started":
            started = payload
            continue
        if kind == "run_finished":
            finished = payload
            continue
        key = (int(payload.get("attempt", 0)), int(payload.get("turn", 0)))
        if kind == "request":
            steps[key] = Step(
                number=len(steps) + 1,
                attempt=key[0],
                turn=key[1],
                time=event["time"],
                messages=payload.get("messages") or [],
            )
            job_id = f"{run['id']}:{key[0]}:{key[1]}"
            steps[key].calls = [_call_view(c) for c in calls_by_job.get(job_id, [])]
            continue
        step = steps.get(key)
        if step is None:
            continue
        if kind == "answer":
            step.answer = payload.get("text")
            step.engine = payload.get("engine")
            step.latency_ms = payload.get("latency_ms")
        elif kind == "parsed":
            step.parsed = payload.get("data")
            step.repairs = list(payload.get("repairs") or [])
        elif kind == "parse_error":
            step.parse_error = payload.get("error")
        elif kind == "error":
            step.error = payload.get("error")
    ordered = sorted(steps.values(), key=lambda s: s.number)
    return Timeline(run=run, steps=ordered, started=started, finished=finished)


def _call_view(call: dict[str, Any]) -> CallView:
    return CallView(
        call_id=call["id"],
        attempt=int(call.get("attempt") or 0),
        engine=call.get("engine") or "",
        model=call.get("model") or "",
        status=call.get("status") or "",
        latency_ms=float(call.get("latency_ms") or 0.0),
        cache_hit=bool(call.get("cache_hit")),
        batch_id=call.get("batch_id"),
        batch_size=int(call.get("batch_size") or 1),
        error=call.get("error"),
        error_class=call.get("error_class"),
        prompt_tokens=int(call.get("prompt_tokens") or 0),
        completion_tokens=int(call.get("completion_tokens") or 0),
    )
