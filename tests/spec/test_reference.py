"""The generated reference documents every field with its description."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agentos.spec import (
    AgentSpec,
    Config,
    LifeCycle,
    LocalEngineConfig,
    OpenAIEngineConfig,
    RetryPolicy,
    RouterConfig,
    StorageConfig,
    agents_reference_markdown,
    config_reference_markdown,
)
from agentos.spec.agents import Budget, Mention, Resources, Termination
from agentos.spec.config import (
    AlertConfig,
    CacheConfig,
    CalculatorConfig,
    ClusterConfig,
    EmbeddingsConfig,
    EnginePrice,
    HttpToolConfig,
    ModelPrice,
    PricingConfig,
    ServeConfig,
    ServeKeyConfig,
    ToolsConfig,
    VectorStoreConfig,
    WebFetchConfig,
    WebSearchConfig,
)

AGENT_MODELS = [AgentSpec, LifeCycle, RetryPolicy, Termination, Mention, Budget, Resources]
CONFIG_MODELS = [
    Config,
    LocalEngineConfig,
    OpenAIEngineConfig,
    StorageConfig,
    RouterConfig,
    CacheConfig,
    ToolsConfig,
    HttpToolConfig,
    CalculatorConfig,
    WebFetchConfig,
    WebSearchConfig,
    VectorStoreConfig,
    EmbeddingsConfig,
    ServeConfig,
    ServeKeyConfig,
    AlertConfig,
    PricingConfig,
    ModelPrice,
    EnginePrice,
    ClusterConfig,
]


def _rows(markdown: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in markdown.splitlines()
        if line.startswith("| `")
    ]


@pytest.mark.parametrize(
    ("markdown", "models"),
    [
        (agents_reference_markdown(), AGENT_MODELS),
        (config_reference_markdown(), CONFIG_MODELS),
    ],
    ids=["agents", "config"],
)
def test_every_field_has_a_row_with_its_description(
    markdown: str, models: list[type[BaseModel]]
) -> None:
    rows = _rows(markdown)
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no docstring"
            description = " ".join(info.description.split())
            assert [f"`{name}`", description] in [[row[0], row[3]] for row in rows], (
                f"{model.__name__}.{name} is missing from the reference"
            )
    assert len(rows) == sum(len(model.model_fields) for model in models)


def test_types_and_defaults_are_shown() -> None:
    rows = {row[0]: row for row in _rows(agents_reference_markdown())}

    assert rows["`temperature`"][1:3] == ["number, ≥ 0, ≤ 2", "`0.7`"]
    assert rows["`name`"][1:3] == ["string, not empty", "required"]
    assert rows["`priority`"][1] == '"system" or "kernel" or "user" or "background"'
    assert rows["`life_cycle`"][1:3] == ["mapping (`life_cycle`)", "its defaults"]
