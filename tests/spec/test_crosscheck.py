"""Agents against config: engines and models that agents name must be configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec import (
    AgentsFile,
    AgentSpec,
    Config,
    check_agent_kinds,
    check_agents_against_config,
    load_agents,
)

from .conftest import WriteFile

TWO_ENGINES = Config.model_validate(
    {
        "engines": [
            {"type": "local", "name": "laptop"},
            {"type": "openai", "name": "gpu", "base_url": "http://gpu:8000", "models": ["qwen"]},
            {"type": "openai", "name": "ollama", "base_url": "http://localhost:11434"},
        ]
    }
)


def test_known_engines_and_models_pass(write_yaml: WriteFile) -> None:
    agents = load_agents(
        write_yaml(
            """
            - {name: a, prompt: hi}
            - {name: b, prompt: hi, engine: gpu, model: qwen}
            - {name: c, prompt: hi, engine: laptop, model: smollm2}
            - {name: d, prompt: hi, engine: ollama, model: anything-detected-later}
            - {name: e, prompt: hi, model: qwen}
            """
        )
    )

    check_agents_against_config(agents, TWO_ENGINES)
    check_agents_against_config(load_agents(write_yaml("- {name: a, prompt: x}")), Config())


def test_unknown_engine_is_reported_at_its_line(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        - agent:
           name: ok
           prompt-based: {prompt: hi}
        - agent:
           name: typo
           prompt-based:
            prompt: hi
            engine: gpu2
        """
    )

    with pytest.raises(SpecError) as caught:
        check_agents_against_config(load_agents(path), TWO_ENGINES)

    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), 8, "agent[1].prompt-based.engine")
    assert "unknown engine 'gpu2'; known engines: laptop, gpu, ollama" in error.reason


def test_default_config_has_only_the_local_engine(write_yaml: WriteFile) -> None:
    path = write_yaml("- {name: a, prompt: hi, engine: gpu}\n")

    with pytest.raises(SpecError, match="known engines: local") as caught:
        check_agents_against_config(load_agents(path), Config())

    assert (caught.value.line, caught.value.key) == (1, "[0].engine")


def test_model_no_engine_serves(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        agents:
          - name: a
            prompt: hi
            engine: gpu
            model: llama
        """
    )

    with pytest.raises(SpecError, match="no engine serves model 'llama' \\(gpu: qwen\\)") as caught:
        check_agents_against_config(load_agents(path), TWO_ENGINES)

    assert (caught.value.line, caught.value.key) == (5, "agents[0].model")


def test_agents_built_in_code_still_get_an_error() -> None:
    agents = AgentsFile(
        path=Path("agents.yaml"),
        agents=[AgentSpec(name="a", prompt="hi", engine="nowhere")],
    )

    with pytest.raises(SpecError, match="unknown engine 'nowhere'") as caught:
        check_agents_against_config(agents, Config())

    assert (caught.value.file, caught.value.line, caught.value.key) == (
        "agents.yaml",
        None,
        "engine",
    )


def test_agent_kinds_pass_when_callables_import_members_exist_and_tools_are_known(
    write_yaml: WriteFile, tmp_path: Path
) -> None:
    (tmp_path / "chores.py").write_text("def sweep(context):\n    return 'swept'\n")
    path = write_yaml(
        """
        agents:
          - {name: sweeper, kind: task, run: "chores:sweep"}
          - {name: talk, kind: team, prompt: hi, members: [a, b], termination: {max_turns: 2}}
          - {name: a, prompt: hi, tools: [calculator]}
          - {name: b, prompt: hi}
        """
    )

    check_agent_kinds(load_agents(path), path, Config())


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ('- {name: t, kind: task, run: "no_such_module:fn"}', "cannot import module"),
        ("- {name: u, prompt: hi, tools: [no_such_tool]}", "unknown tool 'no_such_tool'"),
        (
            "- {name: talk, kind: team, prompt: hi, members: [ghost], termination: {max_turns: 2}}",
            "ghost",
        ),
    ],
)
def test_agent_kinds_report_what_cannot_run(
    write_yaml: WriteFile, agents: str, message: str
) -> None:
    path = write_yaml(agents)

    with pytest.raises(SpecError, match=message) as caught:
        check_agent_kinds(load_agents(path), path, Config())
    assert caught.value.file == str(path)
