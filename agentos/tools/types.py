"""The tool types: what a tool is, what a call may use, and what a call gives back.

Kept apart from the registry (:mod:`agentos.tools.registry`) so that the built-in tools
(``calculator``, ``files``, ``todo``, ``http``) and user tools import their types from
here, and the registry imports the built-ins, without either importing the other.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentos.errors import AgentosError
from agentos.spec.config import ToolsConfig

if TYPE_CHECKING:
    from agentos.store import Store

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TOOL_NAME_CHARS",
    "PlanExample",
    "StepCheck",
    "Tool",
    "ToolCheck",
    "ToolContext",
    "ToolError",
    "ToolFunction",
    "ToolResult",
]

TOOL_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
"""Characters a tool name may hold (what OpenAI's ``tools`` field accepts)."""

DEFAULT_TIMEOUT_S = 60.0
"""Seconds a call of a tool without a limit of its own (user tools) may take."""


class ToolError(AgentosError):
    """A tool refused a call or could not finish it; the model is told, the run goes on.

    ``transient`` marks failures worth retrying (a timeout, a dropped connection);
    refusals (a path outside the workspace, a host not allowed) never are.
    """

    title = "tool error"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class StepCheck:
    """What a tool's check made of one plan step."""

    ok: bool | None
    """True: the step fits the request; False: it does not (a new plan is asked for);
    None: the check cannot tell."""
    detail: str
    """What was checked, what is wrong, or why it cannot tell; said to the user (and to
    the model, when ``ok`` is False)."""


ToolCheck = Callable[[dict[str, Any], str], StepCheck]
"""A tool's check of a plan step: ``check(arguments, request)``."""

ToolFunction = Callable[[dict[str, Any], "ToolContext"], Any]
"""What a tool runs: ``function(arguments, context)``; sync (run in a worker thread) or
``async``. (A sync *user* tool is wrapped in an ``async`` function that runs it in a
worker process, :mod:`agentos.tools.sandbox`.) Its return value must be
JSON-serialisable (anything else is stored as text)."""


@dataclass(frozen=True)
class PlanExample:
    """A request and the plan that serves it: few-shot material for planner prompts."""

    request: str
    steps: tuple[tuple[str, dict[str, Any]], ...]
    """(tool name, arguments) per step, in order."""


@dataclass(frozen=True)
class Tool:
    """One tool: what the model is told about it, and what runs when it is called."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments: an object schema (``properties``, ``required``)."""
    function: ToolFunction
    timeout_s: float = DEFAULT_TIMEOUT_S
    examples: tuple[PlanExample, ...] = ()
    """Requests this tool serves, for the planner's few-shot prompt."""
    source: str = "builtin"
    """``builtin``, or the ``package.module:function`` a user tool was loaded from."""
    side_effects: bool = True
    """Whether a call changes something outside the run (adds a todo, writes a file). A
    plan served from the response cache does not run such steps again (see
    :mod:`agentos.agents.planner`); read-only tools (a calculation, a GET, a listing) say
    False. User tools are taken to have side effects unless they say otherwise."""
    prepare: Callable[[], Awaitable[None]] | None = None
    """Awaited before each call, outside its timeout: a sync user tool makes sure a worker
    process is started (:mod:`agentos.tools.sandbox`), so start-up is not timed."""
    check: ToolCheck | None = None
    """A cheap check of a plan step's arguments against the request it serves (the
    calculator's expression against the request's numbers). A planner re-plans a step
    that fails its check, and reports a plan with a step that was not checked (no check,
    or one that cannot tell) as not verified."""
    cache_ttl_s: float | None = None
    """Seconds a successful answer is served from the tool cache to calls with the same
    (normalised) arguments, instead of running the tool again; None: never cached (see
    :mod:`agentos.tools.cache`). Only for tools without side effects."""
    cache_key: Callable[[dict[str, Any]], Any] | None = None
    """The arguments as the cache key sees them (a URL without its fragment, say, plus
    the settings that change the answer); None: the arguments as given."""

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the form of OpenAI's ``tools`` field."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass
class ToolContext:
    """What a call may use besides its arguments."""

    config: ToolsConfig
    store: Store | None
    agent: str
    run_id: str | None
    memory: Any = None
    """The runtime's semantic memory (``agentos.memory.Memory``), for ``memory_search``."""


@dataclass
class ToolResult:
    """One finished call, as recorded."""

    id: str
    tool: str
    arguments: dict[str, Any]
    output: Any
    error: str | None
    error_class: str | None
    duration_ms: float
    started_at: float
    transient: bool = False
    cache_hit: bool = False
    """Served from the tool cache: the tool did not run."""
    cached_at: float | None = None
    """For a cache hit, when the served answer was made."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def for_model(self) -> str:
        """What the model is told about the call: the output as JSON, or the error."""
        if self.error is not None:
            return f"error: {self.error}"
        return json.dumps(self.output, ensure_ascii=False)
