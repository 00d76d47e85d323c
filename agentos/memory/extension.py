"""sqlite-vec in this Python's own SQLite, even where ``sqlite3`` cannot load extensions.

Python builds made without ``--enable-loadable-sqlite-extensions`` (pyenv's default, and
this project's machines) have no ``sqlite3.Connection.enable_load_extension``, yet the
SQLite library they link against can load extensions: the switch is only missing from the
Python module. :func:`register_sqlite_vec` asks that library, through its C API
(``sqlite3_auto_extension``), to initialise sqlite-vec in every connection opened from then
on, so the vector store's ordinary ``sqlite3`` connection ranks with ``vec_distance_cosine``.

Why not a second SQLite (``apsw``, ``pysqlite3``) for the vector store's connection: each
bundles a copy of SQLite, and two copies in one process opening the same database file do
not see each other's POSIX locks. Closing one copy's connection drops the locks the other
holds, and a copy that believes it holds the last connection checkpoints and deletes the
WAL under the other's feet ("disk I/O error" in the embedder's reads, in our trial) — the
"multiple copies of SQLite in one process" hazard of https://sqlite.org/howtocorrupt.html.
(pysqlite3 would also be picked up by sqlite-utils in place of ``sqlite3``.)
"""

from __future__ import annotations

import ctypes
import sqlite3
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_outcome: list[str | None] = []
"""The outcome of the one registration attempt: ``[None]`` when it worked, ``[why not]``
when it did not, empty before it is tried."""
_libraries: list[Any] = []
"""The ctypes handles, kept so the entry point stays valid for the process's lifetime."""


def _loadable(base: str) -> Path | None:
    for suffix in ("", ".so", ".dylib", ".dll"):
        path = Path(base + suffix)
        if path.is_file():
            return path
    return None


def _register() -> str | None:
    try:
        import _sqlite3

        import sqlite_vec  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        return f"cannot be loaded: {exc.name} is not installed"
    library = _loadable(sqlite_vec.loadable_path())
    if library is None:
        return f"cannot be loaded: no library at {sqlite_vec.loadable_path()}"
    try:
        # dlsym on the _sqlite3 module's handle finds the SQLite it is linked against
        # (a shared libsqlite3 or, in a static build, its own copy): the very library
        # sqlite3.connect uses
        sqlite = ctypes.CDLL(_sqlite3.__file__)
        extension = ctypes.CDLL(str(library))
        register = sqlite.sqlite3_auto_extension
        entry = extension.sqlite3_vec_init
    except (OSError, AttributeError) as exc:
        return f"cannot be registered with this Python's SQLite: {exc}"
    register.argtypes = [ctypes.c_void_p]
    register.restype = ctypes.c_int
    code = register(ctypes.cast(entry, ctypes.c_void_p))
    if code != 0:
        return f"cannot be registered with this Python's SQLite (error {code})"
    _libraries.extend([sqlite, extension])
    return check_sqlite_vec(sqlite3.connect(":memory:"), close=True)


def check_sqlite_vec(conn: sqlite3.Connection, *, close: bool = False) -> str | None:
    """Whether ``conn`` has sqlite-vec's functions: None if so, else why not."""
    try:
        conn.execute("SELECT vec_version()").fetchone()
    except sqlite3.Error as exc:
        return f"did not load: {exc}"
    finally:
        if close:
            conn.close()
    return None


def register_sqlite_vec() -> str | None:
    """Have every ``sqlite3`` connection opened from now on in this process load
    sqlite-vec; returns None when that works, else why not (a line for ``top``,
    ``agentos search`` and ``agentos engines``). Tried once per process; idempotent."""
    with _lock:
        if not _outcome:
            _outcome.append(_register())
        return _outcome[0]
