"""What the command modules share: the consoles, the common options, and how a command
finds its config file and database and runs a coroutine.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from agentos.errors import SpecError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        metavar="PATH",
        help="SQLite database (default: $AGENTOS_DB, else agentos.db in the user data dir).",
        envvar="AGENTOS_DB",
        show_envvar=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="config.yaml (default: $AGENTOS_CONFIG, else config.yaml beside the agents "
        "file, else the bundled local engine).",
        envvar="AGENTOS_CONFIG",
        show_envvar=False,
    ),
]
AgentsArgument = Annotated[
    Path, typer.Argument(help="The agents file.", show_default=True, metavar="AGENTS")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only runs started since WHEN: 2026-11-01, an ISO time, or an age such as 7d.",
    ),
]


def config_file(explicit: Path | None, agents_path: Path | None) -> Path | None:
    """``--config`` if given, else config.yaml beside the agents file if there is one,
    else None (the bundled local engine)."""
    if explicit is not None:
        return explicit
    if agents_path is not None:
        beside = agents_path.parent / "config.yaml"
        if beside.is_file():
            return beside
    return None


def read_config(explicit: Path | None, agents_path: Path | None) -> Any:
    from agentos.spec.config import load_config

    return load_config(config_file(explicit, agents_path))


def database(explicit: Path | None, config: Any = None) -> Path:
    """``--db`` if given, else the config's ``storage.db``, else the default database."""
    from agentos.store.paths import resolve_db_path

    if explicit is None and config is not None and config.storage.db:
        return resolve_db_path(config.storage.db)
    return resolve_db_path(explicit)


def existing_database(db: Path | None) -> Path:
    """:func:`database`, or a SpecError when there is no database there yet."""
    db_path = database(db)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    return db_path


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with SIGTERM treated like Ctrl-C: the main task is cancelled, so every
    ``finally`` (stopping local servers, finishing runs) runs before the process exits."""

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(main())


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
