"""Tools agents call: the registry (``registry``), the built-ins (``calculator``,
``files``, ``todo``, ``http``), user tools (``user``) and how prompt agents call them
through a model (``calling``)."""

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
