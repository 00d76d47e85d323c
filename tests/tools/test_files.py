"""file_writer: writes inside the workspace, refuses every way out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentos.spec.config import ToolsConfig
from agentos.tools.files import workspace_path, write_file
from agentos.tools.registry import ToolContext, ToolError, ToolRegistry


def test_writes_and_creates_folders_inside_the_workspace(
    tools_config: ToolsConfig, workspace: Path
) -> None:
    assert write_file(tools_config, "notes/today.txt", "buy milk") == 8
    assert (workspace / "notes" / "today.txt").read_text() == "buy milk"
    write_file(tools_config, "notes/today.txt", "\nand bread", append=True)
    assert (workspace / "notes" / "today.txt").read_text() == "buy milk\nand bread"
    write_file(tools_config, "./notes/./today.txt", "again")
    assert (workspace / "notes" / "today.txt").read_text() == "again"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../../etc/passwd", "goes up with '..'"),
        ("notes/../../outside.txt", "goes up with '..'"),
        ("notes/..", "goes up with '..'"),
        ("..\\secret.txt", "goes up with '..'"),
        ("/etc/passwd", "absolute path"),
        ("~/.bashrc", "absolute path"),
        ("C:\\Windows\\win.ini", "absolute path"),
        ("", "empty"),
        (".", "names the workspace itself"),
    ],
)
def test_refuses_paths_out_of_the_workspace(
    tools_config: ToolsConfig, tmp_path: Path, path: str, reason: str
) -> None:
    with pytest.raises(ToolError) as caught:
        write_file(tools_config, path, "x")
    assert reason in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace"]


def test_refuses_a_symlinked_folder_that_leads_out(
    tools_config: ToolsConfig, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "escape").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ToolError, match="symlink"):
        write_file(tools_config, "escape/stolen.txt", "x")
    assert list(outside.iterdir()) == []


def test_refuses_a_symlinked_file_that_leads_out(
    tools_config: ToolsConfig, workspace: Path, tmp_path: Path
) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    (workspace / "passwd").symlink_to(target)
    (workspace / "dangling").symlink_to(tmp_path / "not-yet")

    with pytest.raises(ToolError, match="symlink"):
        write_file(tools_config, "passwd", "owned")
    with pytest.raises(ToolError, match="symlink"):
        write_file(tools_config, "dangling", "owned")
    assert target.read_text() == "root:x:0:0\n"
    assert not (tmp_path / "not-yet").exists()


def test_a_symlink_that_stays_inside_is_fine(tools_config: ToolsConfig, workspace: Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to(workspace / "real", target_is_directory=True)

    write_file(tools_config, "alias/a.txt", "inside")

    assert (workspace / "real" / "a.txt").read_text() == "inside"


def test_refuses_oversized_content(tools_config: ToolsConfig, workspace: Path) -> None:
    with pytest.raises(ToolError, match="at most 64"):
        write_file(tools_config, "big.txt", "é" * 33)  # 66 bytes in UTF-8
    assert not (workspace / "big.txt").exists()


def test_default_workspace_is_in_agentos_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTOS_HOME", str(tmp_path / "home"))
    assert workspace_path(ToolsConfig()) == tmp_path / "home" / "workspace"
    monkeypatch.chdir(tmp_path)
    assert workspace_path(ToolsConfig(workspace="ws")) == tmp_path / "ws"


async def test_through_the_registry(
    registry: ToolRegistry, context: ToolContext, workspace: Path
) -> None:
    tool = registry.tools["file_writer"]

    good = await registry.call(tool, {"path": "a.txt", "content": "hi"}, context=context, step=1)
    bad = await registry.call(
        tool, {"path": "../../etc/passwd", "content": "x"}, context=context, step=2
    )

    assert good.output == {"path": "a.txt", "bytes": 2}
    assert (workspace / "a.txt").read_text() == "hi"
    assert bad.error_class == "ToolError" and "'..'" in (bad.error or "")
    assert not bad.transient
    assert os.listdir(workspace) == ["a.txt"]
