"""The ``file_writer`` tool: writes text files inside one workspace folder, nowhere else.

The workspace is ``tools.workspace`` (default: ``workspace`` in the user data directory).
A path is refused, before anything is written, when it

- is absolute (``/etc/passwd``, ``C:\\x``, ``~/x``),
- has a ``..`` part anywhere (``../../etc/passwd``, ``a/../b``), or
- leads out of the workspace through a symlink: every folder on the way and the file
  itself are resolved, and the result must still be inside the workspace. The file is
  then opened with ``O_NOFOLLOW``, so a symlink put in its place after the check is not
  followed either.

The file opened must be a regular file with one link: a hard link inside the workspace to
a file outside it (which no path check can see: both names are the same file) is refused,
and so is a FIFO or a device (opened without blocking, so a FIFO without a reader cannot
hang the call). These are checked on the open file (``fstat``), before it is truncated.

Content is limited to ``tools.file_max_bytes`` (UTF-8), and so is the file an append
makes: the size is read under an exclusive ``flock`` (where the platform has one), so
concurrent appends cannot pass the limit together. Folders inside the workspace are
created as needed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import platformdirs

try:
    import fcntl
except ImportError:  # Windows: no flock; appends are then checked without a lock
    fcntl = None  # type: ignore[assignment]

from agentos.spec.config import ToolsConfig
from agentos.tools.types import PlanExample, Tool, ToolContext, ToolError

WORKSPACE_DIRNAME = "workspace"
"""Name of the default workspace folder inside ``AGENTOS_HOME`` or the user data folder."""


_ONLY_FILES = "file_writer writes only plain files"


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
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except IsADirectoryError:
        raise ToolError(f"'{relative}' is a folder, not a file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise ToolError(f"'{relative}' is not a regular file; {_ONLY_FILES}") from None
        raise ToolError(f"cannot write '{relative}': {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _check_opened(os.fstat(fd), relative, len(data) if append else None, config)
        if not append:
            os.ftruncate(fd, 0)
        handle.write(data)
    return len(data)


def _check_opened(
    info: os.stat_result, relative: str, appending: int | None, config: ToolsConfig
) -> None:
    """Refuse an opened file that is no plain file of the workspace's own, or that
    ``appending`` bytes would take past ``file_max_bytes``."""
    if not stat.S_ISREG(info.st_mode):
        raise ToolError(f"'{relative}' is not a regular file; {_ONLY_FILES}")
    if info.st_nlink > 1:
        raise ToolError(
            f"'{relative}' has {info.st_nlink} hard links; file_writer does not write a "
            "file that also has a name elsewhere (it may be outside the workspace)"
        )
    if appending is not None and info.st_size + appending > config.file_max_bytes:
        raise ToolError(
            f"'{relative}' is {info.st_size} bytes; appending {appending} would make it "
            f"{info.st_size + appending}, past file_writer's limit of {config.file_max_bytes} "
            "(tools.file_max_bytes)"
        )


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
