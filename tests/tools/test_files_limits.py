"""file_writer: no way out of the workspace through a hard link or a special file, and no
file past ``tools.file_max_bytes`` however many appends it takes."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentos.spec.config import ToolsConfig
from agentos.tools.files import write_file
from agentos.tools.types import ToolError


@pytest.mark.parametrize("append", [False, True])
def test_refuses_a_hard_link_to_a_file_outside(
    tools_config: ToolsConfig, workspace: Path, tmp_path: Path, append: bool
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    os.link(outside, workspace / "linked.txt")

    with pytest.raises(ToolError, match=r"'linked.txt' has 2 hard links"):
        write_file(tools_config, "linked.txt", "overwritten", append=append)

    assert outside.read_text() == "keep me"


def test_appends_stop_at_the_size_limit(tools_config: ToolsConfig, workspace: Path) -> None:
    write_file(tools_config, "log.txt", "x" * 40)
    write_file(tools_config, "log.txt", "y" * 24, append=True)  # 64 bytes: the limit

    with pytest.raises(ToolError, match=r"'log.txt' is 64 bytes; appending 1 would make it 65"):
        write_file(tools_config, "log.txt", "z", append=True)

    assert (workspace / "log.txt").stat().st_size == 64
    write_file(tools_config, "log.txt", "fresh")  # replacing is measured on its own
    assert (workspace / "log.txt").read_text() == "fresh"


def test_concurrent_appends_never_pass_the_limit(
    tools_config: ToolsConfig, workspace: Path
) -> None:
    refused: list[str] = []

    def append() -> None:
        for _ in range(20):
            try:
                write_file(tools_config, "shared.txt", "abc", append=True)
            except ToolError as exc:
                refused.append(exc.message)

    threads = [threading.Thread(target=append) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert (workspace / "shared.txt").stat().st_size == 63  # 21 appends of 3 bytes fit
    assert len(refused) == 80 - 21


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_refuses_a_fifo_instead_of_hanging(tools_config: ToolsConfig, workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")

    with pytest.raises(ToolError, match="'pipe' is not a regular file"):
        write_file(tools_config, "pipe", "hello")


_PARTS = st.sampled_from(
    ["..", ".", "", "a", "b.txt", "~", "/", "\\", "C:", "link", "out", "\x00", "é", " "]
)


@settings(max_examples=200, deadline=2000)
@given(st.lists(_PARTS, min_size=1, max_size=6), st.sampled_from(["/", "\\", ""]))
def test_fuzzed_paths_write_inside_the_workspace_or_are_refused(
    parts: list[str], separator: str
) -> None:
    """Whatever path a model makes up, a write lands inside the workspace or is a
    ToolError; the file outside (reachable through the symlink ``out``) never changes."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        workspace, outside = root / "ws", root / "outside"
        workspace.mkdir()
        outside.mkdir()
        (outside / "b.txt").write_text("keep")
        (workspace / "out").symlink_to(outside)
        config = ToolsConfig(workspace=str(workspace), file_max_bytes=64)
        try:
            write_file(config, separator.join(parts), "x")
        except ToolError as refused:
            assert refused.message
        assert (outside / "b.txt").read_text() == "keep"
        assert [p.name for p in outside.iterdir()] == ["b.txt"]
        written = [p for p in workspace.rglob("*") if p.is_file() and not p.is_symlink()]
        assert all(p.resolve().is_relative_to(workspace.resolve()) for p in written)
