"""Tools agents call: the registry (``registry``), the built-ins (``calculator``,
``files``, ``todo``, ``http``), user tools (``user``) and how prompt agents call them
through a model (``calling``).

The names below are imported from the registry on first use, so that a tool worker
process (:mod:`agentos.tools.sandbox`) starts without importing the registry and all it
needs."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos.tools.registry import (
        TOOL_GROUPS,
        PlanExample,
        Tool,
        ToolContext,
        ToolError,
        ToolRegistry,
        ToolResult,
        check_agent_tools,
        known_tool_names,
    )

__all__ = [
    "TOOL_GROUPS",
    "PlanExample",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "check_agent_tools",
    "known_tool_names",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agentos.tools import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'agentos.tools' has no attribute '{name}'")
