"""Fuzzing the files a user hands agentos: mutated agents and config files.

Every example agents file and config file of the repository is mutated by hypothesis
(spans deleted or repeated, YAML punctuation, anchors and aliases, control characters,
tags, huge scalars and computing templates inserted) and loaded. The file must either load
(and then its templates render, or are refused with a reason) or be refused with one
SpecError whose one-line message starts with the file's path: never another exception,
never a hang. The CLI test runs a few mutations through a real ``agentos validate``:
exit 0 or 2, never a traceback.

The example counts are bounded so that the suite's time stays reasonable, and
``derandomize`` makes CI runs repeatable; ``AGENTOS_FUZZ_EXAMPLES=5000`` explores further,
with fresh random examples on each run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentos.errors import SpecError
from agentos.scheduler.runner import check_renderable
from agentos.spec import load_agents, load_config, render
from agentos.spec.sandbox import MAX_RENDER_SECONDS, MAX_SIZE

ROOT = Path(__file__).resolve().parent.parent
AGENT_FILES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "config" not in p.name)
CONFIG_FILES = [ROOT / "config.example.yaml", ROOT / "examples" / "config.remote.yaml"]

TOKENS = [
    "&a ",
    "*a",
    "<<: *a\n",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "'",
    '"',
    "|\n",
    ">-\n",
    "? ",
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "!!binary ",
    "!!set ",
    "!!python/object/apply:os.system ['true'] ",
    "!custom ",
    "\x00",
    "\x1b[2J",
    "\ufeff",
    "\u2028",
    "~",
    "null",
    "-.inf",
    "0x1F",
    "2001-13-45",
    "9" * 5000,
    "x" * 100_000,
    "{{ 9 ** (9 ** 9) }}",
    "{{ 'a' * 10 ** 12 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ ",
    "{% if %}",
    "${NOT_SET_ANYWHERE}",
    "[" * 500 + "]" * 500,
    "{a: " * 300 + "1" + "}" * 300,
]

Mutation = tuple[str, float, float, str]

mutations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "repeat", "replace"]),
        st.floats(0, 1),
        st.floats(0, 1),
        st.one_of(st.sampled_from(TOKENS), st.text(max_size=20)),
    ),
    min_size=1,
    max_size=6,
)


def mutate(text: str, steps: list[Mutation]) -> str:
    """``text`` with each step applied: at a position, a span of up to 200 characters."""
    for kind, where, length, token in steps:
        start = int(where * len(text))
        end = min(len(text), start + int(length * 200))
        if kind == "insert":
            text = text[:start] + token + text[start:]
        elif kind == "delete":
            text = text[:start] + text[end:]
        elif kind == "repeat":
            text = text[:end] + text[start:end] * 3 + text[end:]
        else:
            text = text[:start] + token + text[end:]
    return text


def assert_one_line_error(error: SpecError, path: Path) -> None:
    message = str(error)
    assert message.startswith(str(path)), message
    assert "\n" not in message, message


EXPLORE = int(os.environ.get("AGENTOS_FUZZ_EXAMPLES", "0"))

FUZZ = settings(
    max_examples=EXPLORE or 120,
    deadline=timedelta(seconds=6),
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(source=st.sampled_from(AGENT_FILES), steps=mutations)
def test_a_mutated_agents_file_loads_or_is_one_spec_error(
    tmp_path_factory: pytest.TempPathFactory, source: Path, steps: list[Mutation]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "agents.yaml"
    path.write_text(mutate(source.read_text(encoding="utf-8"), steps), encoding="utf-8")

    started = time.monotonic()
    try:
        agents = load_agents(path)
    except SpecError as error:
        assert_one_line_error(error, path)
    else:
        try:
            check_renderable(agents.agents, {}, str(path))
        except SpecError as error:
            assert_one_line_error(error, path)
    assert time.monotonic() - started < 5


@FUZZ
@given(source=st.sampled_from(CONFIG_FILES), steps=mutations)
def test_a_mutated_config_file_loads_or_is_one_spec_error(
    tmp_path_factory: pytest.TempPathFactory, source: Path, steps: list[Mutation]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(mutate(source.read_text(encoding="utf-8"), steps), encoding="utf-8")

    started = time.monotonic()
    try:
        load_config(path, environ={"OPENAI_API_KEY": "sk-test"})
    except SpecError as error:
        assert_one_line_error(error, path)
    assert time.monotonic() - started < 3


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(source=st.sampled_from(AGENT_FILES), steps=mutations)
def test_validate_on_a_mutated_file_exits_0_or_2_without_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, source: Path, steps: list[Mutation]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz-cli")
    path = folder / "agents.yaml"
    path.write_text(mutate(source.read_text(encoding="utf-8"), steps), encoding="utf-8")
    (folder / "config.yaml").write_text("", encoding="utf-8")
    env = {**os.environ, "AGENTOS_HOME": str(folder / "home"), "COLUMNS": "300"}
    env.pop("AGENTOS_RAISE_ERRORS", None)

    result = subprocess.run(
        [sys.executable, "-m", "agentos", "validate", str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode in (0, 2), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert str(path) in result.stderr


FILTERS = [
    "center(E)",
    "indent(E)",
    "join(E)",
    "replace(E, E)",
    "wordwrap(E)",
    "batch(E)",
    "slice(E)",
    "truncate(E)",
    "format(E)",
    "list",
    "string",
    "length",
    "sum",
    "first",
    "reverse",
    "sort",
    "unique",
    "tojson",
    "int",
    "round",
    "abs",
    "map('string')",
    "select",
    "dictsort",
    "urlize",
    "pprint",
]
METHODS = ["ljust(E)", "center(E)", "zfill(E)", "replace(E, E)", "format(E)", "join(E)"]


def _fill(template: str, parts: list[str]) -> str:
    for part in parts:
        template = template.replace("E", part, 1)
    return template.replace("E", "1")


atoms = st.one_of(
    st.integers(-3, 10**6).map(str),
    st.sampled_from(["10 ** 9", "2 ** 64", "'ab'", "'x' * 1000", "''", "'%s|%d'", "'{:>9}'"]),
    st.sampled_from(["v", "items", "doc", "range(100000)", "range(5)", "lipsum(2)"]),
)


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        pair.map(lambda p: f"({p[0]} ** {p[1]})"),
        pair.map(lambda p: f"({p[0]} * {p[1]})"),
        pair.map(lambda p: f"({p[0]} + {p[1]})"),
        pair.map(lambda p: f"({p[0]} ~ {p[1]})"),
        pair.map(lambda p: f"({p[0]} % {p[1]})"),
        pair.map(lambda p: f"[{p[0]}, {p[1]}]"),
        st.tuples(inner, st.sampled_from(FILTERS), st.lists(inner, max_size=2)).map(
            lambda p: f"({p[0]} | {_fill(p[1], p[2])})"
        ),
        st.tuples(inner, st.sampled_from(METHODS), st.lists(inner, max_size=2)).map(
            lambda p: f"({p[0]}).{_fill(p[1], p[2])}"
        ),
    )


expressions = st.recursive(atoms, _combine, max_leaves=8)
templates = st.one_of(
    expressions.map(lambda e: f"{{{{ {e} }}}}"),
    st.tuples(expressions, expressions).map(
        lambda p: (
            f"{{% for i in {p[0]} %}}{{% for j in {p[0]} %}}{{{{ {p[1]} }}}}"
            "{% endfor %}{% endfor %}"
        )
    ),
    st.tuples(expressions, expressions).map(
        lambda p: (
            f"{{% set ns = namespace(x={p[0]}) %}}{{% for i in range(64) %}}"
            f"{{% set ns.x = ns.x ~ {p[1]} %}}{{% endfor %}}{{{{ ns.x | length }}}}"
        )
    ),
)


@settings(
    max_examples=EXPLORE or 150,
    deadline=timedelta(seconds=8),
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(template=templates)
def test_a_generated_template_renders_or_is_stopped_with_a_reason(template: str) -> None:
    variables = {"v": "text", "items": ["a", "b", "c"], "doc": "word " * 20_000}

    started = time.monotonic()
    try:
        text = render(template, variables)
    except SpecError as error:
        assert error.reason.startswith(("template", "template line")), error.reason
        assert "\n" not in error.reason
    else:
        assert len(text) <= MAX_SIZE
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 2
