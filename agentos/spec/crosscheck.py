"""Checks that need both files: every engine and model an agent names is configured.

Done before anything runs so that a typo in ``engine:`` is reported at its line in
agents.yaml, not as a :class:`~agentos.errors.NoEngineError` minutes into a run. A model
is only checked against engines whose models are known from the config (a local engine's
``model_name``, an openai engine's ``models``); models detected at start-up are not known
yet.

:func:`check_agent_kinds` adds what only the agent kinds and the tool registry can
check (``agentos run`` and ``agentos validate`` call both).
"""

from __future__ import annotations

from pathlib import Path

from agentos.spec.agents import AgentsFile
from agentos.spec.config import Config


def check_agents_against_config(agents: AgentsFile, config: Config) -> None:
    """Raise :class:`~agentos.errors.SpecError` at the agent's key for an unknown engine
    or a model that no candidate engine serves."""
    engines = {engine.name: engine for engine in config.resolved_engines()}
    for agent in agents:
        if agent.engine is not None and agent.engine not in engines:
            raise agents.error(
                agent.name,
                ("engine",),
                f"unknown engine '{agent.engine}'; known engines: {', '.join(engines)}",
            )
        if agent.model is None:
            continue
        candidates = [engines[agent.engine]] if agent.engine else list(engines.values())
        declared = [engine.declared_models() for engine in candidates]
        if any(models is None or agent.model in models for models in declared):
            continue
        served = "; ".join(
            f"{engine.name}: {', '.join(models or [])}"
            for engine, models in zip(candidates, declared, strict=True)
        )
        raise agents.error(
            agent.name, ("model",), f"no engine serves model '{agent.model}' ({served})"
        )


def check_agent_kinds(agents: AgentsFile, path: Path, config: Config) -> None:
    """What only the agent kinds can check: team members exist, task callables import,
    tools are known — before anything runs or is written. ``path`` is the agents file;
    callables and user tools are found relative to its folder.

    The agent kinds and the tool registry are built on :mod:`agentos.spec`, so they are
    imported here, when the check runs, not when this module is."""
    from agentos.agents.loading import load_callable
    from agentos.agents.team import check_team_members
    from agentos.tools.registry import check_agent_tools

    check_team_members(agents)
    for spec in agents.agents:
        if spec.kind == "task" and spec.run:
            load_callable(spec.run, path.resolve().parent, agent=spec.name, file=str(path))
    check_agent_tools(agents, base_dir=path.resolve().parent, config=config.tools)
