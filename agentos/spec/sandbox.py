"""A Jinja2 sandbox whose templates cannot hang the process or exhaust its memory.

Prompt templates come from shared agents files, so a template may compute on purpose:
``{{ 9**9**9 }}``, ``{{ 'a' * 10**12 }}``, loops inside loops. Jinja2's own sandbox only
keeps templates away from Python internals (and bounds ``range``). A time limit alone cannot
stop such a template: ``9**9**9`` is a single C-level operation that holds the GIL for
minutes, and nothing interrupts it. So every operation that can make a value much larger
than its operands is checked *before* it runs, and the clock is checked between
operations:

- ``**``, ``*`` and ``+`` (intercepted binary operators) are refused when the number or
  sequence they would make is larger than :data:`MAX_INT_BITS` bits or
  :data:`MAX_SIZE` characters and items; so are ``%`` and ``str.format`` with field
  widths beyond :data:`MAX_SIZE`;
- the filters and ``str`` methods that pad, repeat or join (``center``, ``indent``,
  ``join``, ``replace``, ``wordwrap``, ``batch``, ``slice``, ``ljust``, ...) are checked on
  their arguments, and every call's and filter's result is measured;
- the template's tree is rewritten before compiling: each ``for`` loop iterates through
  :meth:`BoundedEnvironment.agentos_iter`, each piece of output (literal text included)
  goes through :meth:`BoundedEnvironment.agentos_out`, ``~`` through
  :meth:`BoundedEnvironment.agentos_concat` and list, tuple and dict displays through
  :meth:`BoundedEnvironment.agentos_sized`, so loops, output and nested literals are all
  counted and timed; these are environment attributes, which a variable cannot shadow;
- Jinja2's compile-time constant folding is off (``optimized=False``), so no expression
  is evaluated outside these checks, and lists and dicts cannot be changed in place
  (``ImmutableSandboxedEnvironment``: no ``append`` in a loop that doubles a list).

"Size" counts characters of text and items of containers, counting a part reached twice
(the same list in two places) twice, because that is what turning it into text costs.
A render gets :data:`MAX_RENDER_SECONDS` and may produce :data:`MAX_PRODUCED` characters
of output in all (text made inside macros and ``set`` blocks included); exceeding any
bound raises :class:`TemplateLimitError` naming the bound.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes as nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_SIZE = 4 * 1024 * 1024
"""Characters and items in any one value a template makes (and in its variables)."""

MAX_PRODUCED = 4 * MAX_SIZE
"""Characters of output one render may make in all, macros and blocks included."""

MAX_INT_BITS = 100_000
"""The largest integer a template may compute (~30,000 digits; printing stops at 4,300)."""

MAX_COUNT = 100_000
"""The largest count a filter may be given (``batch``, ``slice``), as Jinja bounds range."""

MAX_RENDER_SECONDS = 2.0
"""Wall time one render may take; a prompt renders in well under a millisecond."""


class TemplateLimitError(jinja2.TemplateRuntimeError):
    """A template went past one of this module's bounds; the message names which."""


@dataclass
class _Budget:
    deadline: float
    produced: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "agentos_template_budget", default=None
)


def start_budget() -> contextvars.Token[_Budget | None]:
    """Start the clock and output count of one render; undo with :func:`end_budget`."""
    return _BUDGET.set(_Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS))


def end_budget(token: contextvars.Token[_Budget | None]) -> None:
    _BUDGET.reset(token)


def _tick() -> _Budget | None:
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TemplateLimitError(
            f"it ran longer than {MAX_RENDER_SECONDS:g} seconds (loops inside loops?)"
        )
    return budget


def _parts(item: Any) -> tuple[int, Iterable[Any] | None]:
    """An item's own size, and its parts when it is a container (``None`` otherwise)."""
    if isinstance(item, str | bytes | bytearray):
        return len(item), None
    if isinstance(item, int) and not isinstance(item, bool):
        return 1 + item.bit_length() // 8, None
    if isinstance(item, Mapping):
        return len(item), itertools.chain(item.keys(), item.values())
    if isinstance(item, list | tuple | set | frozenset):
        return len(item), item
    if isinstance(item, Namespace):
        return 1, (getattr(item, "_Namespace__attrs", {}),)
    return 1, None


def size(value: Any, limit: int = MAX_SIZE) -> int:
    """Characters and items of ``value``, a part reached twice counted twice.

    That is what turning ``value`` into text costs. A container met again is not walked
    again (its size is remembered), a container inside itself counts as too large, and
    counting stops once past ``limit``, so measuring costs at most the number of distinct
    parts, whatever the value expands to.
    """
    own, parts = _parts(value)
    if parts is None:
        return own
    known: dict[int, int] = {}
    open_: set[int] = {id(value)}
    stack: list[list[Any]] = [[value, iter(parts), own]]  # container, parts left, total
    while stack:
        frame = stack[-1]
        if frame[2] > limit:
            return limit + 1
        part = next(frame[1], _DONE)
        if part is _DONE:
            stack.pop()
            known[id(frame[0])] = frame[2]
            open_.discard(id(frame[0]))
            if not stack:
                return int(frame[2])
            stack[-1][2] += frame[2]
            continue
        own, parts = _parts(part)
        if parts is None:
            frame[2] += own
        elif id(part) in known:
            frame[2] += known[id(part)]
        elif id(part) in open_:
            return limit + 1
        else:
            open_.add(id(part))
            stack.append([part, iter(parts), own])
    return 0  # not reached: the loop returns when the outermost container is done


_DONE = object()


def check_size(value: Any, what: str) -> Any:
    """``value`` itself, or :class:`TemplateLimitError` when it is larger than MAX_SIZE."""
    if size(value) > MAX_SIZE:
        raise TemplateLimitError(f"{what} is larger than {MAX_SIZE:,} characters and items")
    return value


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str, args: Any) -> None:
    """Refuse ``%``-formatting with a width or precision beyond MAX_SIZE, or ``*`` ones."""
    for match in _PRINTF.finditer(template):
        for number in match.groups():
            if number == "*":
                raise TemplateLimitError("'*' field widths in '%' formatting are not allowed")
            if number is not None and int(number) > MAX_SIZE:
                raise TemplateLimitError(f"the '%' field width {number} is too large")
    check_size(args, "the values being formatted")


def _check_format_spec(template: str, args: Any) -> None:
    """Refuse ``str.format`` with a field width beyond MAX_SIZE, or one given by a field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimitError("format widths given by a field ('{:{}}') are not allowed")
        for number in re.findall(r"\d+", spec):
            if int(number) > MAX_SIZE:
                raise TemplateLimitError(f"the format field width {number} is too large")
    check_size(args, "the values being formatted")


def _check_int_bits(bits: int, operation: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"{operation} would make a number of about {int(bits * 0.30103):,} digits "
            f"(at most {int(MAX_INT_BITS * 0.30103):,} allowed)"
        )


def _expansion(name: str, args: Mapping[str, Any]) -> int | None:
    """How large the result of filter or ``str`` method ``name`` would be, where it can be
    much larger than its input; ``None`` for the others."""

    def text(key: str, default: str = "") -> str:
        value = args.get(key, default)
        return value if isinstance(value, str) else str(value)

    def number(key: str, default: int = 0) -> int:
        value = args.get(key, default)
        return value if isinstance(value, int) else default

    if name in ("center", "ljust", "rjust", "zfill"):
        return number("width")
    if name == "expandtabs":
        return len(text("self")) * max(number("tabsize", 8), 1)
    if name == "indent":
        width = args.get("width", 4)
        prefix = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
        return len(text("s")) + (text("s").count("\n") + 1) * prefix
    if name == "replace":
        source, old, new = text("s"), text("old"), text("new")
        times = source.count(old) if old else len(source) + 1
        count = args.get("count")
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        return len(source) + times * len(new)
    if name == "wordwrap":
        source, width = text("s"), max(number("width", 79), 1)
        return len(source) + (len(source) // width + 1) * len(text("wrapstring", "\n"))
    if name == "join":
        items = args.get("value", ())
        count = len(items) if isinstance(items, list | tuple | str) else 0
        return size(items) + count * len(text("d"))
    if name in ("batch", "slice"):
        return number("linecount", number("slices"))
    return None


_STR_METHODS = {
    "center": ("width",),
    "ljust": ("width",),
    "rjust": ("width",),
    "zfill": ("width",),
    "expandtabs": ("tabsize",),
    "replace": ("old", "new", "count"),
    "join": ("value",),
}
"""``str`` methods that can make more than they are given, and their parameters in order."""


def _check_expansion(name: str, arguments: Mapping[str, Any]) -> None:
    estimate = _expansion(name, arguments)
    if estimate is None:
        return
    limit = MAX_COUNT if name in ("batch", "slice") else MAX_SIZE
    if estimate > limit:
        raise TemplateLimitError(f"'{name}' would make more than {limit:,} characters or items")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (filter ``name``) with its arguments and its result checked."""
    signature = inspect.signature(function)
    # Jinja's async-capable filters are given a context first (``jinja_pass_arg``) that
    # the signature they report, their sync function's, may not have.
    first = next(iter(signature.parameters), "")
    passed = getattr(function, "jinja_pass_arg", None) is not None
    skip = 1 if passed and first not in ("eval_ctx", "context", "environment", "env") else 0

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        try:
            bound = signature.bind(*args[skip:], **kwargs)
        except TypeError:
            return function(*args, **kwargs)  # the filter raises its own argument error
        arguments = dict(bound.arguments)
        if name == "join":
            value = arguments.get("value")
            if value is not None and not isinstance(value, list | tuple | str | Mapping):
                arguments["value"] = bound.arguments["value"] = list(_limited(value))
        if name == "format":
            _check_printf(str(arguments.get("value", "")), (*args[1:], kwargs))
        _check_expansion(name, arguments)
        result = function(*args[:skip], *bound.args, **bound.kwargs)
        return check_size(result, f"the result of the '{name}' filter")

    return bounded


def _limited(items: Iterable[Any]) -> Iterator[Any]:
    """``items``, with the clock checked on each and at most MAX_SIZE of them."""
    for count, item in enumerate(items):
        if count % 64 == 0:
            _tick()
        if count > MAX_SIZE:
            raise TemplateLimitError(f"a loop went over more than {MAX_SIZE:,} items")
        yield item


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n * max > MAX_COUNT:
        raise TemplateLimitError(f"lipsum(n={n}, max={max}) would make too many words")
    return jinja2.utils.generate_lorem_ipsum(n, html, min, max)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the bounds of this module; see its docstring."""

    intercepted_binops = frozenset(["+", "*", "**", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, **options)
        self.filters = {
            name: _bounded_filter(name, function) for name, function in self.filters.items()
        }
        self.globals["lipsum"] = _bounded_lipsum

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and abs(left) > 1:
            _check_int_bits(abs(left).bit_length() * right, f"{left} ** {right}")
        elif operator == "*" and ints:
            _check_int_bits(abs(left).bit_length() + abs(right).bit_length(), "'*'")
        elif operator == "*" and (isinstance(left, int) or isinstance(right, int)):
            count, sequence = (left, right) if isinstance(left, int) else (right, left)
            if count > 0 and size(sequence) * count > MAX_SIZE:
                raise TemplateLimitError(
                    f"repeating a value {count:,} times would make more than "
                    f"{MAX_SIZE:,} characters and items"
                )
        elif operator == "+" and not ints:
            if size(left) + size(right) > MAX_SIZE:
                raise TemplateLimitError(
                    f"'+' would make more than {MAX_SIZE:,} characters and items"
                )
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str | bytes):
            if name in ("format", "format_map") and isinstance(owner, str):
                _check_format_spec(owner, (args, kwargs))
            elif name in _STR_METHODS:
                arguments = dict(zip(_STR_METHODS[name], args, strict=False))
                arguments.update(kwargs)
                arguments["self"] = arguments["s"] = owner
                if name == "join":
                    items = list(_limited(args[0])) if args else []
                    arguments["value"], arguments["d"] = items, owner
                    args = (items, *args[1:])
                _check_expansion(name, arguments)
        result = super().call(__context, __obj, *args, **kwargs)
        return check_size(result, f"the result of '{name or 'a call'}'")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def agentos_iter(self, items: Any) -> Iterator[Any]:
        """What a ``for`` loop iterates over: the clock checked at every item."""
        if isinstance(items, jinja2.Undefined):
            return iter(items)
        return _limited(items)

    def agentos_out(self, value: Any) -> str:
        """A piece of output, measured and counted against the render's budget."""
        budget = _tick()
        check_size(value, "a value being output")
        text = str(value)
        if budget is not None:
            budget.produced += len(text)
            if budget.produced > MAX_PRODUCED:
                raise TemplateLimitError(f"it made more than {MAX_PRODUCED:,} characters of output")
        return text

    def agentos_concat(self, *values: Any) -> str:
        """``a ~ b``: each part measured before it becomes text."""
        _tick()
        if sum(size(value) for value in values) > MAX_SIZE:
            raise TemplateLimitError(f"'~' would make more than {MAX_SIZE:,} characters")
        return "".join(str(value) for value in values)

    def agentos_sized(self, value: Any) -> Any:
        """A list, tuple or dict display's value, measured."""
        _tick()
        return check_size(value, "a list or dict")


class _Bounder(NodeTransformer):
    """Routes loops, output, ``~`` and displays through :class:`BoundedEnvironment`."""

    @staticmethod
    def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
        return nodes.Call(
            nodes.EnvironmentAttribute(name, lineno=lineno), args, [], None, None, lineno=lineno
        )

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._call("agentos_iter", [node.iter], node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._call("agentos_out", [child], child.lineno) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._call("agentos_concat", list(node.nodes), node.lineno)

    def _display(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return self._call("agentos_sized", [node], node.lineno)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._display(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._display(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":
            self.generic_visit(node)
            return node
        return self._display(node)


def bound(tree: nodes.Template, environment: jinja2.Environment) -> nodes.Template:
    """``tree`` rewritten so that :class:`BoundedEnvironment` sees loops and output."""
    result = _Bounder().visit(tree)
    assert isinstance(result, nodes.Template)
    result.set_environment(environment)
    return result
