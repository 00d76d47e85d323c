"""User tools: a Python function named ``package.module:function`` in an agent's ``tools:``.

The function is loaded the way task agents' callables are
(:func:`agentos.agents.loading.load_callable`: the agents file's folder first, then
``sys.path``). The tool is called by the function's name; its description is the first
paragraph of its docstring; its arguments schema comes from its signature (type hints
through pydantic), unless the function carries a ready one as ``tool_schema`` (a JSON
Schema object). A call passes the arguments as keyword arguments; the function may be
``async``; what it returns must be JSON (anything else is recorded as text). A sync
function runs in a worker process (:mod:`agentos.tools.sandbox`), killed when a call
passes ``tool_timeout``: module state lives on between calls in one worker, but not past
a timeout, and the function cannot change the runtime's own objects. An ``async``
function runs on the runtime's event loop and is cancelled at its timeout. Raising
:class:`~agentos.tools.types.ToolError` refuses a call with a message for the model;
any other exception is recorded as the call's error.

Optional attributes: ``tool_examples`` (a list of ``(request, arguments)`` pairs, shown to
planners as examples), ``tool_timeout`` (seconds; default 60) and ``tool_side_effects``
(default True; set it False on a read-only function, so that a planner runs its steps
again from a plan served by the response cache).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from agentos.agents.loading import load_callable
from agentos.errors import SpecError
from agentos.tools.sandbox import POOL
from agentos.tools.types import DEFAULT_TIMEOUT_S, TOOL_NAME_CHARS, PlanExample, Tool, ToolContext


def load_user_tool(
    target: str, base_dir: Path | None, *, agent: str, file: str | None = None
) -> Tool:
    """The tool ``target`` names; a SpecError naming the agent when it cannot be used."""
    function = load_callable(target, base_dir, agent=agent, key="tools", file=file)
    name = getattr(function, "__name__", "") or target.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    if any(c not in TOOL_NAME_CHARS for c in name):
        raise SpecError(
            f"agent '{agent}': user tool '{target}' is called '{name}'; a tool name may hold "
            "only letters, digits, _ and -",
            file=file,
            key="tools",
        )
    schema = _schema(function, target, agent, file)
    if "tool" in schema.get("properties", {}):
        raise SpecError(
            f"agent '{agent}': user tool '{target}' has an argument called 'tool', which "
            "plans use for the tool's name; rename the argument",
            file=file,
            key="tools",
        )
    examples = tuple(
        PlanExample(str(request), ((name, dict(arguments)),))
        for request, arguments in getattr(function, "tool_examples", ()) or ()
    )
    is_async = inspect.iscoroutinefunction(function)

    async def call_async(arguments: dict[str, Any], context: ToolContext) -> Any:
        return await function(**arguments)

    async def call_in_worker(arguments: dict[str, Any], context: ToolContext) -> Any:
        return await POOL.call(target, base_dir, arguments)

    return Tool(
        name=name,
        description=_description(function, target),
        parameters=schema,
        function=call_async if is_async else call_in_worker,
        prepare=None if is_async else POOL.warm,
        timeout_s=float(getattr(function, "tool_timeout", DEFAULT_TIMEOUT_S)),
        examples=examples,
        source=target,
        side_effects=bool(getattr(function, "tool_side_effects", True)),
    )


def _schema(function: Any, target: str, agent: str, file: str | None) -> dict[str, Any]:
    given = getattr(function, "tool_schema", None)
    if isinstance(given, dict):
        schema = dict(given)
    else:
        try:
            schema = TypeAdapter(function).json_schema()
        except Exception as exc:
            raise SpecError(
                f"agent '{agent}': cannot describe the arguments of user tool '{target}' "
                f"({type(exc).__name__}: {exc}); give its parameters type hints, or set "
                "tool_schema on the function",
                file=file,
                key="tools",
            ) from None
    if schema.get("type") != "object":
        raise SpecError(
            f"agent '{agent}': the arguments schema of user tool '{target}' should be an "
            "object schema",
            file=file,
            key="tools",
        )
    schema.pop("title", None)
    return schema


def _description(function: Any, target: str) -> str:
    doc = inspect.getdoc(function) or ""
    first = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    return first or f"the user tool {target}"
