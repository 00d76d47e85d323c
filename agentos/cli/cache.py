"""``cache``: the response cache, and the tool cache of the web tools."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from agentos.cli.common import DbOption, JsonOption, console, database, fmt_time

cache_app = typer.Typer(
    help="The response cache: every model request is looked up here before an engine is "
    "asked; and the tool cache, where web_fetch and web_search answers are kept.",
    no_args_is_help=True,
)


@cache_app.command("stats")
def cache_stats_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """How many answers the cache holds, how often they were used, and how big it is;
    and what the tool cache holds."""
    from agentos.router.cache import cache_stats
    from agentos.store import Store
    from agentos.tools.cache import tool_cache_stats

    with Store(database(db)) as store:
        stats = cache_stats(store)
        tools = tool_cache_stats(store)
    data = {**dataclasses.asdict(stats), "tool_cache": dataclasses.asdict(tools)}
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(
        f"{stats.entries} answers, {stats.hits} hits, {stats.bytes / 1e6:.1f} MB, "
        f"{stats.expired} expired; oldest {fmt_time(stats.oldest)}, "
        f"newest {fmt_time(stats.newest)}"
    )
    for model, count in sorted(stats.by_model.items()):
        console.print(f"  {model}: {count}")
    console.print(f"tool cache: {tools.entries} answers, {tools.expired} expired")
    for tool, count in sorted(tools.by_tool.items()):
        console.print(f"  {tool}: {count}")


@cache_app.command("clear")
def cache_clear_command(db: DbOption = None) -> None:
    """Delete every cached answer, the tool cache's too."""
    from agentos.router.cache import clear_cache
    from agentos.store import Store
    from agentos.tools.cache import clear_tool_cache

    with Store(database(db)) as store:
        removed = clear_cache(store)
        tools = clear_tool_cache(store)
    console.print(f"removed {removed} cached answers")
    console.print(f"removed {tools} tool cache answers")


@cache_app.command("prune")
def cache_prune_command(
    db: DbOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Also remove answers older than AGE (e.g. 30d, 12h); without it only "
            "expired answers go.",
        ),
    ] = None,
) -> None:
    """Remove expired cached answers (and, with --older-than, old ones), in the response
    cache and the tool cache."""
    from agentos.router.cache import parse_duration, prune_cache
    from agentos.store import Store
    from agentos.tools.cache import prune_tool_cache

    seconds = parse_duration(older_than, key="--older-than") if older_than else None
    with Store(database(db)) as store:
        removed = prune_cache(store, older_than_s=seconds)
        tools = prune_tool_cache(store, older_than_s=seconds)
    console.print(f"removed {removed} cached answers")
    console.print(f"removed {tools} tool cache answers")
