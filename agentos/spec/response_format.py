"""An agent's ``response_format``: a *shape* written by example, or a JSON Schema.

A shape reads like the answer it asks for (the AgencyOS spelling)::

    thoughts: place your thoughts here
    keywords:
    - keywords in the language you've chosen

A mapping is taken for a JSON Schema when it has ``$schema``, or when its ``type`` is a
JSON Schema type name (or a list of them) and every one of its keys is a JSON Schema
keyword; anything else is a shape. The rule is applied to nested mappings of a shape too,
so ``age: {type: integer, minimum: 0}`` inside a shape is a schema for ``age``.

Shape → JSON Schema:

- mapping → ``{"type": "object", "properties": ..., "required": [every key]}``; answers may
  carry extra keys, since small models add them and they harm nobody;
- a string → ``{"type": "string", "minLength": 1, "description": the string}`` (a described
  key wants a value, so an empty string does not count);
- ``[x]`` → ``{"type": "array", "items": convert(x)}`` (several items: ``anyOf`` them);
- an int, float or bool → ``integer``, ``number`` or ``boolean`` with the literal as an
  example; ``null`` → any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from agentos.errors import SpecError

JSON_SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
"""The values of a JSON Schema ``type``."""

JSON_SCHEMA_KEYWORDS = frozenset(
    {
        *("$schema", "$id", "$ref", "$defs", "$anchor", "$comment", "$dynamicRef"),
        *("$dynamicAnchor", "$vocabulary", "definitions", "dependencies"),
        *("title", "description", "default", "examples", "deprecated", "readOnly"),
        *("writeOnly", "type", "enum", "const", "format", "nullable"),
        *("properties", "required", "additionalProperties", "patternProperties"),
        *("propertyNames", "minProperties", "maxProperties", "dependentRequired"),
        *("dependentSchemas", "unevaluatedProperties", "unevaluatedItems"),
        *("items", "prefixItems", "additionalItems", "contains", "minContains"),
        *("maxContains", "minItems", "maxItems", "uniqueItems"),
        *("minLength", "maxLength", "pattern", "contentEncoding", "contentMediaType"),
        *("contentSchema", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
        *("multipleOf", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"),
    }
)
"""Keys that may appear at the top of a JSON Schema (drafts 4 to 2020-12, plus OpenAPI's
``nullable``); a mapping with any other key is a shape."""


def is_json_schema(value: Any) -> bool:
    """Whether ``value`` is written as a JSON Schema rather than as a shape."""
    if not isinstance(value, Mapping):
        return False
    if "$schema" in value:
        return True
    declared = value.get("type")
    names = declared if isinstance(declared, list) else [declared]
    if not names or not all(isinstance(n, str) and n in JSON_SCHEMA_TYPES for n in names):
        return False
    return all(key in JSON_SCHEMA_KEYWORDS for key in value)


def shape_to_json_schema(shape: Any) -> dict[str, Any]:
    """The JSON Schema a shape stands for (see the module docstring for the rules)."""
    if isinstance(shape, Mapping):
        if is_json_schema(shape):
            return dict(shape)
        return {
            "type": "object",
            "properties": {str(key): shape_to_json_schema(item) for key, item in shape.items()},
            "required": [str(key) for key in shape],
        }
    if isinstance(shape, list):
        if not shape:
            return {"type": "array"}
        if len(shape) == 1:
            return {"type": "array", "items": shape_to_json_schema(shape[0])}
        return {"type": "array", "items": {"anyOf": [shape_to_json_schema(x) for x in shape]}}
    if isinstance(shape, bool):
        return {"type": "boolean", "examples": [shape]}
    if isinstance(shape, int):
        return {"type": "integer", "examples": [shape]}
    if isinstance(shape, float):
        return {"type": "number", "examples": [shape]}
    if shape is None:
        return {}
    text = str(shape)
    # A described key wants a value: an empty string is as good as a missing key.
    if text:
        return {"type": "string", "minLength": 1, "description": text}
    return {"type": "string"}


def check_json_schema(schema: Mapping[str, Any]) -> None:
    """Raise :class:`SpecError` unless ``schema`` is valid under its own meta-schema.

    Without ``$schema`` the schema is checked as draft 2020-12; an unknown ``$schema`` is
    an error rather than a guess.
    """
    as_dict = dict(schema)
    if "$schema" in as_dict and validator_for(as_dict, default=None) is None:  # type: ignore[arg-type]
        raise SpecError(f"unknown $schema {as_dict['$schema']!r}")
    validator = validator_for(as_dict, default=Draft202012Validator)
    try:
        validator.check_schema(as_dict)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top"
        raise SpecError(f"invalid JSON Schema at {where}: {exc.message}") from None


def to_json_schema(raw: Mapping[str, Any] | list[Any]) -> dict[str, Any]:
    """The JSON Schema for a response format as written; :class:`SpecError` if invalid."""
    schema = shape_to_json_schema(raw)
    check_json_schema(schema)
    return schema
