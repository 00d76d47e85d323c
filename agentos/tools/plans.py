"""Plans: what a planner agent asks its model for, and how a plan is checked.

A plan is ``{"steps": [step, ...]}``; a step is one tool call written *flat*, its
arguments first and the tool's name last: ``{"title": "buy milk", "tool": "todo_add"}``,
``{"tool": "todo_list"}``. The schema sent with the request is a union of one object
schema per tool the agent may use (``tool`` fixed to the name, the other keys the tool's
arguments schema), so an engine that constrains answers to a JSON Schema (the bundled
local engine does) can only write plans whose every step names a real tool with
well-formed arguments. Plans are checked here anyway, step by step (other engines do not
constrain, and the check's messages are what a re-plan is told).

Why this shape. Measured on the bundled SmolLM2-135M (llama-cpp-python, the plan schema
as grammar) with 12 requests (set A) and a few samples each:

- ``{"tool": ..., "args": {...}}`` steps: 17 to 22 of 36 plans right (3 samples per
  request). The model has to pick the tool before anything of the request is in its
  answer, and mostly picked the first tool of its examples; and llama.cpp's grammar
  sampler, after the token ``' {"'`` of a nested object, refuses ``' "'`` and pushes the
  model into ``' '`` + ``'".'`` (answers like ``"expression": ".41 * 7"``; the
  calculator's ``pattern`` also keeps an expression from starting with ``.``).
- Flat steps, tool name first: 22 of 36; flat, arguments first: 31 of 36. The model
  copies the arguments out of the request (``"title": "buy milk"``), and which argument
  keys it writes then decides the tool.
- Few-shot examples as earlier turns of the conversation (user: request, assistant:
  plan), not as one block of text: 22 against 13 of 36.
- Three examples, the ones most like the request (word overlap), the most similar last:
  122 of 132 (11 samples per request: greedy, 5 at temperature 0.3, 5 at 0.7) against
  116 with two and 27 of 36 with four.

With the examples the built-in tools carry now: set A 119 of 132 (greedy: 11 of 12);
10 requests written later to find weak spots (some examples were then added for them)
86 of 110 (greedy 8 of 10); 12 fresh requests 97 of 132 (greedy 9 of 12). The misses are
an extra ``todo_list`` step, an example's file name copied instead of the request's,
"Finish todo 4" planned as ``todo_delete``. Both requests of the issue ("Add a todo
to buy milk, then show me all my tasks", "Calculate (41 * 7) + 13") are right with
greedy decoding, which is what ``agentos ask`` uses (and 10 and 11 of 11 sampled).

Later steps may use earlier results: ``{{step1}}`` in a string argument is replaced by
the output of step 1 (its text, or JSON) when the step runs; an argument is checked
against its schema as written, so references belong in free-text arguments (a file's
content, a todo's title). The bundled examples do not show them: with one such example
the small model also wrote ``{{step1}}`` where no reference belonged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentos.tools.registry import ToolRegistry
from agentos.tools.types import PlanExample, Tool

MAX_STEPS = 8
"""Most steps one plan may have."""

EXAMPLES = 3
"""Few-shot examples in a planner prompt (see the module docstring)."""

INTRO = "Turn each request into a plan of tool steps. Tools: {tools}"
"""The planner's system message; ``{tools}`` is the comma-separated tool names."""

REF = re.compile(r"\{\{\s*step\s*(\d+)\s*\}\}")
"""A reference to an earlier step's output inside a string argument."""


@dataclass(frozen=True)
class PlanStep:
    """One checked step: which tool, with which arguments (references not yet filled)."""

    tool: Tool
    arguments: dict[str, Any]


def step_schema(tool: Tool) -> dict[str, Any]:
    """The JSON Schema of one plan step calling ``tool``: its arguments, then ``tool``."""
    parameters = tool.parameters
    properties = {**parameters.get("properties", {}), "tool": {"const": tool.name}}
    required = [*parameters.get("required", []), "tool"]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def plan_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """The JSON Schema of a plan using ``tools`` (``$defs`` of user tools kept at the root,
    where their ``$ref`` pointers look)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_STEPS,
                "items": {"anyOf": [step_schema(tool) for tool in tools]},
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    defs: dict[str, Any] = {}
    for tool in tools:
        defs.update(tool.parameters.get("$defs", {}))
    if defs:
        schema["$defs"] = defs
    return schema


def plan_text(steps: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A plan as the model is shown it (and writes it): flat steps, tool last."""
    return json.dumps({"steps": [{**arguments, "tool": name} for name, arguments in steps]})


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+|\d+|[-+*/()]", text.lower()))


def choose_examples(
    request: str, tools: Sequence[Tool], count: int = EXAMPLES
) -> list[PlanExample]:
    """The ``count`` examples most like ``request`` (Jaccard overlap of words), least
    similar first, out of those that use only ``tools``; ties keep the tools' order."""
    allowed = {tool.name for tool in tools}
    bank: list[PlanExample] = []
    for tool in tools:
        for example in tool.examples:
            if example not in bank and all(name in allowed for name, _ in example.steps):
                bank.append(example)
    words = _words(request)

    def similarity(example: PlanExample) -> float:
        other = _words(example.request)
        union = words | other
        return len(words & other) / len(union) if union else 0.0

    ranked = sorted(enumerate(bank), key=lambda item: (similarity(item[1]), -item[0]))
    return [example for _, example in ranked[-count:]] if count > 0 else []


def plan_messages(
    request: str, tools: Sequence[Tool], *, system: str | None = None
) -> list[dict[str, Any]]:
    """The conversation that asks for a plan: the tool list, the chosen examples as
    earlier turns, then the request. ``system`` (the agent's own) goes before the list."""
    intro = INTRO.format(tools=", ".join(tool.name for tool in tools))
    descriptions = [f"- {tool.name}: {tool.description}" for tool in tools if not tool.examples]
    if descriptions:
        intro += "\n" + "\n".join(descriptions)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{system.strip()}\n\n{intro}" if system else intro}
    ]
    for example in choose_examples(request, tools):
        messages.append({"role": "user", "content": example.request})
        messages.append({"role": "assistant", "content": plan_text(example.steps)})
    messages.append({"role": "user", "content": request})
    return messages


def replan_message(request: str, errors: Sequence[str]) -> dict[str, Any]:
    """What the model is told after a plan that cannot run: the request again, then what
    was wrong (last, where a model's attention is, and where the loopback test engine
    looks for a scripted answer)."""
    listed = "; ".join(errors)
    return {
        "role": "user",
        "content": f"Write a new plan for: {request}\nThe last plan cannot run: {listed}",
    }


def check_plan(
    data: Any, tools: Sequence[Tool], registry: ToolRegistry
) -> list[PlanStep] | list[str]:
    """The plan's steps when ``data`` is a plan that can run with ``tools``, else the
    reasons it cannot (a list of strings: each names the step and what is wrong)."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return ['a plan is a JSON object {"steps": [...]}']
    raw_steps: list[Any] = data["steps"]
    if not raw_steps:
        return ["the plan has no steps"]
    if len(raw_steps) > MAX_STEPS:
        return [f"the plan has {len(raw_steps)} steps; at most {MAX_STEPS}"]
    by_name = {tool.name: tool for tool in tools}
    steps: list[PlanStep] = []
    errors: list[str] = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            errors.append(f"step {number} is not an object")
            continue
        name = raw.get("tool")
        arguments = {key: value for key, value in raw.items() if key != "tool"}
        if isinstance(raw.get("args"), dict) and set(raw) <= {"tool", "args"}:
            arguments = dict(raw["args"])  # the nested spelling other models may write
        tool = by_name.get(name) if isinstance(name, str) else None
        if tool is None:
            errors.append(
                f"step {number}: unknown tool '{name}' (the tools are {', '.join(by_name)})"
            )
            continue
        problem = registry.check_arguments(tool, arguments)
        if problem is not None:
            errors.append(f"step {number}: {problem}")
            continue
        for ref in _refs(arguments):
            if not 1 <= ref < number:
                errors.append(f"step {number}: {{{{step{ref}}}}} does not name an earlier step")
        steps.append(PlanStep(tool=tool, arguments=arguments))
    return errors if errors else steps


def _refs(value: Any) -> list[int]:
    if isinstance(value, str):
        return [int(n) for n in REF.findall(value)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def output_text(output: Any) -> str:
    """A step's output as it fills a ``{{stepN}}`` reference: text as is, else JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def fill_refs(value: Any, outputs: Sequence[Any]) -> Any:
    """``value`` with every ``{{stepN}}`` in its strings replaced by the text of the
    output of step N (1-based; see :func:`output_text`)."""
    if isinstance(value, str):
        return REF.sub(lambda m: output_text(outputs[int(m.group(1)) - 1]), value)
    if isinstance(value, dict):
        return {key: fill_refs(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_refs(item, outputs) for item in value]
    return value
