"""simonw's ``llm`` CLI (a subprocess) with an OpenAI-compatible model entry pointed at a
real ``agentos serve``: its answers are the engine's, with and without a client key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from openai import OpenAI

from agentos.testing.engine import LoopbackEngine
from tests.serve.conftest import Served, engine_config
from tests.serve.records import client_processes, llm_calls

KEY = "llm-client-key-0123456789"


def llm_home(tmp_path: Path, served: Served, **entry: Any) -> Path:
    """An ``LLM_USER_PATH`` whose extra-openai-models.yaml names the server as ``agentos``."""
    home = tmp_path / "llm-home"
    home.mkdir(exist_ok=True)
    model = {"model_id": "agentos", "model_name": "test-model", "api_base": served.v1, **entry}
    (home / "extra-openai-models.yaml").write_text(yaml.safe_dump([model]))
    return home


def run_llm(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LLM_USER_PATH": str(home)}
    full_env.pop("OPENAI_API_KEY", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def engine_chat(engine: LoopbackEngine, text: str) -> str:
    direct = OpenAI(base_url=engine.url + "/v1", api_key="none", max_retries=0)
    answer = direct.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": text}],
        temperature=0.0,  # as llm sends it: the engine's answer depends on 0.0 against 0
    )
    return answer.choices[0].message.content or ""


def test_llm_without_a_key_gets_the_engines_answers(
    tmp_path: Path, serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve({"engines": [engine_config(engine)], "embeddings": {"enabled": False}})
    home = llm_home(tmp_path, served, headers={"X-Agentos-Client": "my-llm"}, supports_schema=True)

    marked = run_llm(home, "-m", "agentos", "ANSWER: hello from llm")
    assert marked.returncode == 0, marked.stderr
    assert marked.stdout == "hello from llm\n"

    # llm streams by default; --no-stream asks for one answer: both are the engine's
    streamed = run_llm(home, "-m", "agentos", "-o", "temperature", "0", "Describe the sea")
    whole = run_llm(
        home, "-m", "agentos", "--no-stream", "-o", "temperature", "0", "Describe the sea"
    )
    assert streamed.returncode == 0 and whole.returncode == 0, streamed.stderr + whole.stderr
    want = engine_chat(engine, "Describe the sea")
    assert want and streamed.stdout == whole.stdout == want + "\n"

    # --schema goes through as response_format: the engine answers with a valid document
    dog = run_llm(home, "-m", "agentos", "--schema", "name, age int", "Invent a dog")
    assert dog.returncode == 0, dog.stderr
    document = json.loads(dog.stdout)
    assert set(document) == {"name", "age"}
    assert isinstance(document["name"], str) and isinstance(document["age"], int)

    rows = llm_calls(served.db, 4)
    assert [(r["kind"], r["status"], r["cache_hit"]) for r in rows] == [
        ("chat", "ok", 0),
        ("chat", "ok", 0),
        ("chat", "ok", 1),  # temperature 0: the second time from the cache
        ("chat", "ok", 0),
    ]
    assert "json_schema" in rows[-1]["request"]
    # the entry's header names the client in agentos top
    processes = client_processes(served.db, lambda p: p.get("client[my-llm]", {}).get("jobs") == 4)
    assert set(processes) == {"client[my-llm]"}


def test_llm_with_a_key_from_llm_keys_or_the_environment(
    tmp_path: Path, serve: Callable[..., Served], engine: LoopbackEngine
) -> None:
    served = serve(
        {
            "engines": [engine_config(engine)],
            "embeddings": {"enabled": False},
            "serve": {"keys": [{"name": "notebook", "key": "${LLM_CLIENT_KEY}"}]},
        },
        env={"LLM_CLIENT_KEY": KEY},
    )
    home = llm_home(tmp_path, served, api_key_name="agentos")

    no_key = run_llm(home, "-m", "agentos", "ANSWER: nope")
    assert no_key.returncode != 0
    assert "No key found - add one using 'llm keys set agentos'" in no_key.stderr

    wrong = run_llm(home, "-m", "agentos", "--key", "not-the-key-0123456789", "ANSWER: nope")
    assert wrong.returncode != 0
    assert "401" in wrong.stderr
    assert "the client key is not one of serve.keys in config.yaml" in wrong.stderr

    stored = run_llm(home, "keys", "set", "agentos", "--value", KEY)
    assert stored.returncode == 0, stored.stderr
    with_keys = run_llm(home, "-m", "agentos", "ANSWER: keyed")
    assert with_keys.returncode == 0, with_keys.stderr
    assert with_keys.stdout == "keyed\n"

    (home / "keys.json").unlink()
    from_env = run_llm(home, "-m", "agentos", "ANSWER: from env", env={"OPENAI_API_KEY": KEY})
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout == "from env\n"

    assert len(llm_calls(served.db, 2)) == 2
    processes = client_processes(
        served.db, lambda p: p.get("client[notebook]", {}).get("jobs") == 2
    )
    assert set(processes) == {"client[notebook]"}
