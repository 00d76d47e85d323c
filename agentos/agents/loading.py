"""Loading the user's Python callables named in agents.yaml as ``package.module:function``.

Task agents (``run:``) and user tools (``tools: [module:function]``) both name code this
way, and both load it here, so the two agree on where code is looked for and on what a
failure says.

Where code is looked for: the folder of the agents file first, then ``sys.path``. The
folder is put at the front of ``sys.path`` only while the module is imported (and taken
off again), so ``examples/collector.yaml`` can say ``run: collector_task:collect`` for
``examples/collector_task.py`` without the user installing anything, and one agents
file's folder does not stay on the path of the whole process. A module imported at call
time from inside the function (a late ``import sibling``) is therefore not found in that
folder; import siblings at the top of the module.

Python keeps one module per name per process: when a module of the same name was already
imported from another place, the module found in the agents file's folder would silently
be the other one, so that clash is an error instead.

Every failure is a :class:`~agentos.errors.SpecError` that names the agent, the key and
the target, and says what to do.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentos.errors import SpecError

_TARGET = re.compile(
    r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":(?P<attr>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$"
)
"""``package.module:function`` (the attribute may be dotted: ``module:Class.method``)."""

# Protects sys.path while a folder is on it: two loads from different threads must not
# take each other's folder off the path in the middle of an import.
_path_lock = threading.RLock()


def load_callable(
    target: str,
    base_dir: str | Path | None,
    *,
    agent: str | None = None,
    key: str = "run",
    file: str | None = None,
) -> Callable[..., Any]:
    """The callable ``target`` (``package.module:function``) names, imported now.

    ``base_dir`` (normally the agents file's folder) is searched before ``sys.path``;
    ``None`` searches ``sys.path`` only. ``agent``, ``key`` and ``file`` only go into the
    error message. Importing runs the module's top-level code, so anything it raises is
    reported here as a SpecError too (with the exception's type and message).
    """

    def error(message: str) -> SpecError:
        who = f"agent '{agent}': " if agent else ""
        return SpecError(f"{who}{message}", file=file, key=key)

    match = _TARGET.match(target.strip())
    if match is None:
        raise error(
            f"'{target}' is not a Python callable; write it as package.module:function "
            "(e.g. collector_task:collect)"
        )
    module_name, attr_path = match["module"], match["attr"]
    folder = Path(base_dir).resolve() if base_dir is not None else None
    where = f"{folder} and sys.path" if folder is not None else "sys.path"
    with _path_lock:
        _check_no_clash(module_name, folder, error)
        added = folder is not None and str(folder) not in sys.path
        if added:
            sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                raise error(
                    f"cannot import module '{module_name}' for '{target}' (looked in {where}); "
                    "put the file next to the agents file or install its package"
                ) from None
            raise error(
                f"importing module '{module_name}' for '{target}' failed: it imports "
                f"'{missing}', which is not installed"
            ) from None
        except Exception as exc:
            raise error(
                f"importing module '{module_name}' for '{target}' failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            if added:
                sys.path.remove(str(folder))
    value: Any = module
    for part in attr_path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise error(
                f"module '{module_name}' ({getattr(module, '__file__', '?')}) has no "
                f"'{attr_path}' for '{target}'"
            ) from None
    if not callable(value):
        raise error(f"'{target}' is a {type(value).__name__}, not a function")
    return value


def _check_no_clash(
    module_name: str, folder: Path | None, error: Callable[[str], SpecError]
) -> None:
    """Refuse a top-level module of the folder whose name is taken by another module."""
    if folder is None:
        return
    top = module_name.split(".")[0]
    local = [folder / f"{top}.py", folder / top]
    present = next((p for p in local if p.exists()), None)
    loaded = sys.modules.get(top)
    if present is None or loaded is None:
        return
    origin = getattr(loaded, "__file__", None)
    paths = [*getattr(loaded, "__path__", []), *([origin] if origin else [])]
    if any(_inside(Path(p), present) for p in paths):
        return
    raise error(
        f"module '{top}' in {folder} cannot be loaded: a different module of that name is "
        f"already imported from {origin or 'elsewhere'}; rename the file"
    )


def _inside(path: Path, local: Path) -> bool:
    resolved, target = path.resolve(), local.resolve()
    return resolved == target or target in resolved.parents
