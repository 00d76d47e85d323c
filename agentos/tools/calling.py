"""How a prompt agent's model calls tools: natively, or through a ``command`` field.

Two ways, one loop (model → tool calls → results → model, at most ``tools.max_calls``
calls per attempt):

- ``native``: the tools go to the engine in OpenAI's ``tools`` field; an answer whose
  message has ``tool_calls`` is answered with one ``tool`` message per call, and an
  answer without them is the final answer. For engines with tool calling (OpenAI, vLLM
  with a tool parser, llama-server with ``--jinja``).
- ``command``: the response format gets a ``command`` field, ``{"tool": name, "args":
  {...}}`` or ``null``, listed first so the model decides before it answers; a non-null
  command is run and its result sent back as a user message. For every other engine. The
  bundled llama-cpp-python server, for one, ignores ``tools`` unless one tool is forced,
  but constrains answers to a JSON Schema, so a command field is what a small local
  model can be held to. With an object response format the field is added to it (the
  other fields are ignored while a command is given: an answer with a well-formed command
  is run whatever they hold, see :meth:`ToolKit.parse`); otherwise the answer is wrapped as
  ``{"command": ..., "answer": <the format>}``. The final answer is checked against the
  agent's own response format, without the command.

``tools.calling: auto`` picks ``native`` when every engine the agent may use is an
``openai`` one and ``command`` otherwise; a run whose engine refuses ``tools`` (a 4xx)
falls back to ``command`` for the rest of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentos.agents.instructions import example_from_schema
from agentos.agents.parsing import ParsedAnswer, parse_answer
from agentos.errors import ParseError
from agentos.spec.config import Config, ToolsConfig
from agentos.tools.registry import ToolRegistry
from agentos.tools.types import Tool, ToolContext

if TYPE_CHECKING:
    from agentos.agents.base import RunContext
    from agentos.spec.agents import AgentSpec
    from agentos.store import Store

CallingMode = Literal["native", "command"]

REFUSING_STATUSES = frozenset({400, 404, 415, 422, 501})
"""Statuses with which an engine says it does not take ``tools`` (native → command)."""


def registry_for(context: RunContext | None, store: Store | None) -> ToolRegistry:
    """The runtime's tool registry: ``context.tools`` when the runtime made one, else one
    built from ``context.config`` (kept on the context, so a runtime has one)."""
    if context is not None and context.tools is not None:
        tools: ToolRegistry = context.tools
        return tools
    config = context.config if context is not None else None
    tools_config = config.tools if isinstance(config, Config) else ToolsConfig()
    base_dir = None
    if context is not None and context.agents_file:
        base_dir = Path(context.agents_file).resolve().parent
    registry = ToolRegistry(tools_config, store=store, base_dir=base_dir)
    if context is not None:
        context.tools = registry
    return registry


def choose_mode(config: Any, engine: str | None) -> CallingMode:
    """``tools.calling`` resolved for an agent that uses ``engine`` (None: any)."""
    if not isinstance(config, Config):
        return "command"
    if config.tools.calling != "auto":
        return config.tools.calling
    engines = [e for e in config.resolved_engines() if engine is None or e.name == engine]
    if engines and all(e.type == "openai" for e in engines):
        return "native"
    return "command"


@dataclass
class NativeCall:
    """One entry of an answer's ``tool_calls``."""

    id: str
    name: str
    arguments: Any
    """The decoded arguments, or the raw text when it is not JSON."""


@dataclass
class ToolKit:
    """The tools of one prompt-agent run and how its model is offered them."""

    registry: ToolRegistry
    tools: list[Tool]
    mode: CallingMode
    max_calls: int
    context: ToolContext
    steps: int = field(default=0)
    """Tool calls made so far in the run (the ``step`` of each ``tool_calls`` row)."""

    @classmethod
    def for_run(
        cls, spec: AgentSpec, context: RunContext | None, store: Store, run_id: str
    ) -> ToolKit:
        registry = registry_for(context, store)
        tools = registry.resolve(
            spec.tools, agent=spec.name, file=context.agents_file if context else None
        )
        config = context.config if context is not None else None
        return cls(
            registry=registry,
            tools=tools,
            mode=choose_mode(config, spec.engine),
            max_calls=registry.config.max_calls,
            context=ToolContext(
                config=registry.config,
                store=store,
                agent=spec.name,
                run_id=run_id,
                memory=context.memory if context is not None else None,
            ),
        )

    def get(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def next_step(self) -> int:
        self.steps += 1
        return self.steps

    # -- native --------------------------------------------------------------------------

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai_schema() for tool in self.tools]

    # -- command -------------------------------------------------------------------------

    def _command_branches(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "args": tool.parameters},
                "required": ["tool", "args"],
                "additionalProperties": False,
            }
            for tool in self.tools
        ]

    def command_schema(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        """``schema`` with the ``command`` field (see the module docstring)."""
        command = {"anyOf": [{"type": "null"}, *self._command_branches()]}
        if _is_object_schema(schema):
            assert schema is not None
            properties = {"command": command, **schema.get("properties", {})}
            required = ["command", *[r for r in schema.get("required", []) if r != "command"]]
            return {**schema, "properties": properties, "required": required}
        return {
            "type": "object",
            "properties": {"command": command, "answer": schema or {"type": "string"}},
            "required": ["command", "answer"],
            "additionalProperties": False,
        }

    def parse(self, text: str, schema: dict[str, Any] | None) -> ParsedAnswer:
        """A command-mode answer parsed: an answer that gives a well-formed command is
        taken for its command alone, whatever its other fields hold (they are ignored
        while a command is given, so one left empty or out does not refuse the call);
        any other answer is checked against ``schema`` (:meth:`command_schema`) whole.

        The engine is still sent the whole ``schema``: a model held to it writes every
        field, and a well-formed command is all that is read from such an answer.
        """
        command_only = {
            "type": "object",
            "properties": {"command": {"anyOf": self._command_branches()}},
            "required": ["command"],
        }
        try:
            found = parse_answer(text, command_only)
        except ParseError:
            return parse_answer(text, schema)
        return ParsedAnswer(
            data={"command": found.data["command"]}, raw=found.raw, repairs=found.repairs
        )

    def unwrap(self, data: Any, schema: dict[str, Any] | None) -> Any:
        """The answer in the agent's own format: ``data`` without its command."""
        if _is_object_schema(schema):
            return {k: v for k, v in data.items() if k != "command"}
        return data.get("answer")

    def instructions(self, schema: dict[str, Any] | None) -> str:
        """What the first prompt says about the tools, in command mode."""
        lines = ["You can call these tools:"]
        for tool in self.tools:
            example = json.dumps(example_from_schema(tool.parameters), ensure_ascii=False)
            lines.append(f"- {tool.name}: {tool.description} Arguments: {example}")
        lines.append(
            'To call one, answer with "command": {"tool": "<tool name>", "args": {...}}; '
            "you then get its result and answer again. When you have the answer, give "
            '"command": null.'
        )
        if not _is_object_schema(schema):
            lines.append(
                'Answer with only a JSON object: {"command": ..., "answer": <your answer>}.'
            )
        return "\n".join(lines)

    def with_instructions(
        self, messages: list[dict[str, Any]], schema: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """``messages`` with the tool instructions appended to the last user message."""
        out = [dict(m) for m in messages]
        for message in reversed(out):
            if message.get("role") == "user":
                message["content"] = f"{message['content']}\n\n{self.instructions(schema)}"
                break
        return out


def command_of(data: Any) -> dict[str, Any] | None:
    """The command of a parsed command-mode answer, or None."""
    if isinstance(data, dict) and isinstance(data.get("command"), dict):
        command: dict[str, Any] = data["command"]
        return command
    return None


def command_result_message(tool: str, result_text: str) -> dict[str, Any]:
    """The user message that gives a command's result back to the model."""
    return {
        "role": "user",
        "content": (
            f"Result of {tool}: {result_text}\n"
            'Answer again: call another tool, or give your answer with "command": null.'
        ),
    }


def native_calls(response: dict[str, Any]) -> tuple[dict[str, Any] | None, list[NativeCall]]:
    """The assistant message and its ``tool_calls`` from a chat answer (none: ``[]``)."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None, []
    if not isinstance(message, dict):
        return None, []
    calls: list[NativeCall] = []
    for index, item in enumerate(message.get("tool_calls") or []):
        if not isinstance(item, dict):
            continue
        function = item.get("function") or {}
        raw = function.get("arguments")
        arguments: Any = raw
        if isinstance(raw, str):
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except ValueError:
                arguments = raw
        calls.append(
            NativeCall(
                id=str(item.get("id") or f"call_{index}"),
                name=str(function.get("name") or ""),
                arguments=arguments,
            )
        )
    return message, calls


def assistant_message(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant's tool-calling message as it goes back into the conversation."""
    return {
        "role": "assistant",
        "content": message.get("content"),
        "tool_calls": message.get("tool_calls"),
    }


def _is_object_schema(schema: dict[str, Any] | None) -> bool:
    return (
        isinstance(schema, dict)
        and schema.get("type") == "object"
        and isinstance(schema.get("properties"), dict)
    )
