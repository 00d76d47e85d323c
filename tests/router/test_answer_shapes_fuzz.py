"""Fuzzing start-up detection against engines that answer differently: whatever JSON an
engine sends back to the detection requests, detection ends in an EngineInfo (healthy
with the capabilities it can use, or not, with a reason), never an exception that ends
the run. A bounded number of examples keeps it to seconds (``AGENTOS_FUZZ_EXAMPLES``
raises it for a longer hunt). Jobs against such answers are fuzzed in
``test_hostile_answers.py``."""

from __future__ import annotations

import asyncio
import copy
import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentos.router.client import EngineClient, EngineInfo
from agentos.router.detection import detect_engine
from tests.router.conftest import scripted_engine

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
numbers_or_not = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.none(),
)
"""Token counts and embedding entries as engines get them wrong: huge, NaN, text, lists."""
VALID = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "text": "hi"}],
    "data": [{"index": 0, "embedding": [0.5, -0.5]}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}
"""An answer every endpoint can use; the fuzz mutates it at the places engines differ."""
PLACES = [
    ("choices",),
    ("choices", 0),
    ("choices", 0, "index"),
    ("choices", 0, "message"),
    ("choices", 0, "message", "content"),
    ("choices", 0, "text"),
    ("data",),
    ("data", 0),
    ("data", 0, "index"),
    ("data", 0, "embedding"),
    ("data", 0, "embedding", 0),
    ("usage",),
    ("usage", "prompt_tokens"),
    ("usage", "completion_tokens"),
]
DELETE = object()


def mutated(changes: list[tuple[tuple[Any, ...], Any]]) -> Any:
    answer: Any = copy.deepcopy(VALID)
    for place, value in changes:
        target = answer
        for step in place[:-1]:
            try:
                target = target[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(target, dict) or (
                isinstance(target, list) and isinstance(place[-1], int) and target
            ):
                if value is DELETE and isinstance(target, dict):
                    target.pop(place[-1], None)
                elif value is not DELETE:
                    target[place[-1]] = value
    return answer


answers = st.one_of(
    json_values,
    st.lists(
        st.tuples(
            st.sampled_from(PLACES),
            st.one_of(
                numbers_or_not, json_values, st.just(DELETE), st.lists(st.floats(), max_size=3)
            ),
        ),
        max_size=3,
    ).map(mutated),
)
FUZZ = settings(
    max_examples=int(os.environ.get("AGENTOS_FUZZ_EXAMPLES", "40")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)


def _serve(answer: Any) -> Any:
    def script(request: Any, body: Any) -> tuple[int, Any]:
        return 200, answer

    return script


@FUZZ
@given(answer=answers)
# two choices whose indexes cannot be compared (the prompt-list question): a TypeError
@example(answer={"choices": [{"index": "a", "text": "x"}, {"index": 0, "text": "y"}]})
def test_detection_survives_any_answer(answer: Any) -> None:
    for models in (["m"], None):  # given in config, or listed by the engine
        check_detection(answer, models)


def check_detection(answer: Any, models: list[str] | None) -> None:
    async def check() -> EngineInfo:
        async with scripted_engine(_serve(answer)) as url:
            client = EngineClient("fuzz", url, timeout=2.0)
            try:
                return await detect_engine(client, models, attempts=1)
            finally:
                await client.aclose()

    info = asyncio.run(check())
    assert isinstance(info, EngineInfo)
    assert info.healthy == bool(info.capabilities)
    assert info.healthy or info.detail
