"""``engines``: the configured engines, their health and, with ``--probe``, throughput."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentos.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    console,
    database,
    read_config,
    run_async,
)
from agentos.errors import SpecError


def engines(
    config: ConfigOption = None,
    db: DbOption = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Measure each engine's throughput at rising batch sizes and concurrency and "
            "suggest max_batch_size and max_requests (sends real requests: avoid on paid APIs).",
        ),
    ] = False,
    engine: Annotated[
        str | None, typer.Option("--engine", metavar="NAME", help="Only this engine.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the engines with their models, capabilities and health.

    Local engines are started for the check and stopped again; the result is also
    recorded in the database's engine_health table."""
    from agentos.memory import embedding_model, memory_summary
    from agentos.router.engines import describe_engines, open_engines
    from agentos.store import Store, queries

    cfg = read_config(config, Path("agents.yaml"))
    if engine is not None and engine not in {e.name for e in cfg.resolved_engines()}:
        known = ", ".join(e.name for e in cfg.resolved_engines())
        raise SpecError(f"--engine {engine!r} is not configured (engines: {known})")
    db_path = database(db, cfg)

    async def detect() -> list[dict[str, Any]]:
        only = {engine} if engine else None
        async with open_engines(cfg, only=only) as handles:
            if cfg.embeddings.enabled:
                embedder_model.append(embedding_model(handles, cfg.embeddings.model))
            return await describe_engines(handles, probe=probe)

    embedder_model: list[str | None] = []
    rows = run_async(detect())
    memory_line = None
    with Store(db_path) as store:
        for r in rows:
            queries.upsert_engine_health(
                store,
                name=r["name"],
                base_url=r["endpoint"],
                models=r["models"],
                capabilities=r["capabilities"],
                healthy=r["healthy"],
                detail=r["detail"],
            )
        if not as_json:
            model = embedder_model[0] if embedder_model else None
            memory_line = run_async(memory_summary(cfg, store, model))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("engine", "type", "endpoint", "models", "capabilities", "limits", "health"):
        table.add_column(col)
    for r in rows:
        health = "[green]healthy[/]" if r["healthy"] else "[red]unhealthy[/]"
        if r["detail"] != "ok":  # why not, or which capability is missing and why
            health += f" {escape(r['detail'])}"
        batch = f"batch {r['max_batch_size']}" if r["prompt_batching"] else "no prompt lists"
        if r["chat_template"]:
            batch += f", chat batched (template: {r['chat_template']})"
        elif r["prompt_batching"]:
            batch += ", chat unbatched (no chat template)"
        table.add_row(
            r["name"],
            r["type"],
            r["endpoint"],
            ", ".join(r["models"]),
            ", ".join(r["capabilities"]),
            f"{r['max_requests']} requests, {batch}",
            health,
        )
    console.print(table)
    if memory_line:
        console.print(memory_line, highlight=False, markup=False)
    for r in rows:
        if "probe" not in r:
            continue
        if r["probe"] is None:
            console.print(f"[yellow]{r['name']}: not probed (unhealthy or no completions)[/]")
            continue
        report = r["probe"]
        console.print(f"\n[bold]{r['name']}[/]: throughput by batch size and concurrency")
        points = Table(box=None, header_style="bold")
        for col in ("batch", "concurrency", "prompts/s", "p50 ms", "errors"):
            points.add_column(col, justify="right")
        for p in report["points"]:
            points.add_row(
                str(p["batch_size"]),
                str(p["concurrency"]),
                f"{p['prompts_per_s']:.1f}",
                f"{p['p50_ms']:.0f}",
                str(p["errors"]),
            )
        console.print(points)
        console.print(
            f"suggested: max_batch_size: {report['suggested_max_batch_size']}, "
            f"max_requests: {report['suggested_max_requests']}"
        )
        for note in report["notes"]:
            console.print(f"[dim]{note}[/]")
