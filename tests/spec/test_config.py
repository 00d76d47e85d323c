"""config.yaml: defaults, the documented example, ${VAR} substitution, secrets, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentos.errors import SpecError
from agentos.spec import (
    Config,
    LocalEngineConfig,
    OpenAIEngineConfig,
    RouterConfig,
    StorageConfig,
    load_config,
)
from agentos.spec.config import (
    CacheConfig,
    CalculatorConfig,
    ClusterConfig,
    EmbeddingsConfig,
    HttpToolConfig,
    ToolsConfig,
    VectorStoreConfig,
)

from .conftest import WriteFile

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
SECRET = "sk-test-0123456789-TOP-SECRET"
CONFIG_MODELS: list[type[BaseModel]] = [
    Config,
    LocalEngineConfig,
    OpenAIEngineConfig,
    StorageConfig,
    RouterConfig,
    CacheConfig,
    ToolsConfig,
    HttpToolConfig,
    CalculatorConfig,
    VectorStoreConfig,
    EmbeddingsConfig,
    ClusterConfig,
]


def test_no_path_means_defaults() -> None:
    config = load_config(None)

    assert config == Config()
    assert config.engines == []
    assert config.router.batch_window_ms == 50
    assert config.router.aging_s == 30
    assert config.storage.db is None
    [engine] = config.resolved_engines()
    assert isinstance(engine, LocalEngineConfig)
    assert (engine.name, engine.model_name, engine.server) == ("local", "smollm2", "auto")


def test_file_without_keys_means_defaults(write_yaml: WriteFile) -> None:
    assert load_config(write_yaml("# all commented out\n", "config.yaml")) == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"

    with pytest.raises(SpecError, match="file does not exist") as caught:
        load_config(path)

    assert caught.value.file == str(path)


def test_example_loads_and_documents_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    config = load_config(EXAMPLE)

    local, remote = config.engines
    assert isinstance(local, LocalEngineConfig)
    assert isinstance(remote, OpenAIEngineConfig)
    assert remote.api_key is not None
    assert remote.api_key.get_secret_value() == SECRET
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = set(re.findall(r"^\s*(?:- )?([a-z_]+):", text, flags=re.MULTILINE))
    for model in CONFIG_MODELS:
        for name in model.model_fields:
            assert name in keys, f"config.example.yaml does not set {model.__name__}.{name}"


def test_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    config = load_config(EXAMPLE)

    assert config.engines[0] == LocalEngineConfig(type="local")
    assert config.storage == StorageConfig()
    assert config.router == RouterConfig()


def test_environment_variables_are_substituted(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base_url: http://${HOST}:${PORT:-8000}/v1/
            api_key: ${KEY}
            max_requests: ${MAX}
            headers: {X-Note: "$${not a variable}", X-Empty: "${BLANK:-fallback}"}
        storage:
          db: ${DB_DIR}/runs.db
        """,
        "config.yaml",
    )
    environ = {"HOST": "10.0.0.2", "KEY": SECRET, "MAX": "9", "BLANK": "", "DB_DIR": "/data"}

    config = load_config(path, environ=environ)

    [engine] = config.engines
    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.base_url == "http://10.0.0.2:8000/v1"
    assert engine.v1_url == "http://10.0.0.2:8000/v1"
    assert engine.max_requests == 9
    assert engine.headers == {"X-Note": "${not a variable}", "X-Empty": "fallback"}
    assert config.storage.db == "/data/runs.db"


def test_missing_environment_variable_names_it(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base_url: http://localhost:8000
            api_key: ${NOT_SET_ANYWHERE}
        """,
        "config.yaml",
    )

    with pytest.raises(SpecError) as caught:
        load_config(path, environ={})

    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), 5, "engines[0].api_key")
    assert "environment variable 'NOT_SET_ANYWHERE' is not set" in str(error)


def test_api_key_never_leaks(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base_url: http://localhost:8000
            api_key: ${KEY}
        """,
        "config.yaml",
    )
    config = load_config(path, environ={"KEY": SECRET})
    [engine] = config.engines
    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.api_key is not None

    assert engine.api_key.get_secret_value() == SECRET
    for text in (
        repr(config),
        str(config),
        repr(engine),
        str(engine.api_key),
        str(config.model_dump(mode="json")),
        config.model_dump_json(),
    ):
        assert SECRET not in text


def test_api_key_never_appears_in_errors(write_yaml: WriteFile) -> None:
    misused = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base_url: http://localhost:8000
            api_key: ${KEY}
            timeout: ${KEY}
        """,
        "config.yaml",
    )
    with pytest.raises(SpecError) as caught:
        load_config(misused, environ={"KEY": SECRET})
    assert caught.value.key == "engines[0].timeout"
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)

    numeric = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base_url: http://localhost:8000
            api_key: 987654321987
        """,
        "numeric.yaml",
    )
    with pytest.raises(SpecError) as caught:
        load_config(numeric)
    assert caught.value.key == "engines[0].api_key"
    assert "987654321987" not in str(caught.value)


def test_empty_api_key_means_none(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        engines:
          - {type: openai, name: a, base_url: "http://h", api_key: "${UNSET:-}"}
        """,
        "config.yaml",
    )

    [engine] = load_config(path, environ={}).engines

    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.api_key is None


def test_kebab_keys_in_config_and_header_names_kept(write_yaml: WriteFile) -> None:
    path = write_yaml(
        """
        engines:
          - type: openai
            name: remote
            base-url: http://localhost:8000/
            max-batch-size: 16
            prompt-batching: true
            headers: {X-Title: agentos}
        router:
          batch-window-ms: 0
          request-timeout: 5
        """,
        "config.yaml",
    )

    config = load_config(path)

    [engine] = config.engines
    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.base_url == "http://localhost:8000"
    assert engine.v1_url == "http://localhost:8000/v1"
    assert (engine.max_batch_size, engine.prompt_batching) == (16, True)
    assert engine.headers == {"X-Title": "agentos"}
    assert config.router == RouterConfig(batch_window_ms=0, request_timeout=5)


CASES = {
    "unknown engine key": (
        """
        engines:
          - type: openai
            name: a
            base_url: http://h
            port: 3
        """,
        5,
        "engines[0].port",
        "unknown key 'port'; allowed keys: type, name, base_url, api_key,",
    ),
    "unknown engine type": (
        """
        engines:
          - type: vllm
            name: a
        """,
        2,
        "engines[0].type",
        "'vllm' is not a known type; expected one of 'local', 'openai'",
    ),
    "engine without type": (
        """
        engines:
          - name: a
        """,
        2,
        "engines[0].type",
        "missing required key 'type' (one of 'local', 'openai')",
    ),
    "engine without base url": (
        """
        engines:
          - type: openai
            name: a
        """,
        2,
        "engines[0].base_url",
        "missing required key 'base_url'",
    ),
    "not an http url": (
        """
        engines:
          - type: openai
            name: a
            base_url: ftp://h
        """,
        4,
        "engines[0].base_url",
        "should be an http:// or https:// address",
    ),
    "wrong type": (
        """
        router:
          aging_s: soon
        """,
        2,
        "router.aging_s",
        "should be a valid number",
    ),
    "out of range": (
        """
        router:
          batch-window-ms: -1
        """,
        2,
        "router.batch-window-ms",
        "should be greater than or equal to 0",
    ),
    "duplicate engine names": (
        """
        engines:
          - type: local
            name: a
          - type: openai
            name: a
            base_url: http://h
        """,
        5,
        "engines[1].name",
        "engine name 'a' is already used by the engine at line 2",
    ),
    "two implicit local engines": (
        """
        engines:
          - type: local
          - type: local
        """,
        3,
        "engines[1]",
        "engine name 'local' is already used",
    ),
    "unknown top-level key": (
        """
        engine: []
        """,
        1,
        "engine",
        "allowed keys: engines, storage, router",
    ),
    "top level is a list": ("- 1\n", 1, None, "should be a mapping"),
    "yaml syntax": ("router: [\n", 2, None, "YAML syntax error"),
}


@pytest.mark.parametrize(("text", "line", "key", "message"), CASES.values(), ids=CASES.keys())
def test_bad_config_file(
    write_yaml: WriteFile, text: str, line: int, key: str | None, message: str
) -> None:
    path = write_yaml(text, "config.yaml")

    with pytest.raises(SpecError) as caught:
        load_config(path, environ={})

    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), line, key)
    assert message in error.reason


def test_engine_names_unique_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="engine names must be unique; repeated: x"):
        Config.model_validate(
            {"engines": [{"type": "local", "name": "x"}, {"type": "local", "name": "x"}]}
        )
