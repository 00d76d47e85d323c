"""The ``file_writer`` tool: writes text files inside one workspace folder, nowhere else.

The workspace is ``tools.workspace`` (default: ``workspace`` in the user data directory).
A path is refused, before anything is written, when it

- is absolute (``/etc/passwd``, ``C:\\x``, ``~/x``),
- has a ``..`` part anywhere (``../../etc/passwd``, ``a/../b``), or
- leads out of the workspace through a symlink: every folder on the way and the file
  itself are resolved, and the result must still be inside the workspace. The file is
  then opened with ``O_NOFOLLOW``, so a symlink put in its place after the check is not
  followed either.

Content is limited to ``tools.file_max_bytes`` (UTF-8). Folders inside the workspace are
created as needed.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import platformdirs

from agentos.spec.config import ToolsConfig
from agentos.tools.types import PlanExample, Tool, ToolContext, ToolError

WORKSPACE_DIRNAME = "workspace"
"""Name of the default workspace folder inside ``AGENTOS_HOME`` or the user data folder."""


def workspace_path(config: ToolsConfig) -> Path:
    """The workspace folder ``config`` names (not created here)."""
    if config.workspace:
        return Path(config.workspace).expanduser().absolute()
    home = os.environ.get("AGENTOS_HOME")
    base = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("agentos"))
    return (base / WORKSPACE_DIRNAME).absolute()


def safe_target(workspace: Path, relative: str) -> Path:
    """Where ``relative`` is inside ``workspace``; ToolError when it would be outside."""
    text = relative.strip()
    if not text:
        raise ToolError("the path is empty; give a file name inside the workspace")
    if "\x00" in text:
        raise ToolError("the path holds a NUL character")
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or text.startswith("~"):
        raise ToolError(f"'{relative}' is an absolute path; give a path relative to the workspace")
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"'{relative}' goes up with '..'; paths must stay inside the workspace")
    if not parts:
        raise ToolError(f"'{relative}' names the workspace itself, not a file in it")
    root = workspace.resolve()
    target = root.joinpath(*parts)
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise ToolError(
            f"'{relative}' leads out of the workspace through a symlink; refusing to write"
        )
    return resolved


def write_file(config: ToolsConfig, relative: str, content: str, *, append: bool = False) -> int:
    """Write ``content`` to ``relative`` inside the workspace; the bytes written."""
    data = content.encode("utf-8")
    if len(data) > config.file_max_bytes:
        raise ToolError(
            f"the content is {len(data)} bytes; file_writer writes at most "
            f"{config.file_max_bytes} (tools.file_max_bytes)"
        )
    workspace = workspace_path(config)
    workspace.mkdir(parents=True, exist_ok=True)
    target = safe_target(workspace, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(workspace.resolve()):
        raise ToolError(f"'{relative}' leads out of the workspace; refusing to write")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except IsADirectoryError:
        raise ToolError(f"'{relative}' is a folder, not a file") from None
    except OSError as exc:
        raise ToolError(f"cannot write '{relative}': {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return len(data)


def file_writer_tool(config: ToolsConfig) -> Tool:
    def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        path = str(arguments["path"])
        written = write_file(
            context.config,
            path,
            str(arguments["content"]),
            append=bool(arguments.get("append", False)),
        )
        return {"path": path, "bytes": written}

    return Tool(
        name="file_writer",
        description="Write text to a file in the workspace folder (a relative path).",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "file name relative to the workspace, e.g. notes.txt",
                },
                "content": {"type": "string", "description": "the text to write"},
                "append": {
                    "type": "boolean",
                    "description": "add to the end of the file instead of replacing it",
                },
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
        function=run,
        timeout_s=30.0,
        examples=(
            PlanExample(
                "Write hello to notes.txt",
                (("file_writer", {"path": "notes.txt", "content": "hello"}),),
            ),
            PlanExample(
                "Save 'call Bob' in a file named bob.txt",
                (("file_writer", {"path": "bob.txt", "content": "call Bob"}),),
            ),
        ),
    )
