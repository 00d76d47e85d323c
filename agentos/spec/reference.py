"""Reference documentation for agents.yaml and config.yaml, generated from the models.

The tables come from the fields and their docstrings, so the README (which pastes them
between markers, checked by a test) cannot drift from what the loader accepts.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from agentos.spec.agents import (
    AgentSpec,
    Budget,
    LifeCycle,
    Mention,
    Resources,
    RetryPolicy,
    Termination,
)
from agentos.spec.config import (
    AlertConfig,
    CacheConfig,
    CalculatorConfig,
    ClusterConfig,
    Config,
    EmbeddingsConfig,
    EnginePrice,
    HttpToolConfig,
    LocalEngineConfig,
    ModelPrice,
    OpenAIEngineConfig,
    PricingConfig,
    RouterConfig,
    ServeConfig,
    ServeKeyConfig,
    StorageConfig,
    ToolsConfig,
    VectorStoreConfig,
    WebFetchConfig,
    WebSearchConfig,
)

_AGENT_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("agent", AgentSpec),
    ("life_cycle", LifeCycle),
    ("retry", RetryPolicy),
    ("termination", Termination),
    ("termination.mention", Mention),
    ("budget", Budget),
    ("resources", Resources),
]
_CONFIG_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("config", Config),
    ("engines: type local", LocalEngineConfig),
    ("engines: type openai", OpenAIEngineConfig),
    ("storage", StorageConfig),
    ("router", RouterConfig),
    ("cache", CacheConfig),
    ("tools", ToolsConfig),
    ("tools.http", HttpToolConfig),
    ("tools.calculator", CalculatorConfig),
    ("tools.web_fetch", WebFetchConfig),
    ("tools.web_search", WebSearchConfig),
    ("vector_store", VectorStoreConfig),
    ("embeddings", EmbeddingsConfig),
    ("serve", ServeConfig),
    ("serve.keys", ServeKeyConfig),
    ("alerts", AlertConfig),
    ("pricing", PricingConfig),
    ("pricing.models.MODEL", ModelPrice),
    ("pricing.engines.ENGINE", EnginePrice),
    ("cluster", ClusterConfig),
]

_AGENTS_INTRO = """\
An agents file is a list of agents, or a mapping with an `agents:` list; each item is an
agent mapping or `agent: {...}`. Keys may be written in kebab-case or snake_case
(`response-format` is `response_format`). The AgencyOS spelling loads unchanged:
`prompt-based: {...}` holds the prompt keys of a `prompt` agent, and `life-cycle-type`,
`life-cycle-length`, ... set the fields of `life_cycle`.
"""

_CONFIG_INTRO = """\
`${VAR}` and `${VAR:-default}` in string values are read from the environment. Keys may be
written in kebab-case or snake_case. `config.example.yaml` shows every key.
"""


def agents_reference_markdown() -> str:
    """Markdown tables (key, type, default, description) for every agents.yaml key."""
    return _document(_AGENTS_INTRO, _AGENT_SECTIONS)


def config_reference_markdown() -> str:
    """Markdown tables (key, type, default, description) for every config.yaml key."""
    return _document(_CONFIG_INTRO, _CONFIG_SECTIONS)


def _document(intro: str, sections: list[tuple[str, type[BaseModel]]]) -> str:
    names = {model: title for title, model in sections}
    parts = [intro]
    for title, model in sections:
        parts.append(f"#### `{title}`\n\n{_cell(model.__doc__ or '')}\n")
        parts.append(_table(model, names))
    return "\n".join(parts)


def _table(model: type[BaseModel], names: dict[type[BaseModel], str]) -> str:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        kind = _type_text(info.annotation, names)
        limits = _limits(info)
        if limits:
            kind += f", {limits}"
        rows.append(
            f"| `{name}` | {_cell(kind)} | {_cell(_default_text(info))} "
            f"| {_cell(info.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _type_text(annotation: Any, names: dict[type[BaseModel], str]) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"mapping (`{names[annotation]}`)" if annotation in names else "mapping"
    if isinstance(annotation, type):
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "Decimal": "number",
        }.get(annotation.__name__, annotation.__name__)
    if origin is Literal:
        return " or ".join(f'"{arg}"' for arg in args)
    if origin in (Union, types.UnionType):
        members = [_type_text(arg, names) for arg in args]
        if all(arg in names for arg in args):
            return "mapping (" + " or ".join(f"`{names[arg]}`" for arg in args) + ")"
        return " or ".join(members)
    if origin is list:
        return "list" if args[0] is Any else f"list of {_type_text(args[0], names)}"
    if origin is dict:
        if args[1] is Any:
            return "mapping"
        return f"mapping of {_type_text(args[0], names)} to {_type_text(args[1], names)}"
    if args:  # Annotated[...]
        return _type_text(args[0], names)
    return str(annotation)


def _limits(info: FieldInfo) -> str:
    parts: list[str] = []
    for item in info.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        if getattr(item, "min_length", None) == 1:
            parts.append("not empty")
    return ", ".join(parts)


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "its defaults"
    else:
        value = info.default
    return f"`{_yaml_scalar(value)}`"


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return str(value)
