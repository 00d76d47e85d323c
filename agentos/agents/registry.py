"""One place that knows which run class serves which kind of agent."""

from __future__ import annotations

from typing import Any

from agentos.agents.base import AgentRun, RunContext
from agentos.spec.agents import AgentSpec


def make_run(
    spec: AgentSpec,
    context: RunContext,
    *,
    variables: dict[str, Any] | None = None,
    forked_from: str | None = None,
    sample_base: int = 0,
) -> AgentRun:
    """A new, not yet started run of ``spec``; its attempt ``k`` asks for sample
    ``sample_base + k`` (:mod:`agentos.scheduler.samples`)."""
    run = _new_run(spec, context, variables=variables, forked_from=forked_from)
    run.sample_base = sample_base
    return run


def _new_run(
    spec: AgentSpec,
    context: RunContext,
    *,
    variables: dict[str, Any] | None,
    forked_from: str | None,
) -> AgentRun:
    if spec.kind == "prompt":
        from agentos.agents.prompt import PromptAgentRun

        return PromptAgentRun(
            spec,
            router=context.router,
            store=context.store,
            display=context.display,
            agents_file=context.agents_file,
            variables=variables,
            forked_from=forked_from,
            context=context,
        )
    if spec.kind == "planner":
        from agentos.agents.planner import PlannerRun

        return PlannerRun(spec, context, variables=variables)
    if spec.kind == "task":
        from agentos.agents.task import TaskRun

        return TaskRun(spec, context, variables=variables)
    if spec.kind == "team":
        from agentos.agents.team import TeamRun

        return TeamRun(spec, context, variables=variables)
    raise ValueError(f"unknown agent kind {spec.kind!r}")
