"""Prompt templates that compute are stopped with a reason, fast, and ordinary ones still
render as before.

Each hostile template below either holds the GIL in one C-level operation (a huge power,
repetition, padding or join) or loops/recurses without end in Python; the sandbox must
refuse the first kind before computing and stop the second on its clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec import render
from agentos.spec.sandbox import MAX_RENDER_SECONDS, MAX_SIZE, size

HOSTILE: dict[str, tuple[str, str]] = {
    # name: (template, words of the reason)
    "power": ("{{ 9 ** (9 ** 9) }}", "digits"),
    "power of a big base": ("{{ (2 ** 64) ** (2 ** 20) }}", "digits"),
    "squaring in a loop": (
        "{% set ns = namespace(x=3) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
        "digits",
    ),
    "string times a huge number": ("{{ 'a' * 10 ** 12 }}", "repeating a value"),
    "huge number times a list": ("{{ 10 ** 9 * [1] }}", "repeating a value"),
    "doubling with +": (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "'+' would make",
    ),
    "doubling with ~": (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "'~' would make",
    ),
    "doubling nested lists": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}"
        "{% set ns.s = [ns.s, ns.s] %}{% endfor %}{{ ns.s }}",
        "a list or dict is larger",
    ),
    "center filter": ("{{ 'a' | center(10 ** 10) }}", "'center' would make"),
    "ljust method": ("{{ 'a'.ljust(10 ** 10) }}", "'ljust' would make"),
    "percent width": ("{{ '%2000000000s' % 'a' }}", "field width"),
    "percent star width": ("{{ '%*s' % (10 ** 9, 'a') }}", "'*' field widths"),
    "format width": ("{{ '{:>2000000000}'.format('a') }}", "field width"),
    "join with a huge separator": ("{{ range(100000) | join('x' * 100000) }}", "'join'"),
    "replace the empty string": ("{{ ('x' * 1000000) | replace('', 'yyyyyyyy') }}", "'replace'"),
    "indent by a long prefix": (
        "{{ ('a\\n' * 100000) | indent('x' * 1000) }}",
        "'indent' would make",
    ),
    "batch": ("{{ [1, 2] | batch(10 ** 9) | list }}", "'batch'"),
    "slice": ("{{ range(10) | slice(10 ** 9) | list | length }}", "'slice'"),
    "lipsum": ("{{ lipsum(10 ** 6) }}", "lipsum"),
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "ran longer than",
    ),
    "nested loops that output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "",  # the clock or the output bound, whichever comes first
    ),
    "macro fan-out": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}",
        "ran longer than",
    ),
    "endless recursion": (
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "call themselves too deeply",
    ),
    "deeply nested expression": ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "too deeply"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_template_that_computes_is_stopped_with_a_reason(name: str) -> None:
    template, words = HOSTILE[name]

    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        render(template, {})
    elapsed = time.monotonic() - started

    assert words in caught.value.reason
    assert caught.value.reason.startswith(("template stopped", "template line"))
    assert elapsed < MAX_RENDER_SECONDS + 1.5


def test_a_filter_that_fails_inside_jinja_is_a_reason_not_a_traceback() -> None:
    # found by tests/test_fuzz_input.py: Jinja's truncate asserts on its length argument
    with pytest.raises(SpecError, match="template cannot be rendered: expected length >= 3"):
        render("{{ 0 | truncate(1) }}", {})


def test_variables_larger_than_the_bound_are_refused() -> None:
    shared = ["x" * 1000] * 1000
    with pytest.raises(SpecError, match="the set of variables is larger"):
        render("{{ a }}", {"a": [shared] * 10})


def test_size_counts_shared_parts_each_time_without_walking_them_again() -> None:
    part = ["ab", 1]
    assert size(part) == 2 + 2 + 1
    assert size({"k": [part, part]}) == 1 + 1 + 2 + 2 * 5
    deep: list[object] = [1]
    for _ in range(200):
        deep = [deep, deep]
    started = time.monotonic()
    assert size(deep) == MAX_SIZE + 1
    assert time.monotonic() - started < 0.5


ORDINARY = [
    ("{% for i in range(3) %}{{ i }},{% endfor %}", {}, "0,1,2,"),
    (
        "{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 3 * 4 }} {{ 1 + 2 }} {{ 'a' + 'b' }}",
        {},
        "ababab 1024 12 3 ab",
    ),
    ("{{ 'x' | center(5) }}|{{ 'x'.rjust(3) }}", {}, "  x  |  x"),
    ("{{ items | join(', ') }}", {"items": ["a", "b"]}, "a, b"),
    ("{{ '%05d|%-4s|' % (3, 'a') }}{{ '{:>4}'.format(1) }}", {}, "00003|a   |   1"),
    ("{{ (1, 2) }} {{ {'a': [1]} }} {{ 'a' ~ 1 }}", {}, "(1, 2) {'a': [1]} a1"),
    ("{{ text | replace('a', 'bb') | indent(2, first=True) }}", {"text": "a\na"}, "  bb\n  bb"),
    ("{{ xs | batch(2) | list }} {{ xs | slice(2) | list }}", {"xs": [1, 2, 3]}, ""),
    (
        "{% macro f(n) %}{% if n %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}",
        {},
        "54321",
    ),
    ("{{ doc }}", {"doc": "x" * 1_000_000}, "x" * 1_000_000),
]


@pytest.mark.parametrize(("template", "variables", "expected"), ORDINARY)
def test_ordinary_templates_render_as_before(
    template: str, variables: dict[str, object], expected: str
) -> None:
    text = render(template, variables)

    if expected:
        assert text == expected
    else:
        assert text == "[[1, 2], [3]] [[1, 2], [3]]"


def test_run_refuses_a_computing_prompt_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: x\n    prompt: \"{{ 'a' * 10 ** 12 }}\"\n", encoding="utf-8"
    )
    db = tmp_path / "runs.db"
    env = {**os.environ, "AGENTOS_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("AGENTOS_RAISE_ERRORS", None)
    for command in (["validate"], ["run", "--db", str(db)]):
        result = subprocess.run(
            [sys.executable, "-m", "agentos", *command, "agents.yaml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "agents.yaml" in result.stderr
        assert "template stopped: repeating a value" in result.stderr
    assert not db.exists()
