"""Hostile agents and config files: each ends in one SpecError naming the file, fast.

Alias bombs, deep nesting, control characters, binary content, oversized files and
scalars that cannot be converted. Each must be refused by the YAML source itself (so
agents.yaml and config.yaml alike), with a line where there is one, in well under a
second; the CLI tests check the same through a real ``agentos validate``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec import load_agents, load_config
from agentos.spec.yamlsrc import MAX_DEPTH, MAX_FILE_BYTES

AGENT = "agents:\n  - name: a\n    prompt: hi\n    vars:\n      v: {value}\n"


def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n" + AGENT.format(value="*l9")


def long_text_bomb() -> str:
    """Few values, but each alias repeats half a megabyte of text."""
    text = "x" * 500_000
    return f"t: &t '{text}'\n" + AGENT.format(value="[" + ", ".join(["*t"] * 20) + "]")


def nested_through_aliases() -> str:
    """Each anchor holds the one before one level down: deep only once expanded."""
    lines = ["n0: &n0 [1]"] + [f"n{i}: &n{i} [*n{i - 1}]" for i in range(1, MAX_DEPTH + 10)]
    return "\n".join(lines) + "\n" + AGENT.format(value=f"*n{MAX_DEPTH + 9}")


HOSTILE: dict[str, tuple[bytes, str, int | None]] = {
    # name: (file content, expected words in the error, expected line or None)
    "billion laughs": (billion_laughs().encode(), "expands to more than", None),
    "text bomb": (long_text_bomb().encode(), "4 MiB of text", None),
    "deep flow list": (
        b"agents: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "nest",  # libyaml's own bound (1000 levels of flow) may answer first
        1,
    ),
    "deep flow mapping": (
        b"agents: " + b"{a: " * 50_000 + b"1" + b"}" * 50_000 + b"\n",
        f"nested more than {MAX_DEPTH} levels",
        1,
    ),
    "deep block mapping": (
        b"agents:\n"
        + b"".join(b"  " * (i + 1) + b"k%d:\n" % i for i in range(200))
        + b"  " * 201
        + b"x\n",
        f"nested more than {MAX_DEPTH} levels",
        None,
    ),
    "deep through aliases": (nested_through_aliases().encode(), "through aliases", None),
    "NUL byte": (b"agents:\n  - name: a\x00b\n    prompt: hi\n", "U+0000 (NUL)", 2),
    "escape character": (b"agents:\n  - name: a\n    prompt: \x1b[2J\n", "U+001B", 3),
    "binary": (bytes(range(256)) * 8, "not UTF-8 text", None),
    "too large": (
        AGENT.format(value="'" + "a" * MAX_FILE_BYTES + "'").encode(),
        "larger than 1 MiB",
        None,
    ),
    "huge integer": (AGENT.format(value="1" * 5000).encode(), "cannot be read as int", 5),
    "number beyond 64 bits": (AGENT.format(value="9" * 30).encode(), "is too large", 5),
    "huge name": (
        b"agents:\n  - name: " + b"n" * 300_000 + b"\n    prompt: hi\n",
        "at most 200 characters",
        2,
    ),
    "huge sink name": (
        b"agents:\n  - name: a\n    prompt: hi\n    output_sink: " + b"s" * 1000 + b"\n",
        "at most 200 characters",
        4,
    ),
    "impossible date": (AGENT.format(value="2001-13-45").encode(), "timestamp", 5),
    "many values": (
        AGENT.format(value="[" + ",".join(["1"] * 200_000) + "]").encode(),
        "more than",
        None,
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_agents_file_is_one_spec_error(tmp_path: Path, name: str) -> None:
    content, words, line = HOSTILE[name]
    path = tmp_path / "agents.yaml"
    path.write_bytes(content)

    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_agents(path)
    elapsed = time.monotonic() - started

    assert words in caught.value.reason
    assert caught.value.file == str(path)
    if line is not None:
        assert caught.value.line == line
    assert "\n" not in str(caught.value)
    assert elapsed < 2.0


@pytest.mark.parametrize("name", ["billion laughs", "deep flow mapping", "NUL byte"])
def test_hostile_config_file_is_one_spec_error(tmp_path: Path, name: str) -> None:
    content, words, _ = HOSTILE[name]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)

    with pytest.raises(SpecError) as caught:
        load_config(path)

    assert words in caught.value.reason
    assert caught.value.file == str(path)


def test_files_within_the_bounds_still_load(tmp_path: Path) -> None:
    first = "  - name: a0\n    prompt: '{{ v }}'\n    vars: {v: &s {mode: calm, words: [a, b]}}\n"
    others = "".join(
        f"  - name: a{i}\n    prompt: '{{{{ v }}}}'\n    vars: {{v: *s}}\n" for i in range(1, 20)
    )
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n" + first + others, encoding="utf-8")

    loaded = load_agents(path)

    assert len(loaded.agents) == 20
    assert loaded.agents[19].vars["v"] == {"mode": "calm", "words": ["a", "b"]}


def _validate(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("AGENTOS_RAISE_ERRORS", None)
    return subprocess.run(
        [sys.executable, "-m", "agentos", "validate", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=path.parent,
    )


@pytest.mark.parametrize("name", ["billion laughs", "deep flow list", "NUL byte", "binary"])
def test_validate_refuses_a_hostile_file_with_exit_2(tmp_path: Path, name: str) -> None:
    content, words, _ = HOSTILE[name]
    path = tmp_path / "agents.yaml"
    path.write_bytes(content)

    started = time.monotonic()
    result = _validate(path)
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert words in result.stderr
    assert elapsed < 10  # the interpreter's start included; the file itself takes < 2 s


def test_validate_refuses_a_hostile_config_with_exit_2(tmp_path: Path) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text("agents:\n  - name: a\n    prompt: hi\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_bytes(HOSTILE["billion laughs"][0])

    result = _validate(agents, "--config", str(config))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr
    assert "expands to more than" in result.stderr


def test_an_engine_name_over_200_characters_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "engines:\n  - name: " + "e" * 201 + "\n    type: openai\n    base_url: http://x/v1\n",
        encoding="utf-8",
    )

    with pytest.raises(SpecError, match="at most 200 characters") as caught:
        load_config(path)

    assert caught.value.line == 2
