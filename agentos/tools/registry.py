"""The tool registry: which tools exist, what their arguments look like, and one place that
calls them and records every call.

A :class:`Tool` is a name, a description, a JSON Schema for its arguments (an object
schema) and a function. Built in (one module each): ``calculator``, ``file_writer``,
``todo_add`` / ``todo_list`` / ``todo_complete`` / ``todo_delete`` (``todo`` names all
four), ``http_get``, ``web_fetch`` and ``web_search`` (:mod:`agentos.tools.web`). A user
tool is a Python callable named ``package.module:function`` in an agent's ``tools:``
list; its arguments schema comes from its signature (:mod:`agentos.tools.user`).
``memory_search`` recalls earlier records by meaning from the runtime's semantic memory;
without an embeddings engine a call fails and says why.

Invariants:

- Every call goes through :meth:`ToolRegistry.call`: the arguments are validated against
  the tool's schema first (a call with bad arguments never reaches the function), and
  every call, refused or not, is one ``tool_calls`` row (arguments, output, error,
  duration) and one ``tool_call`` event of the run.
- A tool refuses what it must not do by raising :class:`ToolError`; the error becomes the
  call's recorded error and what the model is told, and never ends the run by itself.
  Anything else a tool raises is recorded the same way, as ``ExceptionType: message``.
- A call of a tool with a cache TTL (the web tools) is looked up in the tool cache
  first (:mod:`agentos.tools.cache`); a hit runs nothing and is recorded like any call,
  as a cache hit (``tool_calls.cache_hit``).
- A call ends at its tool's timeout. An ``async`` function is cancelled; a sync user
  tool runs in a worker process that is killed (:mod:`agentos.tools.sandbox`), so
  nothing of a timed-out call goes on running; built-in sync tools bound their own work
  and run in a worker thread.
- Names an agent may use are checked before anything runs (:func:`check_agent_tools`,
  called by ``agentos validate`` and ``agentos run``); at run time :meth:`resolve` checks
  again, for runs that did not come from a checked file (``agentos ask``, replay).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema

from agentos.errors import SpecError
from agentos.spec.config import ToolsConfig
from agentos.store import digests, queries
from agentos.store.writer import Insert
from agentos.tools import cache as tool_cache
from agentos.tools.cache import CachedAnswer, cache_key
from agentos.tools.calculator import calculator_tool
from agentos.tools.files import file_writer_tool
from agentos.tools.http import http_get_tool
from agentos.tools.sandbox import ToolProcessError
from agentos.tools.todo import todo_tools
from agentos.tools.types import (
    DEFAULT_TIMEOUT_S,
    TOOL_NAME_CHARS,
    PlanExample,
    StepCheck,
    Tool,
    ToolCheck,
    ToolContext,
    ToolError,
    ToolFunction,
    ToolResult,
)
from agentos.tools.user import load_user_tool
from agentos.tools.web import web_fetch_tool, web_search_tool

if TYPE_CHECKING:
    from agentos.spec.agents import AgentsFile
    from agentos.store import Store

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TOOL_GROUPS",
    "TOOL_NAME_CHARS",
    "PlanExample",
    "StepCheck",
    "Tool",
    "ToolCheck",
    "ToolContext",
    "ToolError",
    "ToolFunction",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
    "check_agent_tools",
    "known_tool_names",
]
"""The tool types are re-exported from :mod:`agentos.tools.types`, where they live."""

NOT_YET: dict[str, str] = {}
"""Tool names that are reserved but not built yet, with what to tell the user."""


@dataclass
class ToolRegistry:
    """The tools of one runtime: the built-ins, plus user tools as agents name them.

    ``store`` is where the todo tools keep their items and where calls are recorded;
    ``base_dir`` (the agents file's folder) is where user tools' modules are looked for
    first.
    """

    config: ToolsConfig = field(default_factory=ToolsConfig)
    store: Store | None = None
    base_dir: Path | None = None
    tools: dict[str, Tool] = field(default_factory=dict)

    serves_record: ClassVar[bool] = False
    """True for a replay's registry, which answers calls from the record instead of running
    them (:class:`agentos.replay.tools.RecordedToolRegistry`)."""

    def __post_init__(self) -> None:
        if not self.tools:
            for tool in builtin_tools(self.config):
                self.tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def register(self, tool: Tool) -> None:
        """Add (or replace) a tool; its name must be usable in OpenAI's ``tools`` field."""
        if not tool.name or any(c not in TOOL_NAME_CHARS for c in tool.name):
            raise ValueError(f"tool name {tool.name!r} may hold only letters, digits, _ and -")
        self.tools[tool.name] = tool

    def resolve(self, names: Iterable[str], *, agent: str, file: str | None = None) -> list[Tool]:
        """The tools ``names`` (an agent's ``tools:`` list) mean, in order, groups expanded
        and user tools loaded; a name that means nothing is a SpecError naming the agent."""
        out: dict[str, Tool] = {}
        for name in names:
            for tool in self._lookup(name, agent=agent, file=file):
                out.setdefault(tool.name, tool)
        return list(out.values())

    def _lookup(self, name: str, *, agent: str, file: str | None) -> list[Tool]:
        name = name.strip()
        if name in NOT_YET:
            raise SpecError(f"agent '{agent}': {NOT_YET[name]}", file=file, key="tools")
        if name in TOOL_GROUPS:
            return [self.tools[member] for member in TOOL_GROUPS[name]]
        if name in self.tools:
            return [self.tools[name]]
        if ":" in name:
            tool = load_user_tool(name, self.base_dir, agent=agent, file=file)
            known = self.tools.get(tool.name)
            if known is not None and known.source != tool.source:
                raise SpecError(
                    f"agent '{agent}': user tool '{name}' is called '{tool.name}', which is "
                    f"already the name of {_describe(known)}; rename the function",
                    file=file,
                    key="tools",
                )
            self.tools[tool.name] = tool
            return [tool]
        raise SpecError(
            f"agent '{agent}': unknown tool '{name}'; built-in tools are "
            f"{', '.join(known_tool_names())}, and user tools are written as "
            "package.module:function",
            file=file,
            key="tools",
        )

    # -- calling -------------------------------------------------------------------------

    def check_arguments(self, tool: Tool, arguments: Any) -> str | None:
        """Why ``arguments`` do not fit ``tool``'s schema, or None when they do."""
        if not isinstance(arguments, dict):
            return f"arguments of {tool.name} should be an object, not {type(arguments).__name__}"
        errors = sorted(
            jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments),
            key=lambda e: list(e.absolute_path),
        )
        if not errors:
            return None
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path)
        return f"arguments of {tool.name}: {where + ': ' if where else ''}{first.message}"

    async def call(
        self,
        tool: Tool,
        arguments: Any,
        *,
        context: ToolContext,
        step: int,
        events: queries.RunEvents | None = None,
        **event_fields: Any,
    ) -> ToolResult:
        """Call ``tool`` (arguments validated first), record the call, return its result.

        Never raises for a failed call: the failure is in the result. Cancellation is
        passed on (the call is then recorded as cancelled).
        """
        started_at = time.time()
        began = time.monotonic()
        output: Any = None
        error: str | None = None
        error_class: str | None = None
        transient = False
        cached: CachedAnswer | None = None
        problem = self.check_arguments(tool, arguments)
        try:
            if problem is not None:
                error, error_class = problem, "ArgumentError"
            elif tool.cache_ttl_s is not None and context.store is not None:
                key = cache_key(tool, arguments)
                cached = tool_cache.lookup(context.store, key)
                if cached is not None:
                    output = cached.output
                else:
                    output = _jsonable(await _run(tool, dict(arguments), context))
                    await tool_cache.keep(context.store, key, tool, arguments, output)
            else:
                output = await _run(tool, dict(arguments), context)
        except ToolError as exc:
            error, error_class, transient = exc.message, type(exc).__name__, exc.transient
        except asyncio.CancelledError:
            error, error_class = "cancelled", "CancelledError"
            raise
        except TimeoutError:
            error = f"{tool.name} took longer than {tool.timeout_s:g}s"
            error_class, transient = "TimeoutError", True
        except ToolProcessError as exc:
            error, error_class = f"{exc.type_name}: {exc.message}", exc.type_name
        except Exception as exc:
            error, error_class = f"{type(exc).__name__}: {exc}", type(exc).__name__
        finally:
            result = ToolResult(
                id=queries.new_id(),
                tool=tool.name,
                arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
                output=_jsonable(output),
                error=error,
                error_class=error_class,
                duration_ms=round((time.monotonic() - began) * 1000, 3),
                started_at=started_at,
                transient=transient,
                cache_hit=cached is not None,
                cached_at=cached.created_at if cached is not None else None,
            )
            self._record(result, context, step, events, event_fields)
        return result

    def refuse(
        self,
        name: str,
        arguments: Any,
        error: str,
        *,
        context: ToolContext,
        step: int,
        events: queries.RunEvents | None = None,
        **event_fields: Any,
    ) -> ToolResult:
        """Record a call that is refused without running anything (a tool the agent may
        not use, say) like any other call; its result carries ``error``."""
        result = ToolResult(
            id=queries.new_id(),
            tool=name,
            arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
            output=None,
            error=error,
            error_class="UnknownTool",
            duration_ms=0.0,
            started_at=time.time(),
        )
        self._record(result, context, step, events, event_fields)
        return result

    def _record(
        self,
        result: ToolResult,
        context: ToolContext,
        step: int,
        events: queries.RunEvents | None,
        event_fields: dict[str, Any],
    ) -> None:
        if context.store is not None and context.run_id:
            row = {
                "id": result.id,
                "run_id": context.run_id,
                "step": step,
                "tool": result.tool,
                "arguments": json.dumps(result.arguments, ensure_ascii=False),
                "output": json.dumps(result.output, ensure_ascii=False),
                "error": result.error,
                "duration_ms": result.duration_ms,
                "started_at": result.started_at,
                "cache_hit": int(result.cache_hit),
            }
            row["digest"] = digests.row_digest(digests.audit_key(), "tool_calls", row)
            context.store.submit(Insert("tool_calls", row))
        if events is not None:
            events.add(
                "tool_call",
                {
                    **event_fields,
                    "step": step,
                    "call_id": result.id,
                    "tool": result.tool,
                    "arguments": result.arguments,
                    "output": result.output,
                    "error": result.error,
                    "error_class": result.error_class,
                    "duration_ms": result.duration_ms,
                    **(
                        {"cache_hit": True, "cached_at": result.cached_at}
                        if result.cache_hit
                        else {}
                    ),
                },
            )


async def _run(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> Any:
    if tool.prepare is not None:
        await tool.prepare()
    if inspect.iscoroutinefunction(tool.function):
        return await asyncio.wait_for(tool.function(arguments, context), tool.timeout_s)
    return await asyncio.wait_for(
        asyncio.to_thread(tool.function, arguments, context), tool.timeout_s
    )


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON values (what is not JSON becomes its ``str``)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def _describe(tool: Tool) -> str:
    return "a built-in tool" if tool.source == "builtin" else f"the user tool '{tool.source}'"


# -- the built-ins ---------------------------------------------------------------------

TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "todo": ("todo_add", "todo_list", "todo_complete", "todo_delete"),
}
"""Names that stand for several tools in an agent's ``tools:`` list."""


def builtin_tools(config: ToolsConfig) -> list[Tool]:
    """Every built-in tool, configured by ``config``."""
    return [
        calculator_tool(config),
        *todo_tools(),
        file_writer_tool(config),
        http_get_tool(config),
        web_fetch_tool(config),
        web_search_tool(config),
        memory_search_tool(),
    ]


def memory_search_tool() -> Tool:
    """``memory_search``: recall earlier results, answers and sink items by meaning, from
    the runtime's semantic memory (the background embeddings); recorded like every call."""
    from agentos.memory.search import (
        MEMORY_SEARCH_DESCRIPTION,
        MEMORY_SEARCH_PARAMETERS,
        memory_search,
    )

    async def call(arguments: dict[str, Any], context: ToolContext) -> Any:
        return await memory_search(
            str(arguments["query"]),
            int(arguments.get("limit", 5)),
            arguments.get("agent"),
            context=context,
        )

    return Tool(
        name="memory_search",
        description=MEMORY_SEARCH_DESCRIPTION,
        parameters=MEMORY_SEARCH_PARAMETERS,
        function=call,
        side_effects=False,
    )


def known_tool_names() -> list[str]:
    """The names an agent may list: built-in tools and groups (not the reserved ones)."""
    names = [tool.name for tool in builtin_tools(ToolsConfig())]
    return [*TOOL_GROUPS, *names]


# -- checks before anything runs -------------------------------------------------------


def check_agent_tools(
    agents: AgentsFile,
    *,
    base_dir: str | Path | None = None,
    config: ToolsConfig | None = None,
) -> None:
    """Every agent's ``tools:`` names tools that exist (user tools import and have a
    usable signature), every planner agent has some, ``web_search`` has a backend in
    ``config`` (when one is given), and no prompt agent with tools has a response field
    called ``command`` (:mod:`agentos.tools.calling` adds that field); else a SpecError
    naming the agent, the tool, and the line of the file."""
    registry = ToolRegistry(
        config or ToolsConfig(), base_dir=Path(base_dir) if base_dir is not None else None
    )
    for spec in agents:
        if spec.kind == "planner" and not spec.tools:
            raise agents.error(
                spec.name,
                ("tools",),
                f"planner agent '{spec.name}' has no tools: list the tools its plans may use "
                f"(e.g. tools: [calculator, todo]); built-in tools are "
                f"{', '.join(known_tool_names())}",
            )
        for index, name in enumerate(spec.tools):
            try:
                registry.resolve([name], agent=spec.name, file=str(agents.path))
            except SpecError as exc:
                raise agents.error(spec.name, ("tools", index), exc.reason) from None
            search = registry.config.web_search
            if (
                config is not None
                and name.strip() == "web_search"
                and not (search.searxng_url or search.backend)
            ):
                raise agents.error(
                    spec.name,
                    ("tools", index),
                    f"agent '{spec.name}' may call web_search, which has no search backend: "
                    "set tools.web_search.searxng_url (a SearXNG instance) or "
                    "tools.web_search.backend (a function) in config.yaml",
                )
        schema = spec.json_schema() if spec.kind == "prompt" and spec.tools else None
        if schema is not None and "command" in (schema.get("properties") or {}):
            raise agents.error(
                spec.name,
                ("response_format",),
                f"agent '{spec.name}' has tools and a response_format field called "
                "'command', the field tool calls are made in; rename the field",
            )


def tool_names(tools: Sequence[Tool]) -> list[str]:
    return [tool.name for tool in tools]
