"""Helpers for the spec tests: YAML files written into the test's temporary folder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

WriteFile = Callable[..., Path]


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteFile:
    """``write_yaml(text, name="agents.yaml")``: the dedented text as a file; its path."""

    def write(text: str, name: str = "agents.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
