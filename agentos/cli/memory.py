"""Semantic memory: ``search`` and ``embed``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agentos.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    console,
    database,
    err_console,
    read_config,
    run_async,
)
from agentos.errors import SpecError

if TYPE_CHECKING:
    from agentos.memory import BacklogStatus, EmbeddingProgress


@contextlib.contextmanager
def _embedding_bar() -> Iterator[Callable[[EmbeddingProgress], None]]:
    """A rich progress bar on stderr for :func:`agentos.memory.embed_backlog` (a
    :data:`agentos.memory.ProgressBar`): yields its ``on_progress`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("embedding", total=None)
    base: list[int] = []

    def update(p: EmbeddingProgress) -> None:
        done_total = p.embedded + p.empty + p.failed
        if not base:
            base.append(done_total)
        done = done_total - base[0]
        progress.update(task, completed=done, total=done + p.pending)

    with progress:
        yield update


def _say_backlog(status: BacklogStatus) -> None:
    from rich.markup import escape

    counts = status.counts
    err_console.print(
        f"[dim]memory: {counts.embedded} records embedded with {escape(status.model)} in "
        f"{escape(status.vector_store)}; {counts.pending} not yet[/]",
        highlight=False,
    )


def search_command(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="What to look for, in words.")],
    agent: Annotated[
        str | None, typer.Option("--agent", metavar="NAME", help="Only this agent's records.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many records.")] = 10,
    index: Annotated[
        bool,
        typer.Option(
            "--index/--no-index",
            help="First embed the records not embedded yet (what a run left), with a "
            "progress bar on stderr.",
        ),
    ] = True,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find what agentos has seen (results, model answers, sink items) by meaning."""
    from agentos.memory import search_database

    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    rows = run_async(
        search_database(
            cfg,
            db_path,
            text,
            agent=agent,
            limit=limit,
            index=index,
            on_status=_say_backlog,
            progress=_embedding_bar,
        )
    )
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("nothing found")
        return
    table = Table(box=None, header_style="bold")
    for col in ("score", "agent", "source", "run", "time", "text"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r['score']:.3f}",
            str(r.get("agent") or "-"),
            str(r.get("source")),
            str(r.get("run_id") or "-"),
            str(r.get("time") or "-"),
            str(r.get("text") or "")[:120],
        )
    console.print(table)


def embed_command(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed every result, model answer and sink item not in the vector store yet (what
    a run left when it exited, or everything after a switch of vector_store), with a
    progress bar; interrupted, it keeps what it did and the next call goes on."""
    from agentos.memory import embed_database

    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    status = run_async(
        embed_database(
            cfg, db_path, on_status=None if as_json else _say_backlog, progress=_embedding_bar
        )
    )
    counts = status.counts
    if as_json:
        print(
            json.dumps(
                {
                    "model": status.model,
                    "vector_store": status.vector_store,
                    **dataclasses.asdict(counts),
                },
                indent=2,
            )
        )
        return
    console.print(
        f"{counts.embedded} records embedded with {status.model} in {status.vector_store} "
        f"({counts.empty} without text, {counts.failed} refused by the engine, "
        f"{counts.pending} pending)",
        highlight=False,
        markup=False,
    )
