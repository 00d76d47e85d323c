"""The ``agentos`` command: parse, call the library, render.

This package is the one error boundary (STYLE.md 1): library code raises ``AgentosError``
subclasses, and ``main`` prints them as a short red panel on stderr and exits with their
``exit_code``: 2 (bad input), or 1 for a :class:`~agentos.errors.StoreFailure` (a failed
run). ``AGENTOS_RAISE_ERRORS=1`` re-raises them instead. Ctrl-C exits quietly with 130.

The commands live one module per concern: ``running`` (run, validate, ask), ``record``
(runs, replay, audit, export, prune, sinks, top), ``memory`` (search, embed), ``engines``,
``schedule``, ``cache``, ``dataset`` and ``usage``; ``common`` holds the consoles and
options they share. They are registered here, in the order ``agentos --help`` and the
README's CLI reference list them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.text import Text

from agentos import __version__
from agentos.cli import (
    cache,
    dataset,
    engines,
    memory,
    record,
    running,
    schedule,
    serve,
    status,
    usage,
)
from agentos.cli.common import console, err_console
from agentos.errors import AgentosError
from agentos.redaction import redact

app = typer.Typer(
    name="agentos",
    help="A local-first operating environment for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"agentos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """A local-first operating environment for LLM agents."""


app.command()(running.run)
app.command()(running.validate)
app.command()(record.runs)
app.command()(engines.engines)
app.command()(record.replay)
app.command()(record.sinks)
app.command()(running.ask)
app.command()(serve.serve)
app.command("search")(memory.search_command)
app.command("embed")(memory.embed_command)
app.command()(record.top)
app.command()(status.status)
app.command()(record.audit)
app.command()(record.export)
app.command()(usage.usage)
app.command()(record.prune)
app.add_typer(schedule.schedule_app, name="schedule")
app.add_typer(cache.cache_app, name="cache")
app.add_typer(dataset.dataset_app, name="dataset")


def _show_error(exc: AgentosError) -> None:
    err_console.print(
        Panel(
            Text(redact(exc.message)),  # not markup: a message may hold [brackets]
            title=exc.title,
            title_align="left",
            border_style="red",
            expand=False,
        )
    )


def _first_agentos_error(group: BaseExceptionGroup[Any]) -> AgentosError | None:
    for exc in group.exceptions:
        if isinstance(exc, AgentosError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_agentos_error(exc)
            if found is not None:
                return found
    return None


def main() -> None:
    """Console-script entry point: the single place where errors become exit codes."""
    raise_errors = os.environ.get("AGENTOS_RAISE_ERRORS", "") not in ("", "0")
    try:
        rv = app(standalone_mode=False)
    except AgentosError as exc:
        if raise_errors:
            raise
        _show_error(exc)
        sys.exit(exc.exit_code)
    except BaseExceptionGroup as group:
        # An error inside a task group (e.g. an agent's run) arrives wrapped; show the first
        # of ours, and let anything else through as the bug it is.
        ours = _first_agentos_error(group)
        if ours is None or raise_errors:
            raise
        _show_error(ours)
        sys.exit(ours.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (bad option, bad value): typer's own message, exit 2.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        sys.exit(130)
    except asyncio.CancelledError:
        # SIGTERM cancelled the run; everything was stopped on the way out.
        sys.exit(143)
    sys.exit(rv if isinstance(rv, int) else 0)
