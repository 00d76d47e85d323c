"""Tool calls of a replayed run, answered from the original run's record.

A replay re-executes a run through the normal agent code, and a prompt agent with tools
calls them. Running them again would do twice what the original run did (a todo added
again, a user tool's side effect repeated) and, for read-only tools, could answer
differently today. So the replay's tool registry (:class:`RecordedToolRegistry`) serves
each call from the original run's ``tool_call`` events: the call at the same attempt and
turn (and, for several calls in one turn, the same position) with the same tool and
arguments gets the recorded output or error, recorded again in the replay's run with
``from_record: true``. A call the record does not have:

- ``exact``: is a divergence (the replay stops being a reproduction), and the agent is
  told the call was not run;
- ``live`` (at or after ``--from-step``, where today's engines may answer differently):
  a read-only tool runs anew; a tool that changes things is not run, and the replay says
  so, as a cached answer's calls are not run again
  (:meth:`agentos.agents.prompt.PromptAgentRun._not_again`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agentos.ids import new_id
from agentos.store import Store, queries
from agentos.tools.registry import ToolRegistry
from agentos.tools.types import Tool, ToolContext, ToolResult

Key = tuple[int, int]
"""(attempt, turn) of a tool call."""


def recorded_tool_calls(store: Store, run_id: str) -> dict[Key, list[dict[str, Any]]]:
    """The run's ``tool_call`` events by (attempt, turn), in the order they were made."""
    calls: dict[Key, list[dict[str, Any]]] = {}
    for event in queries.run_events(store, run_id):
        if event["type"] != "tool_call":
            continue
        payload = event["payload"] or {}
        key = (int(payload.get("attempt") or 0), int(payload.get("turn") or 0))
        calls.setdefault(key, []).append(payload)
    return calls


@dataclass
class RecordedToolRegistry(ToolRegistry):
    """A tool registry whose calls are answered from a recorded run (module docstring).

    ``diverged`` is told about every call the record does not have (exact replays turn it
    into the replay's divergence)."""

    recorded: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)
    live: bool = False
    diverged: Callable[[str], None] | None = None
    _served: dict[Key, int] = field(default_factory=dict)

    serves_record: ClassVar[bool] = True
    """Read by the agents: a call answered here is not run, so a cached (recorded) answer's
    calls may be made without doing anything twice."""

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
        key = (int(event_fields.get("attempt") or 0), int(event_fields.get("turn") or 0))
        position = self._served.get(key, 0)
        self._served[key] = position + 1
        made = self.recorded.get(key, [])
        old = made[position] if position < len(made) else None
        if old is not None and old.get("tool") == tool.name and old.get("arguments") == arguments:
            result = ToolResult(
                id=new_id(),
                tool=tool.name,
                arguments=arguments,
                output=old.get("output"),
                error=old.get("error"),
                error_class=old.get("error_class"),
                duration_ms=0.0,
                started_at=time.time(),
            )
            self._record(result, context, step, events, {**event_fields, "from_record": True})
            return result
        if self.live and not tool.side_effects:
            return await super().call(
                tool, arguments, context=context, step=step, events=events, **event_fields
            )
        what = f"{tool.name}({_short(arguments)}) at attempt {key[0]} turn {key[1]}"
        if old is None:
            reason = f"the replay asks for the tool call {what}, which the original run never made"
        else:
            reason = (
                f"the replay asks for the tool call {what}; the original run called "
                f"{old.get('tool')}({_short(old.get('arguments'))}) there"
            )
        if self.live:
            reason += f"; {tool.name} changes things, so a replay does not run it"
        if self.diverged is not None:
            self.diverged(reason)
        result = ToolResult(
            id=new_id(),
            tool=tool.name,
            arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
            output=None,
            error=f"not run: {reason}",
            error_class="ReplayDivergence",
            duration_ms=0.0,
            started_at=time.time(),
        )
        self._record(result, context, step, events, event_fields)
        return result


def _short(arguments: Any) -> str:
    text = repr(arguments)
    return text if len(text) <= 120 else text[:117] + "..."
