"""``agentos serve``: the router as an OpenAI-compatible endpoint, and runs over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentos.cli.common import ConfigOption, DbOption, console, database, read_config, run_async


def serve(
    agents: Annotated[
        Path | None,
        typer.Argument(
            help="An agents file whose agents POST /runs may start (optional).",
            metavar="AGENTS",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on (default: serve.host, 127.0.0.1). Anything but "
            "loopback needs client keys in serve.keys.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            metavar="PORT",
            help="Port to listen on (default: serve.port, 8800; 0: a free one).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Serve your engines as one OpenAI-compatible endpoint, and agent runs over HTTP.

    Point any OpenAI client (the openai SDK, llm, LangChain, an editor) at
    http://HOST:PORT/v1: its requests go through the router with every other client's
    and agent's, so they are batched together, queued by priority, served from the
    cache, failed over between engines, shown in `agentos top` and recorded in SQLite.
    POST /runs starts a run of an agent of AGENTS (or an inline agent); /docs shows the
    whole API. Ctrl-C or SIGTERM stops it: requests in flight get serve.shutdown_s
    seconds to finish.
    """
    from agentos.scheduler.display import PlainDisplay
    from agentos.serve.service import check_exposure
    from agentos.serve.service import serve as serve_forever
    from agentos.spec.agents import load_agents

    agents_file = load_agents(agents) if agents is not None else None
    cfg = read_config(config, agents)
    if agents is not None and agents_file is not None:
        from agentos.spec import check_agent_kinds, check_agents_against_config

        check_agents_against_config(agents_file, cfg)
        check_agent_kinds(agents_file, agents, cfg)
    bind = host or cfg.serve.host
    check_exposure(bind, cfg)
    db_path = database(db, cfg)
    display = PlainDisplay()

    def ready(url: str) -> None:
        keys = f"{len(cfg.serve.keys)} client key(s)" if cfg.serve.keys else "no client keys"
        console.print(
            f"agentos serve: listening on {url} (OpenAI API at {url}/v1, docs at {url}/docs; "
            f"{keys}; database {db_path}); Ctrl-C stops it",
            highlight=False,
            soft_wrap=True,
        )

    try:
        run_async(
            serve_forever(
                cfg,
                db_path=db_path,
                display=display,
                host=bind,
                port=cfg.serve.port if port is None else port,
                agents=agents_file,
                agents_file=str(agents.resolve()) if agents is not None else None,
                ready=ready,
            )
        )
    finally:
        display.close()
    console.print("agentos serve: stopped", highlight=False)
