"""What the embedder reads of a stored model answer, when the answer is garbage: JSON
nested deeper than Python's recursion limit is embedded as its text, never a crash that
stops the background embedder for good."""

from __future__ import annotations

import json

import pytest

from agentos.memory.sources import text_of


@pytest.mark.parametrize(
    "content",
    ["[" * 5000 + "]" * 5000, '{"a": ' + "[" * 900 + "]" * 900 + "}"],
    ids=["5000 deep", "900 deep"],
)
def test_a_deeply_nested_answer_is_embedded_as_its_text(content: str) -> None:
    stored = json.dumps({"choices": [{"index": 0, "message": {"content": content}}]})
    assert text_of("llm_calls", stored) == content


def test_a_normal_json_answer_is_still_made_readable() -> None:
    stored = json.dumps({"choices": [{"message": {"content": '{"city": "Paris"}'}}]})
    assert text_of("llm_calls", stored) == "city: Paris"
