"""agents.yaml: both spellings load, and mean the same thing."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from agentos.spec import (
    PRIORITY_ORDER,
    AgentSpec,
    LifeCycle,
    load_agents,
    priority_rank,
)

from .conftest import WriteFile

AGENCYOS_EXAMPLE = """\
- agent:
   name: Google search assistant
   input-sink: google-search-goals-sink
   prompt-based:
    prompt: >
     You are AI, your goal is to generate as many as possible google search keywords in order to get more understanding in the field of original goal:

     Original goal from a team member: {{goal}}?

     First decide in which language to produce keywords in, and stick forever to that decision, this will make your results reliable.

    response-format:
     thoughts: place your thoughts here
     criticism: constructive self-criticism
     language: thoughts on languages to produce keywords in
     keywords:
     - keywords in the language you've chosen
    life-cycle-type: single-shot
    life-cycle-length: 200
"""  # noqa: E501  (the AgencyOS example, byte for byte)

NATIVE_EQUIVALENT = """\
agents:
  - name: Google search assistant
    kind: prompt
    input_sink: google-search-goals-sink
    prompt: "You are AI, your goal is to generate as many as possible google search keywords in order to get more understanding in the field of original goal:\\nOriginal goal from a team member: {{goal}}?\\nFirst decide in which language to produce keywords in, and stick forever to that decision, this will make your results reliable.\\n"
    response_format:
      thoughts: place your thoughts here
      criticism: constructive self-criticism
      language: thoughts on languages to produce keywords in
      keywords:
        - keywords in the language you've chosen
    life_cycle:
      type: single-shot
      length: 200
"""  # noqa: E501


@pytest.fixture
def agencyos_file(tmp_path: Path) -> Path:
    path = tmp_path / "agencyos.yaml"
    path.write_text(AGENCYOS_EXAMPLE, encoding="utf-8")
    return path


def test_agencyos_example_loads_unchanged_with_its_meaning(agencyos_file: Path) -> None:
    loaded = load_agents(agencyos_file)

    assert loaded.path == agencyos_file
    assert loaded.names == ["Google search assistant"]
    agent = loaded["Google search assistant"]
    assert agent.kind == "prompt"
    assert agent.input_sink == "google-search-goals-sink"
    assert agent.life_cycle.type == "single-shot"
    assert agent.life_cycle.length == 200
    assert "Original goal from a team member: {{goal}}?" in agent.prompt
    schema = agent.json_schema()
    assert schema is not None
    assert schema["type"] == "object"
    assert schema["required"] == ["thoughts", "criticism", "language", "keywords"]
    assert schema["properties"]["keywords"]["type"] == "array"
    assert schema["properties"]["keywords"]["items"]["type"] == "string"
    assert schema["properties"]["thoughts"]["description"] == "place your thoughts here"


def test_agencyos_schema_accepts_a_fitting_answer_and_rejects_a_wrong_one(
    agencyos_file: Path,
) -> None:
    schema = load_agents(agencyos_file).agents[0].json_schema()
    assert schema is not None
    answer = {
        "thoughts": "t",
        "criticism": "c",
        "language": "English",
        "keywords": ["a", "b"],
        "extra": "small models add keys; that is allowed",
    }
    jsonschema.validate(answer, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**answer, "keywords": [1, 2]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"thoughts": "only one key"}, schema)


def test_native_spelling_means_the_same_as_agencyos(
    agencyos_file: Path, write_yaml: WriteFile
) -> None:
    native = load_agents(write_yaml(NATIVE_EQUIVALENT))
    agencyos = load_agents(agencyos_file)

    assert native.agents == agencyos.agents


def test_item_forms_and_key_spellings_are_interchangeable(write_yaml: WriteFile) -> None:
    bare_list = write_yaml(
        """
        - name: a
          prompt: hi
          max-tokens: 64
          output-sink: out
          life-cycle:
            max-attempts: 5
        """,
        "bare.yaml",
    )
    wrapped_in_agents = write_yaml(
        """
        agents:
          - agent:
              name: a
              prompt: hi
              max_tokens: 64
              output_sink: out
              life_cycle_max_attempts: 5
        """,
        "wrapped.yaml",
    )
    first, second = load_agents(bare_list).agents[0], load_agents(wrapped_in_agents).agents[0]

    assert first == second
    assert first.max_tokens == 64
    assert first.output_sink == "out"
    assert first.life_cycle.max_attempts == 5


def test_defaults_of_a_minimal_agent(write_yaml: WriteFile) -> None:
    agent = load_agents(write_yaml("- {name: a, prompt: hello}")).agents[0]

    assert agent.kind == "prompt"
    assert agent.temperature == 0.7
    assert agent.max_tokens == 512
    assert agent.priority == "user"
    assert agent.cache is True
    assert agent.retry.max_attempts == 3
    assert agent.life_cycle == LifeCycle()
    assert agent.response_format is None
    assert agent.json_schema() is None


def test_free_form_values_keep_their_keys_as_written(write_yaml: WriteFile) -> None:
    agent = load_agents(
        write_yaml(
            """
            - name: a
              prompt: "{{ topic }}"
              vars:
                topic: cats
                some-name: kept
              response-format:
                first-word: the first word
            """
        )
    ).agents[0]

    assert agent.vars == {"topic": "cats", "some-name": "kept"}
    assert agent.response_format == {"first-word": "the first word"}


def test_spec_snapshot_round_trips(agencyos_file: Path, write_yaml: WriteFile) -> None:
    agents = [
        *load_agents(agencyos_file),
        *load_agents(
            write_yaml(
                """
                - name: full
                  prompt: "{{ x }}"
                  system: "be brief about {{ x }}"
                  vars: {x: 1, nested: {a: [1, 2]}}
                  response_format: {type: object, properties: {a: {type: integer}}}
                  life_cycle: {length: 2, max_attempts: 4, concurrency: 1}
                  engine: local
                  model: smollm2
                  temperature: 0
                  max_tokens: 16
                  priority: background
                  retry: {max_attempts: 1, backoff_initial: 0, backoff_max: 0, jitter: 0}
                  input_sink: in
                  output_sink: out
                  cache: false
                """
            )
        ),
    ]
    for agent in agents:
        snapshot = agent.model_dump(mode="json")
        assert AgentSpec.model_validate(snapshot) == agent


def test_lookup_by_name(write_yaml: WriteFile) -> None:
    loaded = load_agents(write_yaml("- {name: a, prompt: x}\n- {name: b, prompt: y}\n"))

    assert loaded["b"].prompt == "y"
    assert loaded.get("c") is None
    assert len(loaded) == 2
    assert [agent.name for agent in loaded] == ["a", "b"]
    with pytest.raises(KeyError, match="no agent named 'c'"):
        loaded["c"]


@pytest.mark.parametrize(
    ("length", "max_attempts", "cap"),
    [(1, None, 3), (200, None, 600), (2, None, 6), (2, 2, 2), (1, 10, 10)],
)
def test_attempt_cap(length: int, max_attempts: int | None, cap: int) -> None:
    assert LifeCycle(length=length, max_attempts=max_attempts).attempt_cap == cap


def test_priority_order_is_strict() -> None:
    ranks = [priority_rank(p) for p in ("system", "kernel", "user", "background")]
    assert ranks == [0, 1, 2, 3]
    assert PRIORITY_ORDER[0] == "system"
