"""Turn a model's answer text into a value validated against the agent's response format.

Small local models (the default is SmolLM2-135M) rarely answer with bare, valid JSON. They
wrap it in code fences, put prose before or after it, leave trailing commas, stop before
the closing brackets, use single quotes, or wrap the object they were asked for in another
one. :func:`parse_answer` repairs those locally, cheapest first, so that a recoverable
answer does not cost another model call:

1. the whole answer as strict JSON;
2. the body of each code fence (closed or not), then the whole answer, scanned for the
   JSON objects and arrays at their top level, so that prose around them is dropped; each
   is decoded strictly where possible, otherwise its span is handed to ``json_repair``
   (trailing commas, unclosed brackets and strings, single quotes, comments);
3. on each candidate that parses but does not validate, a few structural fixes that small
   models need and that cannot change what the model meant: the wanted object or array
   taken out of a one-key wrapper object, the object out of a one-element list, and a
   lone string put into a one-element array where the schema wants an array of strings.

The first candidate that validates as the model wrote it wins; one that needed
``json_repair`` is taken only when none did, because a model that restates its answer
("So, the JSON object is: {...}") restates it cleanly more often than not. Invariants:

- Only a value that validates against the schema is ever returned; nothing is invented
  (a missing required key stays missing and is reported). A value that validates but
  copies placeholder text from the instructions' example (``"<a short title>"``), or
  holds a placeholder of the model's own in its place (``"<thought to remember>"``), is
  rejected too: it is the model echoing the prompt, not answering it.
- ``ParsedAnswer.repairs`` lists every repair that produced the returned value, so that a
  run's record shows how far the answer was from what was asked; it is empty exactly when
  the answer was strict JSON that validated as it stood.
- A value nested deeper than :data:`MAX_DEPTH` is never returned (the error says so), and
  no answer text, however deep its brackets, makes parsing raise anything but
  ``ParseError``.
- A failure raises :class:`~agentos.errors.ParseError` whose message says precisely and
  briefly what was wrong (``missing required key 'keywords'``), because the agent step
  sends it back to the model as the feedback of a re-ask. The exception carries ``raw``
  (the answer), ``errors`` (every message, not only the first few) and ``expected`` (what
  the schema asks for, e.g. ``"JSON object"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import json_repair
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from agentos.agents.instructions import echoed_placeholders, expected_kind
from agentos.errors import ParseError, SpecError
from agentos.store.codec import nested_deeper_than

__all__ = ["ParsedAnswer", "parse_answer"]

MAX_CANDIDATES = 16
"""Values tried per answer; bounds the work on long, brace-heavy prose."""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in an answer's value. Deeper JSON is
no answer to any response format; it would be stored and read back by recursive code
(``json``, ``jsonschema``), and at a thousand levels it crashes them."""

MAX_MESSAGES = 3
"""Validation messages joined into a ParseError's message (all are kept in ``.errors``)."""

_FENCE = re.compile(r"```[ \t]*([A-Za-z][\w+-]*)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


@dataclass(frozen=True)
class ParsedAnswer:
    """A model answer that validated against the response format (or free text)."""

    data: Any
    """The validated value: a dict, list, string… exactly what the schema describes."""
    raw: str
    """The model's answer text as received."""
    repairs: tuple[str, ...]
    """What had to be repaired, in order; empty when the answer was clean JSON."""


@dataclass(frozen=True)
class _Candidate:
    """One JSON value found in an answer, with the repairs it took to get it."""

    value: Any
    repairs: tuple[str, ...]
    repaired: bool = False
    """Whether ``json_repair`` had to read it (it was not valid JSON as written)."""
    inside: str = ""
    """Where the value sits in what the model wrote (``"response"`` when unwrapped from
    ``{"response": ...}``), so that error messages point into the model's own answer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "repairs", tuple(dict.fromkeys(self.repairs)))


def parse_answer(text: str, schema: dict[str, Any] | None) -> ParsedAnswer:
    """Parse ``text`` into a value that validates against ``schema``.

    With ``schema=None`` the answer is free text: it is returned stripped, and an empty
    answer is an error. Raises :class:`ParseError` when no repair yields a valid value,
    and :class:`SpecError` when ``schema`` itself is not a valid JSON Schema.
    """
    if schema is None:
        stripped = text.strip()
        if not stripped:
            raise _parse_error(["the answer is empty"], text, "text")
        return ParsedAnswer(data=stripped, raw=text, repairs=())

    validator = _validator(schema)
    kind = expected_kind(schema)
    if not text.strip():
        raise _parse_error(["the answer is empty"], text, kind)

    try:
        return _parse_json(text, schema, validator, kind)
    except RecursionError:
        # a safety net: depth is bounded below, but a validator recursing through a
        # schema of its own is not ours to bound
        raise _parse_error(["the answer is nested too deeply to read"], text, kind) from None


def _parse_json(text: str, schema: dict[str, Any], validator: Validator, kind: str) -> ParsedAnswer:
    best: tuple[int, list[str]] | None = None
    fallback: _Candidate | None = None
    too_deep = False
    for found in _candidates(text, _allowed_types(schema)):
        if nested_deeper_than(found.value, MAX_DEPTH):
            too_deep = True
            continue
        misses_at_root, errors, candidate = _closest(found, validator, schema)
        errors += [
            f"{_where(path)} copies the example instead of giving a real value"
            if text is None
            else f"{_where(path)} is a placeholder ({_short(text, quote=True)}), not a real value"
            for path, text in echoed_placeholders(candidate.value, schema)
        ]
        if not errors and not candidate.repaired:
            return ParsedAnswer(data=candidate.value, raw=text, repairs=candidate.repairs)
        if not errors:
            fallback = fallback or candidate
        elif best is None or (misses_at_root, len(errors)) < (best[0], len(best[1])):
            best = (misses_at_root, errors)
    if fallback is not None:
        return ParsedAnswer(data=fallback.value, raw=text, repairs=fallback.repairs)
    if best is None and too_deep:
        raise _parse_error(
            [f"the JSON in the answer nests deeper than {MAX_DEPTH} levels"], text, kind
        )
    if best is None:
        raise _parse_error([f"no {kind} found in the answer"], text, kind)
    raise _parse_error(best[1], text, kind)


def _closest(
    candidate: _Candidate, validator: Validator, schema: dict[str, Any]
) -> tuple[int, list[str], _Candidate]:
    """``candidate``, or the first of its structural fixes that validates, else the one
    closest to the schema (see ``_errors``), with its errors. A wrapped object that lacks a
    key is reported as lacking the key, not as a wrapper."""
    misses_at_root, errors = _errors(validator, candidate.value, candidate.inside)
    best = (misses_at_root, errors, candidate)
    if not errors:
        return best
    for fixed in _fixes(candidate, schema):
        misses_at_root, errors = _errors(validator, fixed.value, fixed.inside)
        if not errors:
            return 0, [], fixed
        if (misses_at_root, len(errors)) < (best[0], len(best[1])):
            best = (misses_at_root, errors, fixed)
    return best


def _parse_error(errors: list[str], raw: str, expected: str) -> ParseError:
    message = "; ".join(errors[:MAX_MESSAGES])
    if len(errors) > MAX_MESSAGES:
        message += f" (and {len(errors) - MAX_MESSAGES} more)"
    error = ParseError(message)
    error.raw = raw  # type: ignore[attr-defined]
    error.errors = list(errors)  # type: ignore[attr-defined]
    error.expected = expected  # type: ignore[attr-defined]
    return error


_VALIDATORS: dict[str, Validator] = {}
"""Validators by schema text: one per distinct response format, built once per process."""


def _validator(schema: dict[str, Any]) -> Validator:
    """The validator for ``schema`` (its ``$schema`` dialect, else Draft 2020-12), cached."""
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _VALIDATORS.get(key)
    if validator is None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise SpecError(f"response_format is not a valid JSON Schema: {exc.message}") from exc
        validator = cls(schema)
        _VALIDATORS[key] = validator
    return validator


def _allowed_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types the schema allows at the top level; empty when it does not say."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    if "properties" in schema or "required" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return set()


# --- finding candidate values -------------------------------------------------------------


def _candidates(text: str, types: set[str]) -> Iterator[_Candidate]:
    """Every plausible JSON value in ``text``, most faithful to the answer first."""
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        pass
    else:
        yield _Candidate(whole, ())
        return

    for fence in _FENCE.finditer(text):
        lang = fence.group(1) or ""
        before = [f"stripped ```{lang} fence" if lang else "stripped ``` fence"]
        before += _prose_notes(text[: fence.start()])
        after = _prose_notes(text[fence.end() :], after=True)
        body = fence.group(2)
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, RecursionError):
            yield from _values_in(body, types, before, after)
        else:
            yield _Candidate(value, (*before, *after))
    yield from _values_in(text, types, [], [])
    if "string" in types and not stripped.startswith(("{", "[")):
        yield _Candidate(stripped, ("took the whole answer as the string",))


def _values_in(
    body: str, types: set[str], before: list[str], after: list[str]
) -> Iterator[_Candidate]:
    """The JSON objects and arrays at the top level of ``body``, with what it took to read them.

    A value that only ``json_repair`` could read, and that neither has a type the schema
    allows nor holds one in a wrapper, is skipped: such a value is usually bracketed prose
    (``[see below]``), and reporting it would hide that no real answer was found.
    """
    if types and not types & {"object", "array"}:
        return
    decoder = json.JSONDecoder()
    start = _next_opener(body, 0)
    tried = 0
    while start is not None and tried < MAX_CANDIDATES:
        tried += 1
        prose = _prose_notes(body[:start])
        try:
            value, end = decoder.raw_decode(body, start)
            repairs, repaired = [*before, *prose], False
        except (json.JSONDecodeError, RecursionError):
            end, problems, deepest = _scan(body, start)
            # json_repair takes seconds on thousands of unclosed brackets, and what it
            # would make of them is too deep to use anyway
            value = _repair(body[start:end]) if deepest <= MAX_DEPTH else None
            detail = f" ({', '.join(problems)})" if problems else ""
            repairs, repaired = [*before, *prose, f"repaired JSON{detail}"], True
            opened = dict if body[start] == "{" else list
            wanted = not types or _type_of(value) in types or _unwrap(value, types) is not None
            if not isinstance(value, opened) or not wanted:
                start = _next_opener(body, start + 1)
                continue
        trailing = _prose_notes(body[end:], after=True)
        yield _Candidate(value, (*repairs, *trailing, *after), repaired=repaired)
        start = _next_opener(body, end)


def _next_opener(body: str, pos: int) -> int | None:
    indices = [i for i in (body.find("{", pos), body.find("[", pos)) if i >= 0]
    return min(indices) if indices else None


def _prose_notes(text: str, *, after: bool = False) -> list[str]:
    if not text.strip():
        return []
    return ["removed prose after JSON" if after else "removed prose before JSON"]


def _repair(span: str) -> Any:
    """``json_repair``'s reading of ``span``; ``None`` when it finds no usable value."""
    try:
        return json_repair.loads(span)
    except Exception:  # json_repair is lenient by design; any failure means "no value"
        return None


def _scan(body: str, start: int) -> tuple[int, list[str], int]:
    """Where the bracketed value opening at ``start`` ends, what is wrong inside it, and
    how deep its brackets nest.

    A light tokenizer, not a parser: it tracks strings (double-quoted, and single-quoted
    where a quote stands in a structural position), comments and bracket depth, so that
    the span handed to ``json_repair`` holds one value and no trailing prose, and so that
    the repair note can name what was repaired.
    """
    problems: list[str] = []

    def note(problem: str) -> None:
        if problem not in problems:
            problems.append(problem)

    depth = deepest = 0
    last = ""
    i = start
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == '"' or (ch == "'" and last != "" and last in "{[,:"):
            if ch == "'":
                note("single quotes")
            i = _string_end(body, i)
            if i >= n:
                note("unterminated string")
                break
            last = ch
        elif body.startswith("//", i) or body.startswith("/*", i):
            note("comments")
            close = "\n" if body[i + 1] == "/" else "*/"
            found = body.find(close, i + 2)
            i = n - 1 if found < 0 else found + len(close) - 1
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
            last = ch
        elif ch in "}]":
            if last == ",":
                note("trailing comma")
            depth -= 1
            last = ch
            if depth == 0:
                return i + 1, problems, deepest
        elif not ch.isspace():
            last = ch
        i += 1
    if depth > 0:
        note("unclosed bracket")
    return n, problems, deepest


def _string_end(body: str, i: int) -> int:
    """Index of the closing quote of the string opening at ``i``; ``len(body)`` if none."""
    quote = body[i]
    i += 1
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return len(body)


# --- structural fixes ---------------------------------------------------------------------


def _fixes(candidate: _Candidate, schema: dict[str, Any]) -> Iterator[_Candidate]:
    """Variants of a parsed-but-invalid value that undo common small-model shape mistakes."""
    value, notes = candidate.value, candidate.repairs
    strings = _strings_to_arrays(value, schema)
    if strings is not None:
        yield _Candidate(strings[0], (*notes, *strings[1]), candidate.repaired)
    unwrapped = _unwrap(value, _allowed_types(schema))
    if unwrapped is None:
        return
    inner, unwrap, inside = unwrapped
    yield _Candidate(inner, (*notes, unwrap), candidate.repaired, inside)
    strings = _strings_to_arrays(inner, schema)
    if strings is not None:
        yield _Candidate(strings[0], (*notes, unwrap, *strings[1]), candidate.repaired, inside)


def _unwrap(value: Any, types: set[str]) -> tuple[Any, str, str] | None:
    """The value the schema wants from inside a one-key object or a one-element list,
    with the repair note and the wrapper's path."""
    if isinstance(value, dict) and len(value) == 1:
        key, inner = next(iter(value.items()))
        if isinstance(inner, dict) and "object" in types:
            return inner, f"unwrapped the object from a one-key object '{key}'", str(key)
        if isinstance(inner, list) and "array" in types:
            return inner, f"unwrapped the array from a one-key object '{key}'", str(key)
    one_object = isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
    if one_object and "object" in types:
        return value[0], "took the object out of a one-element list", "[0]"
    return None


def _strings_to_arrays(value: Any, schema: dict[str, Any]) -> tuple[Any, list[str]] | None:
    """``value`` with each lone string put in a list where ``schema`` wants strings.

    Recurses through object properties; ``None`` when there is nothing to change.
    """
    notes: list[str] = []

    def fix(node: Any, sub: Any, path: str) -> Any:
        if not isinstance(sub, dict):
            return node
        if isinstance(node, str) and _is_string_array(sub):
            where = f"in '{path}'" if path else "answer"
            notes.append(f"put the string {where} into a one-element array")
            return [node]
        properties = sub.get("properties")
        if isinstance(node, dict) and isinstance(properties, dict):
            return {
                k: fix(v, properties.get(k), f"{path}.{k}" if path else k) for k, v in node.items()
            }
        return node

    fixed = fix(value, schema, "")
    return (fixed, notes) if notes else None


def _is_string_array(schema: dict[str, Any]) -> bool:
    items = schema.get("items")
    return (
        schema.get("type") == "array" and isinstance(items, dict) and items.get("type") == "string"
    )


# --- describing validation errors ---------------------------------------------------------


def _errors(validator: Validator, value: Any, inside: str = "") -> tuple[int, list[str]]:
    """How many ways ``value`` fails at its top level, and a message for every failure.

    The count ranks candidates when none validates: the answer's reported problems come
    from the one closest to the schema at the top (right type, fewest missing keys), since
    a fragment that is wrong only deep inside is likelier what the model meant.
    Messages are in schema order, without repeats.
    """
    errors = list(validator.iter_errors(value))
    at_root = sum(1 for error in errors if not error.absolute_path)
    return at_root, list(dict.fromkeys(_describe(error, inside) for error in errors))


def _describe(error: ValidationError, inside: str = "") -> str:
    """One validation error as a message a small model can act on when re-asked."""
    path = _path(error.absolute_path, inside)
    where = _where(path)
    kind: Any = error.validator
    expected: Any = error.validator_value
    instance: Any = error.instance
    if kind == "required":
        missing = [k for k in expected if isinstance(instance, dict) and k not in instance]
        keys = ", ".join(f"'{k}'" for k in missing) or "a required key"
        plural = "keys" if len(missing) > 1 else "key"
        return f"missing required {plural} {keys}" + (f" in {where}" if path else "")
    if kind == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return f"{where} should be {wanted}, got {_type_of(instance)}"
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [k for k in instance if k not in known]
        keys = ", ".join(f"'{k}'" for k in extra)
        return f"unexpected key {keys}" + (f" in {where}" if path else "")
    if kind in ("enum", "const"):
        options = expected if kind == "enum" else [expected]
        allowed = ", ".join(_short(o) for o in options)
        return f"{where} should be one of {allowed}, got {_short(instance)}"
    if kind in ("minItems", "maxItems"):
        bound = "at least" if kind == "minItems" else "at most"
        return f"{where} should have {bound} {expected} item{'s' if expected != 1 else ''}"
    if kind == "minLength" and expected == 1:
        return f"{where} should not be empty"
    if kind in ("minLength", "maxLength"):
        bound = "at least" if kind == "minLength" else "at most"
        return f"{where} should have {bound} {expected} characters"
    return f"{where}: {error.message}" if path else error.message


def _path(parts: Any, path: str = "") -> str:
    """``parts`` as ``steps[0].tool``, continuing ``path``."""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _where(path: str) -> str:
    return f"'{path}'" if path else "the answer"


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _short(value: Any, *, quote: bool = False) -> str:
    """``value`` as JSON, cut to 40 characters; with ``quote``, a string in single quotes."""
    if quote and isinstance(value, str):
        text = value if len(value) <= 38 else value[:35] + "..."
        return f"'{text}'"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
