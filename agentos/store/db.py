"""Opening the database: one file, WAL, a busy timeout, migrated on open.

Why WAL: ``agentos top`` and ``agentos replay`` read while ``agentos run`` writes, often
from another process. In WAL mode readers see the last committed state and are never
blocked by a writer, and the writer is never blocked by readers. The busy timeout covers
the remaining case, two writers (a cron-fired run next to a daemon): the second waits for
the first's transaction instead of failing at once. ``synchronous=NORMAL`` is the
recommended WAL setting: a power cut may lose the last transactions, never corrupt.

A :class:`Store` has two connections: ``store.db`` for reads (and migrations) on the
calling side, and the :class:`~agentos.store.writer.Writer` thread's own, which does every
write. Reads see what the writer has committed; call ``store.flush()`` first to read your
own writes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import sqlite_utils

from agentos.errors import StoreError
from agentos.store.migrations import migrate, pending_migrations
from agentos.store.writer import BUSY_TIMEOUT_MS, Execute, WriteOp, Writer

if TYPE_CHECKING:
    from agentos.store.owners import Owner


def _is_busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


class Store:
    """The agentos database at ``path``: created and migrated on open unless ``readonly``.

    ``readonly`` opens an existing, up-to-date database without ever writing to it (for
    viewers); it refuses a missing file or one that still needs migrating, and its writer
    refuses writes.

    ``store.db`` may be used from any thread, one thread at a time; a thread that reads
    concurrently with others should open its own ``Store(path, readonly=True)``.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        conn = self._connect()
        try:
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA foreign_keys=ON")
            if readonly:
                pending = pending_migrations(self.db, self.path)
                if pending:
                    names = ", ".join(fn.__name__ for fn in pending)
                    raise StoreError(
                        f"the database {self.path} needs migrating ({names}) before it can "
                        f"be read: run `agentos runs --db {self.path}` once (it migrates "
                        "it), then this command again"
                    )
            else:
                self._enable_wal()
                self.db.execute("PRAGMA synchronous=NORMAL")
                migrate(self.db, self.path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(self._explain(exc)) from exc
        except BaseException:
            conn.close()
            raise
        self.writer = Writer(self.path, readonly=readonly)
        self.owner: Owner | None = None
        """The process that owns the runs this store starts (see
        :mod:`agentos.store.owners`); registered on the first run."""
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        timeout = BUSY_TIMEOUT_MS / 1000
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise StoreError(f"there is no agentos database at {self.path}")
                uri = self.path.resolve().as_uri() + "?mode=ro"
                return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc

    def _enable_wal(self) -> None:
        """Switch to WAL (a no-op once done: the mode is stored in the file).

        Switching needs a moment of exclusive access, and SQLite answers "locked" at once,
        without the busy timeout, when another connection is switching the same fresh file
        (two processes starting together), so this retries for as long as that timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB:
            return f"{self.path} is not an agentos database (not a SQLite file)"
        if _is_busy(exc):
            return (
                f"the database {self.path} stayed locked by another process for "
                f"{BUSY_TIMEOUT_MS // 1000}s; try again when it is less busy"
            )
        return f"cannot use the database {self.path}: {exc}"

    def submit(self, op: WriteOp) -> int:
        """Queue a write; its ticket (see :meth:`Writer.submit`)."""
        return self.writer.submit(op)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every write submitted so far is committed (see :meth:`Writer.flush`)."""
        self.writer.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        """:meth:`flush` without blocking the event loop."""
        await self.writer.aflush(timeout)

    async def room(self) -> None:
        """Wait (off the event loop) while the writer is far behind (see
        :meth:`Writer.room`); returns at once otherwise."""
        await self.writer.room()

    def close(self) -> None:
        """Commit queued writes, stop the writer and close both connections. Idempotent.

        The store's owner (:mod:`agentos.store.owners`), if it has one, ends here: it
        holds nothing from now on, so its claims are handed back. Raises StoreError if a
        queued write failed; the connections are closed anyway.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.owner is not None and self.writer.usable:
                now = time.time()
                self.writer.submit(
                    Execute(
                        "UPDATE owners SET status = 'ended', ended_at = ? "
                        "WHERE id = ? AND status = 'live'",
                        (now, self.owner.id),
                        ("owners",),
                    )
                )
                self.writer.submit(
                    Execute(
                        "UPDATE sink_deliveries SET lease_until = ? "
                        "WHERE claimed_by = ? AND status = 'claimed' AND lease_until > ?",
                        (now, self.owner.id, now),
                        ("sink_deliveries",),
                    )
                )
            self.writer.close()
        finally:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = " readonly" if self.readonly else ""
        return f"<Store {self.path}{mode}>"
