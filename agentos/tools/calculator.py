"""The ``calculator`` tool: arithmetic on an expression, parsed with :mod:`ast`, never run.

An expression is parsed into a syntax tree and walked by a small evaluator that knows
numbers, ``+ - * / // % **`` (``^`` is read as ``**``, as on a pocket calculator), unary
signs, parentheses, a few functions (``sqrt``, ``abs``, ``round``, ``min``, ``max``,
``floor``, ``ceil``, ``log``, ``log10``, ``exp``, ``sin``, ``cos``, ``tan``) and the
constants ``pi`` and ``e``. Everything else — names, attributes, calls of anything else,
strings, comprehensions, ``__import__`` — is refused with the reason, because nothing is
ever handed to ``eval``.

Bounded, so no expression can take the process down (limits in ``tools.calculator``):
its length and number of tree nodes; the exponent of ``**`` (``9**9**9`` is refused
before anything is computed: the inner ``9**9`` already exceeds it); the digits of every
integer made on the way, estimated *before* a multiplication or power is done; the
``ndigits`` of ``round`` (``round(7, -10**7)`` would make ``10**10**7`` inside one C call);
and the wall time of the whole walk.

The wall-time limit is checked between steps, so it cannot stop one long C call (which
also holds the GIL and freezes the event loop): every operation that can make CPython
compute for long in one call has its arguments bounded *before* it runs instead. Those
are ``**`` (exponent and digits), ``*`` (digits), ``round`` (``ndigits``) and turning an
integer into text (digits: the digit limit is never above Python's own
``sys.get_int_max_str_digits()``, 4300 by default, so a result can always be printed and
recorded). ``//``, ``%`` and ``/`` on integers of bounded size are fast; there are no
shifts, ``factorial``, ``comb``, ``int(str)`` or ``format`` to call.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from agentos.spec.config import CalculatorConfig, ToolsConfig
from agentos.tools.types import PlanExample, StepCheck, Tool, ToolContext, ToolError

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitXor: operator.pow,
}

_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_LOG10_2 = math.log10(2)


def _digits(value: int) -> int:
    """Decimal digits of ``value``, estimated from its bit length (never converts it)."""
    return int(abs(value).bit_length() * _LOG10_2) + 1


class Evaluator:
    """Walks one parsed expression within the limits of ``config``."""

    def __init__(self, config: CalculatorConfig) -> None:
        self.config = config
        self.deadline = time.monotonic() + config.timeout
        printable = sys.get_int_max_str_digits() or config.max_digits
        self.max_digits = min(config.max_digits, printable)
        """``max_digits``, but never more than Python will turn into text."""

    def evaluate(self, expression: str) -> Number:
        if len(expression) > self.config.max_length:
            raise ToolError(
                f"the expression is {len(expression)} characters long; the calculator takes "
                f"at most {self.config.max_length}"
            )
        text = expression.replace("×", "*").replace("÷", "/").strip()
        tree = _parse(text)
        nodes = sum(1 for _ in ast.walk(tree))
        if nodes > self.config.max_nodes:
            raise ToolError(
                f"the expression has {nodes} parts; the calculator takes at most "
                f"{self.config.max_nodes}"
            )
        try:
            return self._node(tree.body)
        except RecursionError:
            raise ToolError("the expression is nested too deeply") from None

    def _node(self, node: ast.AST) -> Number:
        if time.monotonic() > self.deadline:
            raise ToolError(f"the calculation took longer than {self.config.timeout:g}s")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ToolError(f"{value!r} is not a number")
            return self._checked(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            operand = self._node(node.operand)
            return operand if isinstance(node.op, ast.UAdd) else -operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left = self._node(node.left)
            right = self._node(node.right)
            return self._binary(node.op, left, right)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise ToolError(f"unknown name '{node.id}': the calculator knows only pi and e")
        if isinstance(node, ast.Call):
            return self._call(node)
        raise ToolError(
            f"{type(node).__name__} is not allowed: the calculator takes numbers, "
            "+ - * / // % ** and parentheses, and a few functions"
        )

    def _call(self, node: ast.Call) -> Number:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name is None or name not in _FUNCTIONS:
            shown = name or ast.unparse(node.func)
            raise ToolError(
                f"unknown function '{shown}': the calculator knows {', '.join(_FUNCTIONS)}"
            )
        if node.keywords:
            raise ToolError(f"{name}() takes no keyword arguments")
        args = [self._node(arg) for arg in node.args]
        shown = f"{name}({', '.join(map(str, args))})"
        ndigits = args[1] if name == "round" and len(args) == 2 else None
        if isinstance(ndigits, int) and abs(ndigits) > self.max_digits:
            raise ToolError(
                f"round's ndigits {ndigits} is too large; the calculator allows up to "
                f"{self.max_digits} either way"
            )
        try:
            value = _FUNCTIONS[name](*args)
        except (TypeError, ValueError) as exc:
            raise ToolError(f"{shown}: {exc}") from None
        except ZeroDivisionError:  # log(1, 1): the base's logarithm is 0
            raise ToolError(f"{shown} divides by zero") from None
        except OverflowError:
            raise ToolError(f"{shown} is too large") from None
        return self._checked(value)

    def _binary(self, op: ast.operator, left: Number, right: Number) -> Number:
        config = self.config
        max_digits = self.max_digits
        if isinstance(op, ast.Pow | ast.BitXor):
            if abs(right) > config.max_exponent:
                raise ToolError(
                    f"the exponent {right} is too large; the calculator allows exponents up "
                    f"to {config.max_exponent}"
                )
            if isinstance(left, int) and isinstance(right, int) and right > 0 and left:
                estimate = right * math.log10(abs(left))
                if estimate > max_digits:
                    raise ToolError(
                        f"{left} ** {right} would have about {int(estimate) + 1} digits; the "
                        f"calculator allows {max_digits}"
                    )
        if (
            isinstance(op, ast.Mult)
            and isinstance(left, int)
            and isinstance(right, int)
            and left
            and right
            and _digits(left) + _digits(right) - 1 > max_digits
        ):
            raise ToolError(
                f"the product would have more than {max_digits} digits, the calculator's limit"
            )
        try:
            value = _BINARY[type(op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
        if isinstance(value, complex):
            raise ToolError(f"{left} ** {right} is not a real number")
        return self._checked(value)

    def _checked(self, value: Number) -> Number:
        if isinstance(value, int) and _digits(value) > self.max_digits:
            raise ToolError(
                f"a number with more than {self.max_digits} digits is beyond the calculator's limit"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("the result is not a finite number")
        return value


def _parse(text: str) -> ast.Expression:
    """``text`` as a syntax tree; a ToolError for what is no expression, or one too deeply
    nested for the parser (which then runs out of memory or recursion, not syntax)."""
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    except (MemoryError, RecursionError):
        raise ToolError("the expression is nested too deeply") from None


def calculate(expression: str, config: CalculatorConfig | None = None) -> Number:
    """The value of ``expression``; an integral float comes back as an int (``32``, not
    ``32.0``) and floats are rounded to 15 significant digits (``0.1 + 0.2`` is ``0.3``)."""
    value = Evaluator(config or CalculatorConfig()).evaluate(expression)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        rounded = float(f"{value:.15g}")
        return rounded if math.isfinite(rounded) else value  # 1.7976931348623157e308
    return value


_EXAMPLES = (
    ("What is 12 * (3 + 4)?", "12 * (3 + 4)"),
    ("Calculate (5 + 6) * 2", "(5 + 6) * 2"),
    ("Calculate (6 * 4) + 2", "(6 * 4) + 2"),
    ("What is 3 to the power of 4?", "3 ** 4"),
    ("How much is 2 ** 8 - 1?", "2 ** 8 - 1"),
    ("What is 6 * 6?", "6 * 6"),
    ("Work out 90 - 15", "90 - 15"),
)
"""Requests and their expressions, for planner prompts (see :mod:`agentos.tools.plans`)."""


_REQUEST_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|\.\d+)")
_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:%|percent\b|per\s+cent\b)", re.IGNORECASE)
_OVER_100 = re.compile(r"/\s*100(?![\d.])|\*\s*0?\.01(?!\d)")
_IMPLIED: dict[str, tuple[float, ...]] = {
    "square": (2,), "squared": (2,), "cube": (3,), "cubed": (3,), "half": (2,),
    "halve": (2,), "double": (2,), "twice": (2,), "triple": (3,), "thrice": (3,),
    "percent": (100,), "%": (100,), "dozen": (12,), "hundred": (100,), "thousand": (1000,),
    "million": (1_000_000,),
    "second": (60,), "seconds": (60,), "minute": (60,), "minutes": (60,),
    "hour": (60, 24, 3600), "hours": (60, 24, 3600), "day": (24, 7, 365),
    "days": (24, 7, 365), "week": (7, 52), "weeks": (7, 52), "month": (12, 30),
    "months": (12, 30), "year": (12, 52, 365), "years": (12, 52, 365),
}  # fmt: skip
"""Numbers a request says in words (or implies by its units) that an expression may write
as digits: "minutes in 3 hours" is 3 * 60."""


def check_expression(arguments: dict[str, Any], request: str) -> StepCheck:
    """The calculator's check of a plan step against the request it serves, on the
    numbers alone (cheap, and enough for the mistakes small models make):

    - every number of the expression must be one of the request's, or one the request
      implies (``squared`` is 2; a percentage makes 100, 0.01 and the hundredth of each
      number usable: 0.15, or 12.5 for 8% of 1250); a number from nowhere makes the step
      wrong;
    - a percentage of the request must be divided by 100 in the expression (``15 / 100``,
      ``* 0.01``, or a number written as its hundredth: ``0.15 * 240``, ``8 * 12.5``);
      ``15 * 240`` for "15% of 240" is wrong;
    - a number of the request missing from the expression, or a request without digits,
      leaves it open (``ok`` None): another step may use that number, words may hold it.
    """
    expression = str(arguments.get("expression", ""))
    shown = f"'{expression}'"
    try:
        tree = _parse(expression.replace("^", "**"))
    except ToolError:
        return StepCheck(None, f"the expression {shown} does not parse")
    used = [
        _as_float(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float)
    ]
    given = [float(n.replace(",", "")) for n in _REQUEST_NUMBER.findall(request)]
    if not given:
        return StepCheck(None, f"the request has no digits to check the expression {shown} against")
    percents = [float(n) for n in _PERCENT.findall(request)]
    allowed = set(given)
    for word in re.findall(r"[a-z]+|%", request.lower()):
        allowed.update(_IMPLIED.get(word, ()))
    if percents:
        # a percentage may be taken off either operand: 8% of 1250 as 8 * 12.5
        allowed.update({100.0, 0.01, *(round(n / 100, 12) for n in given)})
    invented = [n for n in used if not any(math.isclose(n, a) for a in allowed)]
    if invented:
        listed = ", ".join(_number(n) for n in dict.fromkeys(invented))
        return StepCheck(False, f"the expression {shown} has {listed}, which the request does not")
    hundredths = [n / 100 for n in given]
    for percent in percents:
        as_fraction = any(math.isclose(n, h) for n in used for h in hundredths)
        if not as_fraction and not _OVER_100.search(expression):
            p = _number(percent)
            return StepCheck(
                False,
                f"the request takes {p}% but the expression {shown} does not divide {p} by "
                f"100 (write {p}% as {p} / 100)",
            )
    missing = [
        n for n in given if not any(math.isclose(u, n) or math.isclose(u, n / 100) for u in used)
    ]
    if missing:
        listed = ", ".join(_number(n) for n in dict.fromkeys(missing))
        return StepCheck(
            None,
            f"the request's {listed} is not in the expression {shown} (it may be for another step)",
        )
    return StepCheck(True, f"the expression {shown} uses the request's numbers")


def _as_float(value: int | float) -> float:
    """``value`` as a float; an integer too large for one (a model's 400 digits) is inf."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def calculator_tool(config: ToolsConfig) -> Tool:
    limits = config.calculator

    def run(arguments: dict[str, Any], context: ToolContext) -> Number:
        return calculate(str(arguments["expression"]), context.config.calculator)

    return Tool(
        name="calculator",
        description="Evaluate an arithmetic expression, e.g. (41 * 7) + 13 or sqrt(2) ** 3.",
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "pattern": r"^[0-9a-z(-][0-9a-z+*/%^(). ,_-]*$",
                    "description": "the arithmetic to do: numbers, + - * / ** and parentheses",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        function=run,
        timeout_s=limits.timeout + 1.0,
        side_effects=False,
        check=check_expression,
        examples=tuple(
            PlanExample(request, (("calculator", {"expression": expression}),))
            for request, expression in _EXAMPLES
        ),
    )
