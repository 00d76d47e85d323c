"""The calculator never does one long computation: every C call that could make CPython
compute for long has its arguments bounded before it runs (a time limit checked between
steps cannot stop one call that holds the GIL)."""

from __future__ import annotations

import math
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentos.spec.config import CalculatorConfig
from agentos.tools.calculator import calculate, check_expression
from agentos.tools.types import ToolError

BOUND_S = 0.5
"""Longest one evaluation may take in these tests (the default limit is 1 s)."""


def refused_quickly(expression: str, config: CalculatorConfig | None = None) -> str:
    began = time.monotonic()
    with pytest.raises(ToolError) as caught:
        calculate(expression, config)
    assert time.monotonic() - began < BOUND_S, expression
    return caught.value.message


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("round(7, -3*10**6)", "round's ndigits -3000000 is too large"),
        ("round(7, -10**7)", "round's ndigits -10000000 is too large"),
        ("round(10**900, -(10**9))", "round's ndigits"),
        ("(10**999) ** 1000", "digits"),
        ("10**999 * 10**999 * 10**999", "more than 1000 digits"),
        ("(-(10**999)) ** 999", "digits"),
        ("2 ** 1000 ** 1000", "digits"),
        ("floor(1e308) * floor(1e308) * floor(1e308) * floor(1e308)", "digits"),
    ],
)
def test_a_long_c_call_is_refused_before_it_runs(expression: str, reason: str) -> None:
    assert reason in refused_quickly(expression)


def test_round_still_rounds() -> None:
    assert calculate("round(1234, -2)") == 1200
    assert calculate("round(7, -1000)") == 0
    assert calculate("round(2.675, 2)") == 2.67


def test_the_digit_limit_stays_within_what_python_prints() -> None:
    """A configured limit above Python's own (4300 digits) would let a result through
    that cannot be turned into text for the record; the lower of the two applies."""
    config = CalculatorConfig(max_digits=100_000, max_exponent=100_000)
    limit = sys.get_int_max_str_digits()
    assert "digits" in refused_quickly(f"10 ** {limit + 10}", config)
    assert str(calculate(f"10 ** {limit - 10}", config)).startswith("1000")


def test_deep_nesting_is_a_refusal_not_a_crash() -> None:
    config = CalculatorConfig(max_length=1_000_000, max_nodes=1_000_000)
    for expression in ("-" * 100_000 + "1", "2**" * 3000 + "2", "1+" * 100_000 + "1"):
        message = refused_quickly(expression, config)
        assert "nested too deeply" in message or "parts" in message or "digits" in message


@pytest.mark.parametrize(
    "expression",
    ["1" * 400, "-" * 100_000 + "1", "(" * 1000 + "1"],
    ids=["400 digits", "100000 signs", "1000 parentheses"],
)
def test_the_plan_check_survives_model_garbage(expression: str) -> None:
    check = check_expression({"expression": expression}, "What is 5 + 5?")
    assert check.ok in (False, None)
    assert "expression" in check.detail


_NUMBERS = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.sampled_from(["10**7", "10**999", "9**9", "1e308", "0", "0.5", "-1", "pi", "e"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
_FUNCTIONS = ["sqrt", "abs", "round", "min", "max", "floor", "ceil", "log", "log10", "exp"]


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(
            inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^"]), inner
        )
        call = st.tuples(st.sampled_from(_FUNCTIONS), st.lists(inner, min_size=1, max_size=2))
        return st.one_of(
            binary.map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            call.map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            inner.map(lambda x: f"-({x})"),
        )

    return st.recursive(_NUMBERS, extend, max_leaves=8)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions())
def test_fuzzed_expressions_end_quickly_with_a_number_or_a_refusal(expression: str) -> None:
    began = time.monotonic()
    try:
        value = calculate(expression)
    except ToolError as refused:
        assert refused.message
    else:
        assert isinstance(value, int | float)
        assert not isinstance(value, float) or math.isfinite(value)
        str(value)
    assert time.monotonic() - began < BOUND_S, expression


def test_the_largest_float_is_not_rounded_up_to_infinity() -> None:
    assert calculate("1.7976931348623151e+308") == 1.7976931348623151e308


@settings(max_examples=200, deadline=2000)
@given(st.text(alphabet="0123456789+-*/^().,%e x", max_size=300), st.text(max_size=80))
def test_the_plan_check_never_raises(expression: str, request: str) -> None:
    check = check_expression({"expression": expression}, request)
    assert check.ok in (True, False, None) and check.detail
