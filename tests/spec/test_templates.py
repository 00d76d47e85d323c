"""Prompt templates: the variables they need, and strict rendering."""

from __future__ import annotations

import pytest

from agentos.errors import SpecError
from agentos.spec import render, template_variables


def test_render_fills_variables() -> None:
    text = render(
        "Goal: {{ goal }}{% for k in keywords %} #{{ k }}{% endfor %}",
        {
            "goal": "learn",
            "keywords": ["a", "b"],
        },
    )

    assert text == "Goal: learn #a #b"


def test_render_keeps_a_trailing_newline() -> None:
    assert render("{{ x }}\n", {"x": 1}) == "1\n"


def test_missing_variable_is_named() -> None:
    with pytest.raises(SpecError, match="template variable 'goal' has no value") as caught:
        render("{{ topic }} then {{ goal }}", {"topic": "t"})

    assert "variables given: topic" in caught.value.reason


def test_missing_attribute_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(SpecError, match="cannot be rendered"):
        render("{{ item.missing }}", {"item": {"present": 1}})


def test_syntax_error_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="template line 2"):
        render("fine\n{{ broken", {})


def test_templates_cannot_reach_python_internals() -> None:
    with pytest.raises(SpecError, match="cannot be rendered"):
        render("{{ x.__class__.__mro__[1].__subclasses__() }}", {"x": "text"})


def test_template_variables_in_order_of_use_with_lines() -> None:
    template = "{{ b }}\n{% for i in range(3) %}{{ a }}{{ i }}{% endfor %}\n{% set c = 1 %}{{ c }}"

    assert template_variables(template) == [("b", 1), ("a", 2)]
