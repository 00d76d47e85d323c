"""Whatever text a model answers, parsing returns a valid value or raises ParseError:
brackets nested thousands deep, lone surrogates, NULs, arbitrary Unicode. Fuzzed with
hypothesis (bounded examples, so the suite stays quick)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentos.agents.parsing import MAX_DEPTH, ParsedAnswer, parse_answer
from agentos.errors import ParseError
from agentos.store import codec

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ANYTHING: dict[str, Any] = {}
LIST = {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize(
    "answer",
    [
        "[" * 5000 + "]" * 5000,
        '{"city": ' + "[" * 900 + "]" * 900 + "}",
        "So: " + '{"a":' * 3000 + "1" + "}" * 3000,
        "```json\n" + "[" * 5000,
        '{"city": "x", "more": ' + "{" * 4000,
    ],
    ids=["array 5000 deep", "value 900 deep", "object 3000 deep in prose", "fence", "unclosed"],
)
@pytest.mark.parametrize("schema", [CITY, ANYTHING, LIST], ids=["object", "any", "array"])
def test_deep_nesting_is_a_parse_error_not_a_crash(answer: str, schema: dict[str, Any]) -> None:
    with pytest.raises(ParseError):
        parse_answer(answer, schema)


def test_a_deep_value_is_rejected_by_name() -> None:
    with pytest.raises(ParseError, match=f"nests deeper than {MAX_DEPTH} levels"):
        parse_answer('{"city": ' + "[" * 900 + "]" * 900 + "}", ANYTHING)
    nested = '{"city": "x", "n": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}"
    assert parse_answer(nested, CITY).data["city"] == "x"


def _storable(parsed: ParsedAnswer) -> None:
    """What an agent records of a parsed answer is written and read back."""
    text = codec.dumps({"data": parsed.data, "raw": parsed.raw, "repairs": parsed.repairs})
    text.encode()  # SQLite stores UTF-8
    assert json.loads(text)["repairs"] == list(parsed.repairs)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
"""JSON-like values, NaN, infinities and lone surrogates included."""

BRACKETS = st.text(alphabet='[]{}",:\\ \nax1`\ud800\x00', max_size=400)
"""Answers made of JSON's structural characters: unclosed, unbalanced, deep."""


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    answer=st.one_of(
        st.text(max_size=300),
        BRACKETS,
        JSONISH.map(lambda v: json.dumps(v)),
        st.tuples(st.text(max_size=20), JSONISH, st.text(max_size=20)).map(
            lambda t: f"{t[0]}```json\n{json.dumps({'city': t[1]})}\n```{t[2]}"
        ),
        st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    ),
    schema=st.sampled_from([CITY, ANYTHING, LIST, None]),
)
def test_any_answer_parses_or_raises_parse_error(
    answer: str, schema: dict[str, Any] | None
) -> None:
    try:
        parsed = parse_answer(answer, schema)
    except ParseError as exc:
        assert exc.message
        return
    _storable(parsed)


def test_thousands_of_unclosed_brackets_are_refused_quickly() -> None:
    """``json_repair`` used to get each of 16 candidate spans of 4000 open braces (about
    15 s of CPU for one answer); brackets that deep are refused before any repair."""
    started = time.monotonic()
    with pytest.raises(ParseError):
        parse_answer('{"city": "x", "more": ' + "{" * 4000, CITY)
    assert time.monotonic() - started < 2.0
