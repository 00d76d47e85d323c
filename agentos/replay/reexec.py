"""Re-executing a recorded run: ``exact`` (nothing contacted) and ``live`` (today's engines).

Both run the agent again from the spec snapshot stored with the run — not from today's
agents.yaml — through the normal agent code, with a stand-in router (``RecordRouter``)
that answers each step from the record:

- ``exact``: every step is answered from the record, so no engine is contacted. Before
  answering, the stand-in compares the request the agent asks now with the recorded one;
  the first step whose request differs stops the replay and is reported with the
  difference. The replay writes to a scratch database, never to the user's.
- ``live``: steps before ``from_step`` are answered from the record (when their request is
  unchanged); from there on the real router asks today's engines, with the cache
  bypassed. The new run is recorded in the user's database, linked to the original
  (``forked_from``), and the results are compared step by step.

In both, the agent's tool calls are answered from the original run's record, not run
again (:mod:`agentos.replay.tools`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentos.agents.base import AgentRun, ModelRouter, RunContext
from agentos.agents.registry import make_run
from agentos.errors import EngineError
from agentos.replay.timeline import ReplayError, Step, Timeline, build_timeline
from agentos.replay.tools import RecordedToolRegistry, recorded_tool_calls
from agentos.router.engines import open_engines, router_settings
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import Router
from agentos.scheduler.display import Display, RunOutcome
from agentos.scheduler.samples import record_base
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.config import Config, ToolsConfig
from agentos.store import Store, queries


class ReplayDivergence(ReplayError):
    """The replayed run asked something the record does not have."""

    def __init__(self, message: str, *, step: Step | None, difference: list[str]) -> None:
        self.step = step
        self.difference = difference
        super().__init__(message)


def stored_spec(run: dict[str, Any]) -> AgentSpec:
    """The agent spec the run was recorded with; an error if it no longer loads."""
    spec = run.get("spec")
    if not isinstance(spec, dict):
        raise ReplayError(f"run {run['id']} has no stored agent spec to replay")
    try:
        return AgentSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReplayError(
            f"the agent spec stored with run {run['id']} no longer loads in this agentos "
            f"({where}: {first['msg']}); it cannot be replayed"
        ) from None


REPLAYABLE_KINDS = ("prompt", "team")


def _replayable(spec: AgentSpec, run: dict[str, Any]) -> None:
    if spec.kind not in REPLAYABLE_KINDS:
        raise ReplayError(
            f"run {run['id']} is of a {spec.kind} agent; re-executing {spec.kind} runs is not "
            "supported (their Python code or tools would run again): `agentos replay "
            f"{run['id']}` shows its record"
        )


def _make_run(
    spec: AgentSpec,
    timeline: Timeline,
    router: ModelRouter,
    store: Store,
    display: Display,
    *,
    source: Store,
    live: bool,
    diverged: Callable[[str], None] | None = None,
    config: Config | None = None,
    forked_from: str | None = None,
) -> AgentRun:
    """The run object for a replay: the agent's own kind, with team members taken from the
    record (so today's agents.yaml does not matter), asking for the samples the recorded
    run asked for, its tool calls answered from the record of the original run in
    ``source`` (:mod:`agentos.replay.tools`)."""
    started = timeline.started or {}
    agents = None
    if spec.kind == "team":
        members = [
            AgentSpec.model_validate(m) for m in (started.get("member_specs") or {}).values()
        ]
        agents = AgentsFile(
            path=Path(f"<record of run {timeline.run['id']}>"), agents=[spec, *members]
        )
    agents_file = timeline.run.get("agents_file")
    recorded = RecordedToolRegistry(
        config.tools if config is not None else ToolsConfig(),
        store=store,
        # user tools are looked for next to the agents file, as in the original run
        base_dir=Path(agents_file).resolve().parent if agents_file else None,
        recorded=recorded_tool_calls(source, timeline.run["id"]),
        live=live,
        diverged=diverged,
    )
    context = RunContext(
        router=router,
        store=store,
        display=display,
        agents_file=agents_file,
        agents=agents,
        tools=recorded,
        config=config,
    )
    return make_run(
        spec,
        context,
        variables=started.get("variables") or {},
        forked_from=forked_from,
        sample_base=timeline.run.get("sample_base") or 0,
    )


def _refuse_unfinished(run: dict[str, Any]) -> None:
    if run["status"] == "running":
        raise ReplayError(
            f"run {run['id']} is still in progress (status running, pid {run.get('pid')}); "
            "replay it once it has finished"
        )


def message_difference(recorded: list[dict[str, Any]], asked: list[dict[str, Any]]) -> list[str]:
    """Human-readable lines saying how two conversations differ (empty when equal)."""
    lines: list[str] = []
    if len(recorded) != len(asked):
        lines.append(f"recorded {len(recorded)} messages, now {len(asked)}")
    for i, (old, new) in enumerate(zip(recorded, asked, strict=False)):
        if old == new:
            continue
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                lines.append(
                    f"message {i + 1} {key}: recorded {json.dumps(old.get(key))[:300]}, "
                    f"now {json.dumps(new.get(key))[:300]}"
                )
    return lines


@dataclass
class StepComparison:
    number: int
    attempt: int
    turn: int
    source: str
    same_answer: bool
    same_result: bool
    old_answer: str | None
    new_answer: str | None
    old_result: Any
    new_result: Any


@dataclass
class ReplayReport:
    mode: str
    original: dict[str, Any]
    outcome: RunOutcome | None
    reproduced: bool
    divergence: ReplayDivergence | None = None
    steps: list[StepComparison] = field(default_factory=list)
    new_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "original": self.original["id"],
            "new_run": self.new_run_id,
            "reproduced": self.reproduced,
            "status": {
                "original": self.original["status"],
                "replay": self.outcome.status if self.outcome else None,
            },
            "divergence": None
            if self.divergence is None
            else {
                "message": self.divergence.message,
                "step": self.divergence.step.number if self.divergence.step else None,
                "difference": self.divergence.difference,
            },
            "steps": [s.__dict__ for s in self.steps],
        }


class RecordRouter:
    """Answers an agent's requests from a recorded run (see the module docstring)."""

    def __init__(
        self,
        timeline: Timeline,
        store: Store,
        *,
        live: ModelRouter | None = None,
        from_step: int | None = None,
    ) -> None:
        self.timeline = timeline
        self.original_id = timeline.run["id"]
        self.steps = {(s.attempt, s.turn): s for s in timeline.steps}
        self.live = live
        self.from_step = from_step
        self.sources: dict[tuple[int, int], str] = {}
        self.divergence: ReplayDivergence | None = None
        self._calls = {c["id"]: c for c in queries.run_llm_calls(store, self.original_id)}

    def reject(self, completion: Completion) -> None:
        """A refused answer: the live router's cache drops it (a recorded answer has no
        cache entry, so that is a no-op for it)."""
        if self.live is not None:
            self.live.reject(completion)

    async def submit(
        self,
        request: InferenceRequest,
        *,
        priority: str = "user",
        engine: str | None = None,
        retry: RetryPolicy | None = None,
        run_id: str | None = None,
        process: str = "",
        job_id: str | None = None,
        use_cache: bool = True,
        deadline_s: float | None = None,
    ) -> Completion:
        assert job_id is not None
        _, attempt_s, turn_s = job_id.rsplit(":", 2)
        key = (int(attempt_s), int(turn_s))
        step = self.steps.get(key)
        live_now = self.live is not None and (
            self.from_step is None or step is None or step.number >= self.from_step
        )
        difference = (
            message_difference(step.messages, request.messages or []) if step else ["no record"]
        )
        if not live_now and step is not None and not difference:
            self.sources[key] = "record"
            return self._recorded(step)
        if self.live is None:
            if step is None:
                raise self._diverged(
                    f"the replay asks for attempt {key[0]} turn {key[1]}, which the original "
                    "run never asked (its record ends before it)",
                    step=None,
                    difference=[],
                )
            raise self._diverged(
                f"step {step.number} (attempt {step.attempt} turn {step.turn}) asks something "
                "else than the record",
                step=step,
                difference=difference,
            )
        self.sources[key] = "live"
        return await self.live.submit(
            request,
            priority=priority,
            engine=engine,
            retry=retry,
            run_id=run_id,
            process=process,
            job_id=job_id,
            use_cache=False,
            deadline_s=deadline_s,
        )

    def diverge_on_tool(self, reason: str) -> None:
        """A tool call the record does not have (:mod:`agentos.replay.tools`)."""
        self._diverged(reason, step=None, difference=[])

    def _diverged(
        self, message: str, *, step: Step | None, difference: list[str]
    ) -> ReplayDivergence:
        """The first divergence is kept: whatever the agent does with the error, the replay
        reports the step where the record stopped matching."""
        error = ReplayDivergence(message, step=step, difference=difference)
        if self.divergence is None:
            self.divergence = error
        return error

    def _recorded(self, step: Step) -> Completion:
        ok = [c for c in step.calls if c.status == "ok"]
        if not ok:
            last = step.calls[-1] if step.calls else None
            raise EngineError(
                (last.error if last and last.error else "the recorded request failed")
                + " (served from the record)"
            )
        view = ok[-1]
        raw = self._calls.get(view.call_id, {})
        response = raw.get("response") or {}
        return Completion(
            text=step.answer or "",
            engine=view.engine,
            model=view.model,
            prompt_tokens=view.prompt_tokens,
            completion_tokens=view.completion_tokens,
            latency_ms=0.0,
            call_id=view.call_id,
            response=response if isinstance(response, dict) else {},
            cache_hit=True,
        )


def compare_steps(
    old: Timeline, new: Timeline, sources: dict[tuple[int, int], str]
) -> list[StepComparison]:
    by_key = {(s.attempt, s.turn): s for s in old.steps}
    out = []
    for step in new.steps:
        before = by_key.get((step.attempt, step.turn))
        out.append(
            StepComparison(
                number=step.number,
                attempt=step.attempt,
                turn=step.turn,
                source=sources.get((step.attempt, step.turn), "live"),
                same_answer=before is not None and before.answer == step.answer,
                same_result=before is not None
                and before.parsed == step.parsed
                and before.parse_error == step.parse_error,
                old_answer=before.answer if before else None,
                new_answer=step.answer,
                old_result=(
                    before.parsed
                    if before and before.parsed is not None
                    else (before.parse_error if before else None)
                ),
                new_result=step.parsed if step.parsed is not None else step.parse_error,
            )
        )
    return out


@contextlib.asynccontextmanager
async def _scratch_store() -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory(prefix="agentos-replay-") as folder:
        store = Store(Path(folder) / "replay.db")
        try:
            yield store
        finally:
            store.close()


async def replay_exact(store: Store, run_id: str, display: Display) -> ReplayReport:
    """Re-execute a run with every answer from the record; nothing is contacted."""
    original = build_timeline(store, run_id)
    _refuse_unfinished(original.run)
    spec = stored_spec(original.run)
    _replayable(spec, original.run)
    router = RecordRouter(original, store)
    async with _scratch_store() as scratch:
        run = _make_run(
            spec,
            original,
            router,
            scratch,
            display,
            source=store,
            live=False,
            diverged=lambda reason: router.diverge_on_tool(reason),
        )
        outcome = await run.run()
        if router.divergence is not None:
            return ReplayReport(
                mode="exact",
                original=original.run,
                outcome=outcome,
                reproduced=False,
                divergence=router.divergence,
            )
        scratch.flush()
        replayed = build_timeline(scratch, outcome.run_id)
    steps = compare_steps(original, replayed, router.sources)
    same = (
        outcome.status == original.run["status"]
        and outcome.successes == (original.run.get("successes") or 0)
        and outcome.attempts == (original.run.get("attempts") or 0)
        and len(replayed.steps) == len(original.steps)
        and all(s.same_answer and s.same_result for s in steps)
    )
    return ReplayReport(
        mode="exact", original=original.run, outcome=outcome, reproduced=same, steps=steps
    )


async def replay_live(
    store: Store,
    run_id: str,
    display: Display,
    live: ModelRouter,
    *,
    from_step: int = 1,
    config: Config | None = None,
) -> ReplayReport:
    """Re-execute a run against today's engines from ``from_step``; records a new run.
    ``config``'s tool settings apply to the tool calls that run anew."""
    original = build_timeline(store, run_id)
    _refuse_unfinished(original.run)
    if from_step < 1:
        raise ReplayError(f"--from-step must be 1 or more, got {from_step}")
    if from_step > len(original.steps) + 1:
        raise ReplayError(
            f"--from-step {from_step} is past the run's last step ({len(original.steps)})"
        )
    spec = stored_spec(original.run)
    _replayable(spec, original.run)
    router = RecordRouter(original, store, live=live, from_step=from_step)
    run = _make_run(
        spec,
        original,
        router,
        store,
        display,
        source=store,
        live=True,
        config=config,
        forked_from=original.run["id"],
    )
    outcome = await run.run()
    record_base(store, outcome.run_id, run.sample_base)
    store.flush()
    replayed = build_timeline(store, outcome.run_id)
    steps = compare_steps(original, replayed, router.sources)
    same = outcome.status == original.run["status"] and all(
        s.same_answer and s.same_result for s in steps
    )
    return ReplayReport(
        mode="live",
        original=original.run,
        outcome=outcome,
        reproduced=same,
        steps=steps,
        new_run_id=outcome.run_id,
    )


async def replay_live_on_engines(
    store: Store, run_id: str, config: Config, display: Display, *, from_step: int = 1
) -> ReplayReport:
    """:func:`replay_live` against the engines of ``config`` (``agentos replay RUN live``):
    they and a router over them are opened for the replay and closed after it, and the
    router records the new run's model calls in ``store``."""
    async with (
        open_engines(config) as engines,
        Router(engines, StoreCallRecorder(store), settings=router_settings(config)) as router,
    ):
        return await replay_live(store, run_id, display, router, from_step=from_step, config=config)
