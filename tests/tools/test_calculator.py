"""The calculator: right answers, and refusals instead of work it must never do."""

from __future__ import annotations

import time

import pytest

from agentos.spec.config import CalculatorConfig
from agentos.tools.calculator import calculate
from agentos.tools.registry import ToolContext, ToolError, ToolRegistry


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(41 * 7) + 13", 300),
        ("100 / 4 + 7", 32),
        ("2 ** 10", 1024),
        ("2^10", 1024),
        ("7 // 2 + 7 % 2", 4),
        ("-3 + +5", 2),
        ("0.1 + 0.2", 0.3),
        ("sqrt(16) + abs(-2) + max(1, 5)", 11),
        ("round(pi, 2)", 3.14),
        ("2 ** -1", 0.5),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("9**9**9", "exponent 387420489 is too large"),
        ("2 ** 5000", "exponent 5000 is too large"),
        ("999 ** 999", "digits"),
        ("10**999 * 10**999", "more than 1000 digits"),
        ("__import__('os').system('echo hacked')", "unknown function '__import__"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__.__bases__", "Attribute is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "'a' is not a number"),
        ("[1, 2]", "List is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 / 0", "division by zero"),
        ("log(1, 1)", "log(1, 1) divides by zero"),
        ("exp(10000)", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e308 * 10", "not a finite number"),
        ("2 +", "not an arithmetic expression"),
        ("sqrt(x=4)", "keyword"),
    ],
)
def test_refusals_say_why(expression: str, reason: str) -> None:
    with pytest.raises(ToolError) as caught:
        calculate(expression)
    assert reason in caught.value.message
    assert not caught.value.transient


def test_refuses_9_pow_9_pow_9_without_computing_it() -> None:
    started = time.monotonic()
    with pytest.raises(ToolError):
        calculate("9**9**9")
    assert time.monotonic() - started < 0.5


def test_size_limits_come_from_the_config() -> None:
    small = CalculatorConfig(max_length=10, max_nodes=5, max_exponent=3, max_digits=4)
    with pytest.raises(ToolError, match="at most 10"):
        calculate("1 + 2 + 3 + 4 + 5", small)
    with pytest.raises(ToolError, match="at most 5"):
        calculate("1+2+3+4", small)
    with pytest.raises(ToolError, match="exponents up to 3"):
        calculate("2**4", small)
    with pytest.raises(ToolError, match="4 digits"):
        calculate("99999", small)
    assert calculate("2**3", small) == 8


async def test_through_the_registry_bad_arguments_never_reach_the_tool(
    registry: ToolRegistry, context: ToolContext
) -> None:
    tool = registry.tools["calculator"]

    good = await registry.call(tool, {"expression": "(41 * 7) + 13"}, context=context, step=1)
    quoted = await registry.call(tool, {"expression": "__import__('os')"}, context=context, step=2)
    bare = await registry.call(tool, {"expression": "abs(__import__)"}, context=context, step=3)
    missing = await registry.call(tool, {}, context=context, step=4)

    assert (good.ok, good.output) == (True, 300)
    assert quoted.error_class == "ArgumentError" and "does not match" in (quoted.error or "")
    assert bare.error_class == "ToolError" and "__import__" in (bare.error or "")
    assert missing.error_class == "ArgumentError" and "'expression'" in (missing.error or "")


@pytest.mark.parametrize(
    ("request_text", "expression", "ok", "detail"),
    [
        (
            "What is 15% of 240?",
            "15 * 240",
            False,
            "the request takes 15% but the expression '15 * 240' does not divide 15 by 100 "
            "(write 15% as 15 / 100)",
        ),
        ("What is 15% of 240?", "15 / 100 * 240", True, None),
        ("What is 15% of 240?", "240 * 0.15", True, None),
        ("What is 15 percent of 240?", "0.15*240", True, None),
        ("Calculate 8% of 1250", "8 * 12.5", True, None),
        ("What is 15% of 240?", "240 * 15 / 100", True, None),
        (
            "Calculate 8% of 1250",
            "8 / 100 * 25",
            False,
            "the expression '8 / 100 * 25' has 25, which the request does not",
        ),
        (
            "Calculate (41 * 7) + 13",
            "(41 * 7) + 31",
            False,
            "the expression '(41 * 7) + 31' has 31, which the request does not",
        ),
        ("Calculate (41 * 7) + 13", "(41 * 7) + 13", True, None),
        ("What is 7 squared?", "7 ** 2", True, None),
        ("What is half of 1,250?", "1250 / 2", True, None),
        ("What is log10(1000)?", "log10(1000)", True, None),
        ("How many minutes are in 3 hours?", "3 * 60", True, None),
        (
            "Calculate (41 * 7) + 13",
            "41 * 7",
            None,
            "the request's 13 is not in the expression '41 * 7' (it may be for another step)",
        ),
        (
            "What is seven times six?",
            "7 * 6",
            None,
            "the request has no digits to check the expression '7 * 6' against",
        ),
    ],
)
def test_the_expression_is_checked_against_the_request(
    request_text: str, expression: str, ok: bool | None, detail: str | None
) -> None:
    from agentos.tools.calculator import check_expression

    check = check_expression({"expression": expression}, request_text)
    assert check.ok is ok, check.detail
    if detail is not None:
        assert check.detail == detail
