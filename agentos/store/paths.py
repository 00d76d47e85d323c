"""Where the database lives.

Every command takes ``--db PATH``; without it the database is found the same way from any
folder, so ``agentos top`` attaches to whatever ``agentos run`` writes without being told
where. Precedence, first match wins:

1. an explicit path (``--db``),
2. ``AGENTOS_DB`` (a file),
3. ``AGENTOS_HOME`` (a folder; the database is ``agentos.db`` inside it),
4. ``agentos.db`` in the user data directory (``platformdirs.user_data_dir("agentos")``).

Empty environment variables count as unset, so ``AGENTOS_DB= agentos top`` falls back
instead of opening a file named "".
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DB_FILENAME = "agentos.db"
"""Name of the database file inside ``AGENTOS_HOME`` or the user data directory."""


def default_db_path() -> Path:
    """The database path when no ``--db`` is given (see the module docstring)."""
    db = os.environ.get("AGENTOS_DB")
    if db:
        return Path(db).expanduser()
    home = os.environ.get("AGENTOS_HOME")
    if home:
        return Path(home).expanduser() / DB_FILENAME
    return Path(platformdirs.user_data_dir("agentos")) / DB_FILENAME


def resolve_db_path(explicit: str | Path | None) -> Path:
    """``explicit`` (with ``~`` expanded) when given, else :func:`default_db_path`."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    return default_db_path()
