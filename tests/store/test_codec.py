"""The store's JSON codec writes exactly what the standard library writes (hashes depend
on it), whichever library it takes."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from agentos.store.codec import canonical, dumps, is_plain, nested_deeper_than


def _reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _random_float(rng: random.Random) -> float:
    while True:
        value: float = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if math.isfinite(value):
            return value


def _random_text(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(0, 12)):
        code = rng.choice(
            [rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]
        )
        chars.append(chr(code))
    return "".join(chars)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 8 if depth < 3 else 5)
    if kind == 0:
        return _random_text(rng)
    if kind == 1:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == 2:
        return _random_float(rng)
    if kind == 3:
        return rng.random() * 10 ** rng.randint(-8, 20)
    if kind == 4:
        return rng.choice([True, False, None, 0.0, -0.0, 1.0])
    if kind == 5:
        return rng.choice([float("nan"), float("inf"), -math.inf, 2**70, -(2**64)])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 7:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_canonical_is_the_standard_librarys_for_random_values() -> None:
    rng = random.Random(20261203)
    for _ in range(20_000):
        value = _random_value(rng)
        assert canonical(value) == _reference(value), value
        assert json.loads(dumps(value)) == json.loads(json.dumps(value)) or _has_nan(value)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nan(v) for v in value)
    return False


@pytest.mark.parametrize(
    "value",
    [
        1e-05,
        1e16,
        1.5e16,
        0.0001,
        9999999999999998.0,
        5e-324,
        -0.0,
        float("nan"),
        float("inf"),
        2**64,
        -(2**63) - 1,
        "\ud800",
        {"b": 1, "a": {"é": 1, "e": 2, "\U0001f600": 3, "\uffff": 4}},
        {1: "int key"},
        'a\x00\x1f\x7f\u2028\ud7ff\ue000\U0001f600"\\/\n\t\b\f\r é',
        [[], {}, (), ""],
    ],
)
def test_edge_values_are_written_like_the_standard_library(value: Any) -> None:
    assert canonical(value) == _reference(value)
    assert dumps(value) in (json.dumps(value, ensure_ascii=False), canonical(value)) or (
        json.loads(dumps(value)) == json.loads(json.dumps(value, ensure_ascii=False))
    )


def test_nan_survives_dumps() -> None:
    assert dumps({"x": float("nan")}) == '{"x": NaN}'


def test_what_json_refuses_is_refused() -> None:
    @dataclass
    class Point:
        x: int

    for value in (datetime(2026, 1, 1), Point(1), object(), {"a": {1, 2}}):
        with pytest.raises(TypeError):
            dumps(value)
        with pytest.raises(TypeError):
            canonical(value)


def test_subclasses_take_the_standard_librarys_path() -> None:
    class Colour(StrEnum):
        RED = "red"

    assert not is_plain(Colour.RED)
    assert canonical({"c": Colour.RED}) == _reference({"c": Colour.RED})
    assert is_plain({"a": [1, 2.5, None, True, "x"]})
    assert not is_plain({"a": 1e-9})


def test_dumps_keeps_what_orjson_would_lose() -> None:
    from collections import OrderedDict

    for value in (
        {"x": None, "y": float("inf")},
        [None, -math.inf],
        OrderedDict(a=None, b=float("nan")),
        {"n": None, "big": 2**70},
        {1: None},
    ):
        assert dumps(value) == json.dumps(value, ensure_ascii=False)
    assert dumps({"x": None, "v": [1e-9, 0.5]}) == '{"x":null,"v":[1e-9,0.5]}'
    assert json.loads(dumps([1e-9, 3.2e-05])) == [1e-9, 3.2e-05]


def test_a_lone_surrogate_is_stored_escaped_and_reads_back(tmp_path: Path) -> None:
    """SQLite keeps UTF-8 text, and a lone surrogate has none: ``dumps`` escapes it
    (``\\ud800``), which decodes to the same value."""
    value = {"text": "a\ud800b", "big": 2**70}
    text = dumps(value)
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("CREATE TABLE t (body TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (text,))
    (stored,) = conn.execute("SELECT body FROM t").fetchone()
    assert json.loads(stored) == value
    assert dumps({"text": "é"}) == '{"text":"é"}'  # no needless escaping


def test_nested_deeper_than_counts_levels_without_recursing() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert nested_deeper_than(deep, 64)
    assert not nested_deeper_than({"a": [{"b": [1]}]}, 4)
    assert nested_deeper_than({"a": [{"b": [1]}]}, 3)
    assert not nested_deeper_than("[[[[[[", 1)
