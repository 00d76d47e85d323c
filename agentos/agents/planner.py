"""Planner agents: a request becomes a plan of tool steps, checked, then run in order.

One :class:`PlannerRun` serves one request (the agent's rendered ``prompt``):

1. Ask the model for a plan (:mod:`agentos.tools.plans`: the JSON Schema of a plan over
   the agent's tools, few-shot examples chosen for the request).
2. Check it against the registry: every step names one of the agent's tools, with
   arguments that fit the tool's schema, and ``{{stepN}}`` references point back; and
   against the request, where the step's tool has a cheap check
   (:attr:`~agentos.tools.types.Tool.check`: the calculator's expression against the
   request's numbers, so "15% of 240" planned as ``15 * 240`` is caught). A plan that
   does not parse or does not check is answered with what is wrong and a new plan is
   asked for, at most ``max_replans`` times; then the run fails. A plan runs with what
   each check said: the outcome and the result say whether every step was verified, and
   why those that were not were not (no check, or one that cannot tell).
3. Run the steps in order. A step whose call fails transiently (a timeout, a dropped
   connection, a 5xx) is tried again after a backoff, up to ``STEP_ATTEMPTS`` tries;
   a refusal or any other failure ends the run, naming the step. Later steps never run
   after a failed one. A timed-out call of a tool that changes things is not tried again
   (it may have done its work before the timeout); a tool that knows nothing happened
   says so by raising a transient ``ToolError``, which is retried.
4. Record the result: the request, each step's tool, arguments and output, and the last
   step's output as the ``answer``.

A plan the response cache served (the same request planned before) runs only when none of
its steps changes things (:attr:`~agentos.tools.types.Tool.side_effects`); else nothing
runs and the run fails saying so (:meth:`PlannerRun._not_again`).

Every plan, check, tool call (``tool_calls`` and a ``tool_call`` event) and retry is
recorded. ``agentos ask "..."`` is one planner run, end to end, with the built-in tools
(:mod:`agentos.agents.ask`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentos.agents.base import RecordedRun, RunContext, retry_policy
from agentos.agents.parsing import parse_answer
from agentos.errors import AgentosError, NoEngineError, ParseError, SpecError
from agentos.router.jobs import InferenceRequest
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentSpec
from agentos.spec.templates import render
from agentos.store import queries
from agentos.store.writer import Update
from agentos.tools.calling import registry_for
from agentos.tools.plans import (
    REF,
    PlanStep,
    check_plan,
    fill_refs,
    plan_messages,
    plan_schema,
    plan_text,
    replan_message,
)
from agentos.tools.registry import ToolRegistry
from agentos.tools.types import StepCheck, Tool, ToolContext, ToolResult

STEP_ATTEMPTS = 3
"""Tries of one plan step whose call fails transiently, the first included."""

STEP_BACKOFF_S = 0.5
"""Seconds before the first retry of a step; each further wait doubles (with jitter)."""

_LOOSE_PLAN = {"type": "object", "properties": {"steps": {"type": "array"}}, "required": ["steps"]}
"""What a plan must look like to be checked step by step (the rest is :func:`check_plan`)."""


@dataclass
class StepRecord:
    """One step as it ran."""

    tool: str
    arguments: dict[str, Any]
    output: Any = None
    error: str | None = None
    tries: int = 0
    verified: bool = False
    """Whether the tool's check found the step fits the request (see ``check``)."""
    check: str = ""
    """What the check said, or why the step was not checked."""
    cache_hit: bool = False
    """Whether the step's answer came from the tool cache (the tool did not run)."""


@dataclass
class PlanOutcome(RunOutcome):
    """How a planner run ended, with its plan and what each step gave."""

    request: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    answer: Any = None
    plans: int = 0
    plan_cached: bool = False
    """Whether the plan that ran (or was not run) came from the response cache."""

    @property
    def verified(self) -> bool:
        """Whether every step ran and its tool's check found it fits the request."""
        return bool(self.steps) and all(step.verified for step in self.steps)

    @property
    def unverified(self) -> list[str]:
        """Why the steps that were not verified were not, one line each."""
        return [
            f"step {number} ({step.tool}): {step.check}"
            for number, step in enumerate(self.steps, start=1)
            if not step.verified
        ]


class PlannerRun(RecordedRun[PlanOutcome]):
    """One run of one planner agent: plan, check, re-plan, execute; all recorded."""

    def __init__(
        self,
        spec: AgentSpec,
        context: RunContext,
        *,
        variables: dict[str, Any] | None = None,
        fresh_hint: str | None = None,
    ) -> None:
        if spec.kind != "planner":
            raise ValueError(f"agent '{spec.name}' is not a planner agent")
        self.spec = spec
        self.context = context
        self.store = context.store
        self.display: Display = context.display
        self.agents_file = context.agents_file
        self.variables: dict[str, Any] = {**spec.vars, **(variables or {})}
        self.cap = spec.max_replans + 1
        self.run_id = ""
        self.status = "starting"
        self.successes = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.paused = False
        self.cancel_reason: str | None = None
        self.request = ""
        self.steps: list[StepRecord] = []
        self.answer: Any = None
        self._checks: list[StepCheck] = []
        """What each step's check said of the plan that runs, in step order."""
        self.plan_cached = False
        self.fresh_hint = fresh_hint or (
            f"To run it on every run, set cache: false on agent '{spec.name}'"
        )
        """How to plan anew, for the error of a cached plan that is not run again."""
        self._task: asyncio.Task[PlanOutcome] | None = None
        self._events: queries.RunEvents | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()

    # -- the run's life-cycle (RecordedRun) ----------------------------------------------

    async def _body(self) -> str | None:
        return await self._serve()

    def _outcome(self, status: str, error: str | None) -> PlanOutcome:
        return PlanOutcome(
            run_id=self.run_id,
            agent=self.spec.name,
            status=status,
            wanted=1,
            successes=self.successes,
            attempts=self.attempts,
            error=error,
            request=self.request,
            steps=list(self.steps),
            answer=self.answer,
            plans=self.attempts,
            plan_cached=self.plan_cached,
        )

    # -- planning --------------------------------------------------------------------

    async def _serve(self) -> str | None:
        """Plan and execute; the run's error, or None when it succeeded."""
        self.request = render(self.spec.prompt or "", self.variables).strip()
        self.event(
            "run_started",
            request=self.request,
            tools=list(self.spec.tools),
            max_replans=self.spec.max_replans,
            variables=self.variables,
        )
        registry = registry_for(self.context, self.store)
        tools = registry.resolve(
            self.spec.tools, agent=self.spec.name, file=self.context.agents_file
        )
        if not tools:
            raise SpecError(f"planner agent '{self.spec.name}' has no tools to plan with")
        system = render(self.spec.system, self.variables) if self.spec.system else None
        schema = plan_schema(tools)
        self.event("tools", tools=[tool.name for tool in tools], json_schema=schema)
        steps = await self._plan(
            tools, registry, plan_messages(self.request, tools, system=system), schema
        )
        if isinstance(steps, str):
            return steps
        if self.plan_cached:
            refused = self._not_again(steps)
            if refused is not None:
                return refused
        return await self._execute(steps, registry)

    def _not_again(self, plan: list[PlanStep]) -> str | None:
        """Why a plan served from the response cache is not run, or None when it may be.

        A cached plan is the answer to the same request asked before; its steps that
        change things (adding a todo, writing a file) ran then, and running them again
        because the model call was a cache hit would do twice what was asked once
        (``agentos ask`` pressed twice). Such a plan is not run at all, and the error says
        how to do it again on purpose (``--fresh``; ``cache: false`` for an agent). A
        plan of read-only steps runs: its tools are called anew (a calculation, a fresh
        GET), and the outcome says that its plan was cached.
        """
        changing = [
            (number, step.tool.name)
            for number, step in enumerate(plan, start=1)
            if step.tool.side_effects
        ]
        if not changing:
            return None
        self.event(
            "plan_not_run",
            reason="cached plan with side effects",
            steps=[{"step": number, "tool": name} for number, name in changing],
        )
        named = ", ".join(f"{number} ({name})" for number, name in changing)
        plural = "steps" if len(changing) > 1 else "step"
        verb = "change" if len(changing) > 1 else "changes"
        return (
            f"the plan came from the response cache (this request was planned before), and "
            f"its {plural} {named} {verb} things; a cached plan's steps that change things "
            f"are not run again, so nothing was run. {self.fresh_hint}"
        )

    async def _plan(
        self,
        tools: Sequence[Tool],
        registry: ToolRegistry,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
    ) -> list[PlanStep] | str:
        """A plan that checks, or the run's error once ``max_replans`` re-plans are spent."""
        spec = self.spec
        retry = retry_policy(spec)
        problems: list[str] = []
        while self.attempts < self.cap:
            await self._resumed.wait()
            self.attempts += 1
            number = self.attempts
            request = InferenceRequest(
                kind="chat",
                model=spec.model,
                messages=messages,
                params={"temperature": spec.temperature, "max_tokens": spec.max_tokens},
                json_schema=schema,
                sample=self.sample(number),
            )
            self.event("request", attempt=number, turn=0, messages=messages)
            try:
                completion = await self.context.router.submit(
                    request,
                    priority=spec.priority,
                    engine=spec.engine,
                    retry=retry,
                    run_id=self.run_id,
                    process=spec.name,
                    job_id=f"{self.run_id}:{number}:0",
                    use_cache=spec.cache,
                )
            except NoEngineError:
                raise
            except AgentosError as exc:
                problems = [exc.message]
                self.event(
                    "error", attempt=number, error=exc.message, error_class=type(exc).__name__
                )
                self._attempt_done(number, False, exc.message)
                continue
            self.event(
                "answer",
                attempt=number,
                turn=0,
                call_id=completion.call_id,
                engine=completion.engine,
                model=completion.model,
                text=completion.text,
                latency_ms=round(completion.latency_ms, 2),
                tokens=completion.prompt_tokens + completion.completion_tokens,
            )
            try:
                data = parse_answer(completion.text, _LOOSE_PLAN).data
                checked = check_plan(data, tools, registry)
            except ParseError as exc:
                self.context.router.reject(completion)
                checked = [f"the answer is not a plan: {exc.message}"]
            if checked and isinstance(checked[0], PlanStep):
                checked = self._check_steps([s for s in checked if isinstance(s, PlanStep)])
            if checked and isinstance(checked[0], PlanStep):
                plan = [s for s in checked if isinstance(s, PlanStep)]
                self.plan_cached = completion.cache_hit
                self.event(
                    "plan",
                    attempt=number,
                    steps=[{"tool": s.tool.name, "arguments": s.arguments} for s in plan],
                    cached=completion.cache_hit,
                )
                self._attempt_done(
                    number, True, plan_text([(s.tool.name, s.arguments) for s in plan])
                )
                return plan
            problems = [str(p) for p in checked]
            self.event("plan_invalid", attempt=number, errors=problems, text=completion.text)
            self._attempt_done(number, False, "; ".join(problems))
            messages = [
                *messages,
                {"role": "assistant", "content": completion.text},
                replan_message(self.request, problems),
            ]
        return (
            f"no plan that can run after {self.attempts} tries "
            f"({self.spec.max_replans} re-plans): {'; '.join(problems)}"
        )

    def _check_steps(self, plan: list[PlanStep]) -> list[PlanStep] | list[str]:
        """``plan`` when no step fails its tool's check against the request (what each
        check said is kept for the step records), else what is wrong, step by step."""
        problems: list[str] = []
        self._checks = []
        for number, step in enumerate(plan, start=1):
            if step.tool.check is None:
                self._checks.append(StepCheck(None, f"{step.tool.name} has no check"))
                continue
            if any(REF.search(str(value)) for value in step.arguments.values()):
                self._checks.append(StepCheck(None, "it uses an earlier step's output"))
                continue
            check = step.tool.check(step.arguments, self.request)
            self._checks.append(check)
            if check.ok is False:
                problems.append(f"step {number}: {check.detail}")
        return problems if problems else plan

    def _attempt_done(self, number: int, ok: bool, detail: str) -> None:
        if not ok:
            self.failed_attempts += 1
        self.store.submit(
            Update("runs", self.run_id, {"successes": self.successes, "attempts": self.attempts})
        )
        self.display.attempt_finished(
            self.run_id, self.spec.name, ok, self.successes, number, detail[:200]
        )

    # -- executing -------------------------------------------------------------------

    async def _execute(self, plan: list[PlanStep], registry: ToolRegistry) -> str | None:
        """Run the steps in order; the run's error, or None when every step succeeded."""
        context = ToolContext(
            config=registry.config,
            store=self.store,
            agent=self.spec.name,
            run_id=self.run_id,
            memory=self.context.memory,
        )
        outputs: list[Any] = []
        for number, step in enumerate(plan, start=1):
            await self._resumed.wait()
            arguments = fill_refs(step.arguments, outputs)
            check = self._checks[number - 1]
            record = StepRecord(
                tool=step.tool.name,
                arguments=arguments,
                verified=check.ok is True,
                check=check.detail,
            )
            self.steps.append(record)
            result = await self._run_step(registry, step.tool, arguments, context, number, record)
            if not result.ok:
                return f"step {number} ({step.tool.name}) failed: {result.error}"
            outputs.append(result.output)
            record.output = result.output
            record.cache_hit = result.cache_hit
            cached = " (from the tool cache)" if result.cache_hit else ""
            self.display.message(
                f"run {self.run_id} {self.spec.name}: step {number} {step.tool.name} "
                f"{json.dumps(arguments, ensure_ascii=False)}{cached} → "
                f"{json.dumps(result.output, ensure_ascii=False)[:200]}"
            )
        self.answer = outputs[-1] if outputs else None
        data = {
            "request": self.request,
            "steps": [
                {
                    "tool": s.tool,
                    "arguments": s.arguments,
                    "output": s.output,
                    "verified": s.verified,
                    "check": s.check,
                    **({"cache_hit": True} if s.cache_hit else {}),
                }
                for s in self.steps
            ],
            "answer": self.answer,
            "verified": all(s.verified for s in self.steps),
        }
        queries.record_result(self.store, self.run_id, f"{self.run_id}:plan", data)
        self.successes = 1
        self.store.submit(
            Update("runs", self.run_id, {"successes": self.successes, "attempts": self.attempts})
        )
        self.event("parsed", attempt=self.attempts, data=data, repairs=[])
        self.context.result(self.spec, self.run_id, data)
        return None

    async def _run_step(
        self,
        registry: ToolRegistry,
        tool: Tool,
        arguments: dict[str, Any],
        context: ToolContext,
        number: int,
        record: StepRecord,
    ) -> ToolResult:
        """One step, tried again while it fails transiently (``STEP_ATTEMPTS`` in all)."""
        while True:
            record.tries += 1
            result = await registry.call(
                tool,
                arguments,
                context=context,
                step=number,
                events=self._events,
                attempt=record.tries,
            )
            record.error = result.error
            if tool.side_effects and result.error_class == "TimeoutError":
                # the call may have done its work before it timed out: not a second time
                result.error = (
                    f"{result.error} (not tried again: the step changes things, and the "
                    "call may have done so before it timed out)"
                )
                return result
            if result.ok or not result.transient or record.tries >= STEP_ATTEMPTS:
                return result
            wait = STEP_BACKOFF_S * 2 ** (record.tries - 1) * (0.5 + random.random() / 2)
            self.event(
                "step_retry", step=number, tool=tool.name, error=result.error, wait_s=round(wait, 3)
            )
            await asyncio.sleep(wait)
