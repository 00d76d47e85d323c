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
) -> AgentRun:
    """A new, not yet started run of ``spec``."""
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
