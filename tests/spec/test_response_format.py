"""Response formats: shapes versus JSON Schemas, and what a shape converts to."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from agentos.errors import SpecError
from agentos.spec import is_json_schema, shape_to_json_schema, to_json_schema


@pytest.mark.parametrize(
    "value",
    [
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "anything": 1},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"type": "string"},
        {"type": ["string", "null"], "description": "maybe text"},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    ],
)
def test_json_schemas_are_recognised(value: dict[str, Any]) -> None:
    assert is_json_schema(value)
    assert to_json_schema(value) == value


@pytest.mark.parametrize(
    "value",
    [
        {"thoughts": "place your thoughts here"},
        {"type": "the kind of animal", "name": "its name"},  # `type` is an answer field here
        {"type": "string", "name": "a field called name"},  # not every key is a keyword
        {"type": "colour"},  # not a JSON Schema type name
        {"type": []},
        ["a list"],
        "text",
        None,
    ],
)
def test_shapes_are_not_json_schemas(value: Any) -> None:
    assert not is_json_schema(value)


def test_shape_conversion() -> None:
    shape = {
        "title": "a short title",
        "tags": ["a tag"],
        "author": {"name": "who wrote it", "age": 42},
        "score": 0.5,
        "final": True,
        "anything": None,
        "pairs": [],
        "mixed": ["a word", 1],
    }

    schema = to_json_schema(shape)

    assert schema == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "description": "a short title"},
            "tags": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "description": "a tag"},
            },
            "author": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "who wrote it"},
                    "age": {"type": "integer", "examples": [42]},
                },
                "required": ["name", "age"],
            },
            "score": {"type": "number", "examples": [0.5]},
            "final": {"type": "boolean", "examples": [True]},
            "anything": {},
            "pairs": {"type": "array"},
            "mixed": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"type": "string", "minLength": 1, "description": "a word"},
                        {"type": "integer", "examples": [1]},
                    ]
                },
            },
        },
        "required": ["title", "tags", "author", "score", "final", "anything", "pairs", "mixed"],
    }


def test_a_shape_may_hold_json_schemas() -> None:
    schema = shape_to_json_schema({"age": {"type": "integer", "minimum": 0}, "name": "a name"})

    assert schema["properties"]["age"] == {"type": "integer", "minimum": 0}
    jsonschema.validate({"age": 3, "name": "x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"age": -1, "name": "x"}, schema)


def test_top_level_list_shape() -> None:
    schema = to_json_schema([{"word": "a word"}])

    assert schema["type"] == "array"
    assert schema["items"]["required"] == ["word"]


def test_invalid_json_schema_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="invalid JSON Schema at properties/a/type"):
        to_json_schema({"type": "object", "properties": {"a": {"type": "strin"}}})


def test_unknown_schema_dialect_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown \\$schema"):
        to_json_schema({"$schema": "https://example.com/my-own-dialect", "type": "object"})
