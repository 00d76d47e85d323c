"""Every bad agents file is one SpecError naming the file, the line and the key as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec import load_agents

from .conftest import WriteFile

CASES = {
    "yaml syntax": (
        """
        - name: a
          prompt: hi
         bad-indent: 1
        """,
        3,
        None,
        "YAML syntax error",
    ),
    "unknown key native": (
        """
        agents:
          - name: a
            prompt: hi
            temprature: 0.1
        """,
        4,
        "agents[0].temprature",
        "unknown key 'temprature'; allowed keys: name, kind, prompt,",
    ),
    "unknown key in prompt-based": (
        """
        - agent:
           name: a
           prompt-based:
            prompt: hi
            respons-format: {a: b}
        """,
        5,
        "agent[0].prompt-based.respons-format",
        "allowed keys: name, kind, prompt, system, vars, response-format,",
    ),
    "unknown flat life-cycle key": (
        """
        - agent:
           name: a
           prompt-based:
            prompt: hi
            life-cycle-lenght: 3
        """,
        5,
        "agent[0].prompt-based.life-cycle-lenght",
        "allowed keys: life-cycle-type, life-cycle-length, life-cycle-max-attempts,",
    ),
    "unknown nested key": (
        """
        - name: a
          prompt: hi
          retry:
            max_attempts: 2
            backof: 1
        """,
        5,
        "[0].retry.backof",
        "allowed keys: max_attempts, backoff_initial, backoff_max, jitter",
    ),
    "wrong type": (
        """
        agents:
          - {name: a, prompt: hi}
          - {name: b, prompt: hi}
          - name: c
            prompt: hi
            temperature: hot
        """,
        6,
        "agents[2].temperature",
        "should be a valid number, unable to parse string as a number (got 'hot')",
    ),
    "several errors": (
        """
        agents:
          - name: a
            prompt: hi
            temperature: 3
            max_tokens: 0
        """,
        4,
        "agents[0].temperature",
        "should be less than or equal to 2 (got 3) (and 1 more)",
    ),
    "literal not allowed": (
        """
        - name: a
          prompt: hi
          priority: urgent
        """,
        3,
        "[0].priority",
        "should be 'system', 'kernel', 'user' or 'background' (got 'urgent')",
    ),
    "life-cycle is not a mapping": (
        """
        - name: a
          prompt: hi
          life-cycle: 5
        """,
        3,
        "[0].life-cycle",
        "should be a mapping",
    ),
    "missing prompt": (
        """
        - agent:
           name: a
           prompt-based:
            response-format: {a: b}
        """,
        1,
        "agent[0].prompt",
        "missing required key 'prompt'",
    ),
    "attempt cap below length": (
        """
        - agent:
           name: a
           prompt-based:
            prompt: hi
            life-cycle-length: 5
            life-cycle-max-attempts: 2
        """,
        5,
        "agent[0].prompt-based.life-cycle-length",
        "max_attempts (2) is below length (5)",
    ),
    "bad json schema": (
        """
        - name: a
          prompt: hi
          response-format:
            type: object
            properties: {a: {type: strin}}
        """,
        3,
        "[0].response-format",
        "invalid JSON Schema at properties/a/type",
    ),
    "response format is text": (
        """
        - name: a
          prompt: hi
          response_format: just text
        """,
        3,
        "[0].response_format",
        "should be a shape",
    ),
    "template syntax in a literal block": (
        """
        - name: a
          prompt: |
            line one
            line two {% if %}
            line three
        """,
        4,
        "[0].prompt",
        "template does not parse",
    ),
    "template syntax in a folded block": (
        """
        - agent:
           name: a
           input-sink: s
           prompt-based:
            prompt: >
             folded one
             folded two

             folded three {% for %}
             four
        """,
        9,
        "agent[0].prompt-based.prompt",
        "template does not parse",
    ),
    "template variable without a value": (
        """
        - name: a
          vars: {known: 1}
          prompt: |
            {{ known }}
            and {{ unknown }} here
        """,
        5,
        "[0].prompt",
        "template variable 'unknown' has no value",
    ),
    "system template variable without a value": (
        """
        - name: a
          prompt: hi
          system: "you are {{ role }}"
        """,
        3,
        "[0].system",
        "template variable 'role' has no value",
    ),
    "unquoted template": (
        """
        - name: a
          prompt: {{ a }}
        """,
        2,
        "[0].prompt",
        "must be quoted",
    ),
    "duplicate agent names": (
        """
        - {name: x, prompt: hi}
        - {name: y, prompt: hi}
        - name: x
          prompt: hi
        """,
        3,
        "[2].name",
        "agent name 'x' is already used at line 1",
    ),
    "two spellings of one key": (
        """
        - name: a
          input-sink: one
          prompt: hi
          input_sink: two
        """,
        4,
        "[0].input_sink",
        "repeats 'input-sink' (line 2)",
    ),
    "one key twice": (
        """
        - name: a
          prompt: hi
          name: b
        """,
        3,
        "[0].name",
        "key 'name' is given twice (first at line 1)",
    ),
    "life-cycle length given twice": (
        """
        - agent:
           name: a
           life-cycle: {length: 2}
           prompt-based:
            prompt: hi
            life-cycle-length: 3
        """,
        6,
        "agent[0].prompt-based.life-cycle-length",
        "repeats 'length' (line 3)",
    ),
    "agent wrapper with company": (
        """
        - agent: {name: a, prompt: hi}
          extra: 1
        """,
        1,
        "[0]",
        "'agent:' should be the only key of its item",
    ),
    "item is not a mapping": (
        """
        - {name: a, prompt: hi}
        - just a string
        """,
        2,
        "[1]",
        "each item should be an agent mapping",
    ),
    "unknown top-level key": (
        """
        agents: []
        version: 2
        """,
        2,
        "version",
        "unknown key 'version'; allowed keys: agents",
    ),
    "no agents": ("agents: []\n", 1, "agents", "no agents are defined"),
    "top level is a scalar": ("42\n", 1, None, "should be a list of agents"),
    "empty file": ("", None, None, "file is empty"),
    "only comments": ("# nothing yet\n", None, None, "file is empty"),
}


@pytest.mark.parametrize(("text", "line", "key", "message"), CASES.values(), ids=CASES.keys())
def test_bad_agents_file(
    write_yaml: WriteFile, text: str, line: int | None, key: str | None, message: str
) -> None:
    path = write_yaml(text)

    with pytest.raises(SpecError) as caught:
        load_agents(path)

    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), line, key)
    assert message in error.reason
    where = str(path) if line is None else f"{path}:{line}"
    assert str(error).startswith(where)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(SpecError, match="file does not exist") as caught:
        load_agents(path)

    assert caught.value.file == str(path)


def test_template_variables_may_come_from_an_input_sink(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        - name: a
          input-sink: goals
          prompt: "{{ goal }} and {{ more }}"
        """
    )

    assert load_agents(path).agents[0].input_sink == "goals"


def test_template_variables_may_come_from_vars(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        - name: a
          vars: {goal: win}
          prompt: "{% for i in range(2) %}{{ goal }}{{ i }}{% endfor %}"
        """
    )

    assert load_agents(path).agents[0].vars == {"goal": "win"}
