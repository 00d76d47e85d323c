"""What the prompt tells a model about the form of its answer, and the re-ask after a miss.

The default model is SmolLM2-135M with a 2048-token context. A model that small does not
follow a JSON Schema, but it copies a filled-in example, so the instructions show one
instance of the schema rather than the schema itself. What each string should hold is
said in place, as an angle-bracketed placeholder (``"title": "<a short title>"``).

Tuned on the real model (4 response shapes x temperatures 0.2 to 1.0, answers judged by
``parse_answer``). With the descriptions as bare string values on one line, 2 answers in
40 were usable: the model mostly copied the example verbatim. With ``<...>`` around each
description, the example indented the way the model itself writes JSON, and a line asking
it to replace each ``<...>``, 17 in 40 were (8 of 20 on the seeds the wording was chosen
on, 9 of 20 on fresh seeds). Other wordings tried (a key list under a ``"..."`` skeleton,
``"... (description)"`` values, instructions before the task, a list of required keys) did
no better. ``copied_placeholders`` lets the parser reject the copies that remain.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentos.errors import ParseError

__all__ = [
    "copied_placeholders",
    "echoed_placeholders",
    "example_from_schema",
    "expected_kind",
    "format_instructions",
    "reask_message",
]

_MAX_DEPTH = 8
"""How deep ``example_from_schema`` follows nested schemas (and ``$ref`` cycles)."""


def format_instructions(schema: dict[str, Any] | None) -> str:
    """The text appended to a prompt that tells the model how to answer.

    Empty for free-text answers (``schema=None``): there is nothing to ask for.
    """
    if schema is None:
        return ""
    example = example_from_schema(schema)
    shown = json.dumps(_bracketed(example), ensure_ascii=False, indent=2)
    text = f"Answer with only a {expected_kind(schema)}, no other text, in exactly this form:\n"
    text += shown
    if shown != json.dumps(example, ensure_ascii=False, indent=2):
        text += "\nReplace each <...> with your own answer."
    return text


def expected_kind(schema: dict[str, Any] | None) -> str:
    """What the schema asks the model for, in words: ``"JSON object"``, ``"JSON array"``…"""
    if schema is None:
        return "text"
    types = set(_types(schema))
    if not types and ("properties" in schema or "required" in schema):
        types = {"object"}
    elif not types and ("items" in schema or "prefixItems" in schema):
        types = {"array"}
    if types == {"object"}:
        return "JSON object"
    if types == {"array"}:
        return "JSON array"
    return "JSON value"


def reask_message(error: ParseError) -> str:
    """The follow-up message that asks the model again after an answer failed to parse."""
    kind = getattr(error, "expected", "JSON object")
    again = "Answer again." if kind == "text" else f"Answer again with only the {kind}."
    return f"Your answer was not valid: {error.message}. {again}"


def example_from_schema(schema: dict[str, Any]) -> Any:
    """One instance of ``schema`` for a model to copy, filled with what each value means.

    Strings hold the description (or title, or property name) of what belongs there; an
    array holds one example item; ``examples``, ``default``, ``const`` and ``enum`` are used
    as given. Local ``$ref`` pointers (``#/$defs/...``) are followed. The result shows the
    form, and need not validate (a description may break a ``pattern`` or ``format``).
    """
    return _example(schema, schema, hint="", depth=0)


class _Placeholder(str):
    """A string of the example that only says what belongs there (a description)."""


_BRACKETED = re.compile(r"\s*<[^<>]+>\s*")
"""A whole value that is one ``<...>``: the form the instructions give placeholders."""


def copied_placeholders(value: Any, schema: dict[str, Any]) -> list[str]:
    """Paths (``"title"``, ``"steps[0].tool"``) where ``value`` echoes a placeholder
    (see :func:`echoed_placeholders`)."""
    return [path for path, _ in echoed_placeholders(value, schema)]


def echoed_placeholders(value: Any, schema: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Where ``value`` echoes the instructions' example instead of answering: ``(path,
    None)`` where a string copies a placeholder of the example, ``(path, text)`` where a
    string is a placeholder of the model's own making, one whole ``<...>``
    (``"<thought to remember>"``).

    Small models often answer with the example from the instructions, descriptions and all,
    or with the example's form filled with new placeholders; such an answer validates, but
    it is not an answer. Only strings in the example's placeholder positions are looked
    at: those the example takes from ``examples``, ``default``, ``const`` or ``enum`` are
    real values and are never flagged. A copy is compared ignoring case, spacing, a final
    full stop and the ``<...>`` that the instructions put around placeholders; a value
    with text around its brackets (``"<b>bold</b>"``, ``"a<b"``) is not a placeholder.
    """
    found: list[tuple[str, str | None]] = []

    def walk(node: Any, example: Any, path: str) -> None:
        if isinstance(example, _Placeholder):
            if isinstance(node, str) and _same_text(node, example):
                found.append((path, None))
            elif isinstance(node, str) and _BRACKETED.fullmatch(node):
                found.append((path, node.strip()))
        elif isinstance(example, dict) and isinstance(node, dict):
            for key, sub in example.items():
                if key in node:
                    walk(node[key], sub, f"{path}.{key}" if path else key)
        elif isinstance(example, list) and example and isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, example[0], f"{path}[{index}]")

    walk(value, _example(schema, schema, hint="", depth=0), "")
    return found


def _same_text(answer: str, placeholder: str) -> bool:
    def norm(text: str) -> str:
        return " ".join(text.casefold().split()).strip("<>[]() ").rstrip(".")

    return norm(answer) == norm(placeholder)


def _example(node: Any, root: dict[str, Any], *, hint: str, depth: int) -> Any:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return _Placeholder(hint or "...")
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _example(_resolve(ref, root), root, hint=_hint(node, hint), depth=depth + 1)
    for key in ("examples", "default", "const", "enum"):
        if key in node:
            value = node[key]
            if key not in ("examples", "enum"):
                return value
            if isinstance(value, list) and value:
                return value[0]
    hint = _hint(node, hint)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            chosen = next((b for b in branches if _types(b) != ["null"]), branches[0])
            return _example(chosen, root, hint=hint, depth=depth + 1)
    kind = next((t for t in _types(node) if t != "null"), None)
    if kind is None and isinstance(node.get("properties"), dict):
        kind = "object"
    if kind is None and "items" in node:
        kind = "array"
    if kind == "object":
        properties = node.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {
            name: _example(sub, root, hint=name.replace("_", " "), depth=depth + 1)
            for name, sub in properties.items()
        }
    if kind == "array":
        return [_example(node.get("items"), root, hint=hint, depth=depth + 1)]
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _Placeholder(hint or "...")


def _bracketed(example: Any) -> Any:
    """``example`` with each placeholder string shown as ``<placeholder>``."""
    if isinstance(example, _Placeholder):
        return f"<{example}>"
    if isinstance(example, dict):
        return {key: _bracketed(value) for key, value in example.items()}
    if isinstance(example, list):
        return [_bracketed(item) for item in example]
    return example


def _types(node: Any) -> list[str]:
    if not isinstance(node, dict):
        return []
    declared = node.get("type")
    if isinstance(declared, str):
        return [declared]
    return [t for t in declared if isinstance(t, str)] if isinstance(declared, list) else []


def _hint(node: dict[str, Any], fallback: str) -> str:
    """What a string in this place should say: its description, title, or the key's name."""
    for key in ("description", "title"):
        value = node.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return fallback


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """The schema a local JSON pointer (``#/$defs/step``) names; ``None`` when it cannot."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
