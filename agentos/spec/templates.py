"""Prompt templates: Jinja2 ``{{ var }}`` syntax, parsed up front and rendered strictly.

An agent's ``prompt`` and ``system`` are templates. :func:`template_variables` lists what
a template reads so that ``load_agents`` can insist on a value for each before anything
runs; :func:`render` uses ``StrictUndefined``, so a variable without a value is an error
naming it rather than an empty string silently sent to a model.

Templates run in Jinja2's sandbox: agents files get shared, and a prompt has no business
reaching Python internals. Values are data, never templates themselves. The sandbox is
:class:`~agentos.spec.sandbox.BoundedEnvironment`, which also bounds what a template may
compute (numbers, sizes, output and time), so a hostile template fails its render with a
reason instead of hanging or exhausting the process.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from agentos.errors import SpecError
from agentos.spec import sandbox

_ENVIRONMENT = sandbox.BoundedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def parse_template(template: str) -> jinja2.nodes.Template:
    """The template's syntax tree; raises ``jinja2.TemplateSyntaxError`` (with ``lineno``).

    Jinja2's parser recurses once per nesting level: a template nested too deeply for it
    is a syntax error here, not a ``RecursionError``.
    """
    try:
        return _ENVIRONMENT.parse(template)
    except (RecursionError, MemoryError):
        raise jinja2.TemplateSyntaxError("expressions are nested too deeply", 1) from None


def template_variables(template: str) -> list[tuple[str, int]]:
    """``(name, line)`` of each variable the template reads without defining it.

    In order of first use; ``line`` is 1-based within the template. Jinja2's globals
    (``range``, ``dict``, ...) are not variables. Raises ``jinja2.TemplateSyntaxError``.
    """
    tree = parse_template(template)
    undeclared = jinja2.meta.find_undeclared_variables(tree)
    found: dict[str, int] = {}
    for node in tree.find_all(jinja2.nodes.Name):
        if node.name in undeclared and node.name not in found:
            found[node.name] = node.lineno
    for name in sorted(undeclared - found.keys()):
        found[name] = 1
    return list(found.items())


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    tree = sandbox.bound(parse_template(template), _ENVIRONMENT)
    try:
        return _ENVIRONMENT.from_string(tree)
    except (RecursionError, MemoryError, SyntaxError):
        raise jinja2.TemplateSyntaxError("expressions are nested too deeply", 1) from None


def render(template: str, variables: Mapping[str, Any]) -> str:
    """``template`` with ``variables`` filled in.

    Raises :class:`SpecError` naming the first variable that has no value, or saying why
    the template cannot be parsed or rendered, or which bound of
    :mod:`agentos.spec.sandbox` it went past (size, output, time).
    """
    try:
        compiled = _compiled(template)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(f"template line {exc.lineno}: {exc.message}") from None
    token = sandbox.start_budget()
    try:
        sandbox.check_size(dict(variables), "the set of variables")
        pieces: list[str] = []
        length = 0
        for piece in compiled.generate(variables):
            length += len(piece)
            if length > sandbox.MAX_SIZE:
                raise sandbox.TemplateLimitError(
                    f"its output is longer than {sandbox.MAX_SIZE:,} characters"
                )
            pieces.append(piece)
        return "".join(pieces)
    except sandbox.TemplateLimitError as exc:
        raise SpecError(f"template stopped: {exc.message}") from None
    except RecursionError:
        raise SpecError("template stopped: macros or loops call themselves too deeply") from None
    except MemoryError:
        raise SpecError("template stopped: it ran out of memory") from None
    except jinja2.UndefinedError as exc:
        missing = [name for name, _ in template_variables(template) if name not in variables]
        if missing:
            given = ", ".join(sorted(variables)) or "none"
            raise SpecError(
                f"template variable '{missing[0]}' has no value (variables given: {given})"
            ) from None
        raise SpecError(f"template cannot be rendered: {exc.message}") from None
    except Exception as exc:  # a filter's own failure (even an assert) is the template's
        detail = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"template cannot be rendered: {detail}") from None
    finally:
        sandbox.end_budget(token)
