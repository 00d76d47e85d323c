"""``usage``: tokens and cost of the model calls, by agent, engine, model or day."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentos.cli.common import ConfigOption, DbOption, JsonOption, console, database, read_config


def usage(
    by: Annotated[
        str, typer.Option("--by", metavar="GROUP", help="agent, engine, model or day.")
    ] = "agent",
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only calls started since WHEN: 2026-11-01, an ISO time, or an age such as 7d.",
        ),
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV for spreadsheets.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens and cost of the model calls so far, by agent (or engine, model, day).

    Prices come from `pricing:` in config.yaml (per million tokens per model, or per hour
    of busy time per engine; local engines are free unless priced); a call with no price
    is counted as such, never as 0. Answers from the cache cost nothing. Days are local
    dates. The config is --config, else config.yaml in this folder."""
    from agentos.errors import SpecError
    from agentos.store import Store
    from agentos.store.export import parse_since
    from agentos.usage.pricing import Pricing, money
    from agentos.usage.report import USAGE_BY
    from agentos.usage.report import usage as usage_of

    if by not in USAGE_BY:
        raise SpecError(f"--by {by!r} is not one of {', '.join(USAGE_BY)}")
    if as_csv and as_json:
        raise SpecError("--csv and --json: choose one")
    since_ts = parse_since(since) if since else None
    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    pricing = Pricing.from_config(cfg)
    with Store(db_path, readonly=True) as store:
        result = usage_of(store, pricing, by=by, since=since_ts)
    rows = [row.to_json() for row in result.rows]
    if as_json:
        print(
            json.dumps(
                {
                    "by": by,
                    "currency": result.currency,
                    "rows": rows,
                    "total": result.total.to_json(),
                },
                indent=2,
            )
        )
        return
    if as_csv:
        fields = ["key", *[k for k in result.total.to_json() if k != "key"]]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for line in [*rows, result.total.to_json()]:
            writer.writerow({k: "" if v is None else v for k, v in line.items()})
        return
    if not result.rows:
        console.print("no model calls recorded" + (f" since {since}" if since else ""))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column(by)
    for name in ("calls", "cached", "failed", "prompt", "completion", "tokens"):
        table.add_column(name, justify="right")
    table.add_column(f"cost ({result.currency})", justify="right")
    unpriced = result.total.unpriced
    for row in [*result.rows, result.total]:
        shown = money(row.cost)
        if row.unpriced and row.cost is not None:
            shown += "*"
        table.add_row(
            f"[bold]{row.key}[/]" if row is result.total else row.key,
            f"{row.calls:,}",
            f"{row.cached:,}",
            f"{row.failed:,}",
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            f"{row.tokens:,}",
            shown,
        )
    console.print(table)
    if unpriced:
        console.print(
            f"[dim]{unpriced:,} calls have no price (a model without a price in config.yaml's "
            "pricing:); * marks costs that leave them out[/]"
        )
