"""Semantic memory: ``search`` and ``embed``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

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


def _embedding_bar() -> Any:
    """A rich progress bar on stderr for :func:`agentos.memory.embed_backlog`: a context
    manager that yields its ``on_progress`` callback."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    @contextlib.contextmanager
    def bar() -> Any:
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

        def update(p: Any) -> None:
            done_total = p.embedded + p.empty + p.failed
            if not base:
                base.append(done_total)
            done = done_total - base[0]
            progress.update(task, completed=done, total=done + p.pending)

        with progress:
            yield update

    return bar()


def _open_memory(cfg: Any, engines: Any, store: Any) -> tuple[str, Any]:
    """The embedding model and the configured vector store, or a SpecError saying why
    there is no semantic memory here."""
    from agentos.memory import embedding_model, open_vector_store

    model = embedding_model(engines, cfg.embeddings.model)
    if model is None:
        raise SpecError(
            "no engine serves embeddings, so text cannot be searched by meaning "
            "(the bundled local engine does unless `embeddings: false`)"
        )
    return model, open_vector_store(cfg.vector_store, store)


def _say_backlog(status: Any) -> None:
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
    from agentos.memory import backlog_status, embed_backlog, hit_to_json, search
    from agentos.router.engines import open_engines, router_settings
    from agentos.router.router import Router
    from agentos.store import Store

    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")

    async def find() -> list[dict[str, Any]]:
        async with open_engines(cfg) as engines:
            with Store(db_path) as store:
                model, vectors = _open_memory(cfg, engines, store)
                try:
                    status = await backlog_status(store, model, vectors)
                    _say_backlog(status)
                    async with Router(engines, settings=router_settings(cfg)) as router:
                        if index and status.counts.pending:
                            with _embedding_bar() as on_progress:
                                await embed_backlog(
                                    store,
                                    router,
                                    model,
                                    vectors=vectors,
                                    config=cfg.embeddings,
                                    on_progress=on_progress,
                                )
                        hits = await search(
                            store,
                            text,
                            router=router,
                            model=model,
                            vectors=vectors,
                            agent=agent,
                            limit=limit,
                        )
                finally:
                    vectors.close()
            return [hit_to_json(h) for h in hits]

    rows = run_async(find())
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
    from agentos.memory import backlog_status, embed_backlog
    from agentos.router.engines import open_engines, router_settings
    from agentos.router.router import Router
    from agentos.store import Store

    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")

    async def embed() -> Any:
        async with open_engines(cfg) as engines:
            with Store(db_path) as store:
                model, vectors = _open_memory(cfg, engines, store)
                try:
                    status = await backlog_status(store, model, vectors)
                    if not as_json:
                        _say_backlog(status)
                    if status.counts.pending:
                        async with Router(engines, settings=router_settings(cfg)) as router:
                            with _embedding_bar() as on_progress:
                                await embed_backlog(
                                    store,
                                    router,
                                    model,
                                    vectors=vectors,
                                    config=cfg.embeddings,
                                    on_progress=on_progress,
                                )
                    return await backlog_status(store, model, vectors)
                finally:
                    vectors.close()

    status = run_async(embed())
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
