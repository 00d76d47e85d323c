"""Checks that need both files: every engine and model an agent names is configured.

Done before anything runs so that a typo in ``engine:`` is reported at its line in
agents.yaml, not as a :class:`~agentos.errors.NoEngineError` minutes into a run. A model
is only checked against engines whose models are known from the config (a local engine's
``model_name``, an openai engine's ``models``); models detected at start-up are not known
yet.
"""

from __future__ import annotations

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
