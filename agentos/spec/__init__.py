"""agents.yaml and config.yaml as pydantic models; errors name the file, line and key.

- :func:`load_agents` → :class:`AgentsFile` of :class:`AgentSpec`
- :func:`load_config` → :class:`Config` of engines, storage and router settings
- :func:`check_agents_against_config`: engines and models that agents name exist;
  :func:`check_agent_kinds`: team members, task callables and tools exist
- :func:`render`: a prompt template with its variables, strictly
"""

from agentos.spec.agents import (
    PRIORITY_ORDER,
    AgentsFile,
    AgentSpec,
    LifeCycle,
    Priority,
    RetryPolicy,
    load_agents,
    priority_rank,
)
from agentos.spec.config import (
    Config,
    EngineConfig,
    LocalEngineConfig,
    OpenAIEngineConfig,
    RouterConfig,
    StorageConfig,
    load_config,
)
from agentos.spec.crosscheck import check_agent_kinds, check_agents_against_config
from agentos.spec.reference import agents_reference_markdown, config_reference_markdown
from agentos.spec.response_format import is_json_schema, shape_to_json_schema, to_json_schema
from agentos.spec.templates import render, template_variables

__all__ = [
    "PRIORITY_ORDER",
    "AgentSpec",
    "AgentsFile",
    "Config",
    "EngineConfig",
    "LifeCycle",
    "LocalEngineConfig",
    "OpenAIEngineConfig",
    "Priority",
    "RetryPolicy",
    "RouterConfig",
    "StorageConfig",
    "agents_reference_markdown",
    "check_agent_kinds",
    "check_agents_against_config",
    "config_reference_markdown",
    "is_json_schema",
    "load_agents",
    "load_config",
    "priority_rank",
    "render",
    "shape_to_json_schema",
    "template_variables",
    "to_json_schema",
]
