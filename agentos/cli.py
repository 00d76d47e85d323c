"""The ``agentos`` command: parse, call the library, render.

This module is the one error boundary (STYLE.md 1): library code raises ``AgentosError``
subclasses, and ``main`` prints them as a short red panel on stderr and exits 2
(``AGENTOS_RAISE_ERRORS=1`` re-raises them instead). Ctrl-C exits quietly with 130.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from agentos import __version__
from agentos.errors import AgentosError, SpecError

T = TypeVar("T")

app = typer.Typer(
    name="agentos",
    help="A local-first operating environment for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
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


def _check_kinds(agents_file: Any, path: Path, config: Any) -> None:
    """What only the agent kinds can check: team members exist, task callables import,
    tools are known — before anything runs or is written."""
    from agentos.agents.loading import load_callable
    from agentos.agents.team import check_team_members
    from agentos.tools.registry import check_agent_tools

    check_team_members(agents_file)
    for spec in agents_file.agents:
        if spec.kind == "task" and spec.run:
            load_callable(spec.run, path.resolve().parent, agent=spec.name, file=str(path))
    check_agent_tools(agents_file, base_dir=path.resolve().parent, config=config.tools)


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


def _config_path(explicit: Path | None, agents_path: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if agents_path is not None:
        beside = agents_path.parent / "config.yaml"
        if beside.is_file():
            return beside
    return None


def _load_config(explicit: Path | None, agents_path: Path | None) -> Any:
    from agentos.spec.config import load_config

    return load_config(_config_path(explicit, agents_path))


def _db_path(explicit: Path | None, config: Any = None) -> Path:
    from agentos.store.paths import resolve_db_path

    if explicit is None and config is not None and config.storage.db:
        return resolve_db_path(config.storage.db)
    return resolve_db_path(explicit)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with SIGTERM treated like Ctrl-C: the main task is cancelled, so every
    ``finally`` (stopping local servers, finishing runs) runs before the process exits."""

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(main())


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--var expects NAME=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


@app.command()
def run(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", metavar="NAME", help="Run only this agent (repeatable)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run the due work once and exit (for cron/launchd).")
    ] = False,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", metavar="NAME=VALUE", help="A template variable (repeatable)."),
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Plain log lines even on a terminal.")
    ] = False,
) -> None:
    """Run the agents of AGENTS; exit 1 when a run failed."""
    from agentos.scheduler.display import PlainDisplay, RichDisplay
    from agentos.scheduler.runner import run_agents, select_agents
    from agentos.spec import check_agents_against_config
    from agentos.spec.agents import load_agents

    agents_file = load_agents(agents)
    cfg = _load_config(config, agents)
    check_agents_against_config(agents_file, cfg)
    _check_kinds(agents_file, agents, cfg)
    selected = select_agents(agents_file, agent or [])
    variables = _parse_vars(var or [])
    db_path = _db_path(db, cfg)
    live = sys.stdout.isatty() and not plain
    display = RichDisplay(console) if live else PlainDisplay()
    from agentos.scheduler.runner import check_renderable

    check_renderable(selected, variables, str(agents))
    try:
        outcomes = _run_async(
            run_agents(
                selected,
                config=cfg,
                db_path=db_path,
                display=display,
                agents_file=str(agents.resolve()),
                variables=variables,
                all_agents=agents_file,
                once=once,
            )
        )
    finally:
        display.close()
    failed = [o for o in outcomes if o.status != "succeeded"]
    if live:
        for o in outcomes:
            colour = "green" if o.status == "succeeded" else "red"
            console.print(
                f"[{colour}]{o.status}[/] {o.agent}: {o.successes}/{o.wanted} good results in "
                f"{o.attempts} attempts — run [bold]{o.run_id}[/]"
                + (f" [cyan]({o.cache_note()})[/]" if o.cache_hits else "")
                + (f" ([red]{o.error}[/])" if o.error else "")
            )
        console.print(f"[dim]database: {db_path}[/]")
    if failed:
        raise typer.Exit(1)


@app.command()
def validate(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Check AGENTS and the config file without running anything (nothing is written)."""
    from agentos.spec import check_agents_against_config
    from agentos.spec.agents import load_agents

    agents_file = load_agents(agents)
    cfg = _load_config(config, agents)
    check_agents_against_config(agents_file, cfg)
    _check_kinds(agents_file, agents, cfg)
    cfg_path = _config_path(config, agents)
    engines = ", ".join(e.name for e in cfg.engines) or "the bundled local engine"
    console.print(
        f"[green]ok[/] {agents}: {len(agents_file.agents)} agent(s) "
        f"({', '.join(a.name for a in agents_file.agents)}); "
        f"config {cfg_path or '(defaults)'}: engines {engines}; "
        f"database {_db_path(db, cfg)}"
    )


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@app.command()
def runs(
    db: DbOption = None,
    agent: Annotated[
        str | None, typer.Option("--agent", metavar="NAME", help="Only this agent.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only runs with this status (running, succeeded, failed, cancelled).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent runs, newest first.

    A run is shown by the shortest prefix of its id that no other run shares (what
    `agentos replay` takes); `cached` is how many of the run's answers came from the
    response cache (a re-run of a single-shot agent is served from it)."""
    from agentos.store import Store, queries

    if status is not None and status not in queries.RUN_STATUSES:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(queries.RUN_STATUSES)}", param_hint="--status"
        )
    with Store(_db_path(db)) as store:
        rows = queries.list_runs(store, agent=agent, status=status, limit=limit)
        ids = [r["id"] for r in rows]
        prefixes = queries.unique_prefixes(store, ids)
        calls = queries.model_calls_of(store, ids)
    for r in rows:
        r["answers"], r["cache_hits"] = calls.get(r["id"], (0, 0))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=None, box=None, header_style="bold")
    width = max((len(p) for p in prefixes.values()), default=3)
    table.add_column("run", no_wrap=True, min_width=width)
    for col in ("agent", "status", "good", "attempts", "cached", "started", "took", "error"):
        table.add_column(col)
    for r in rows:
        took = (
            f"{r['finished_at'] - r['started_at']:.1f}s"
            if r.get("finished_at") and r.get("started_at")
            else "-"
        )
        colour = {"succeeded": "green", "failed": "red", "running": "yellow"}.get(r["status"], "")
        cached = f"{r['cache_hits']}/{r['answers']}" if r["answers"] else "-"
        table.add_row(
            prefixes[r["id"]],
            r["agent"],
            f"[{colour}]{r['status']}[/]" if colour else r["status"],
            f"{r.get('successes') or 0}/{r.get('wanted') or 0}",
            str(r.get("attempts") or 0),
            f"[cyan]{cached}[/]" if r["cache_hits"] else cached,
            _fmt_time(r.get("started_at")),
            took,
            (r.get("error") or "")[:60],
        )
    if not rows:
        console.print("no runs yet")
        return
    console.print(table)


@app.command()
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
    from agentos.memory import embedding_model
    from agentos.router.engines import open_engines
    from agentos.store import Store, queries

    cfg = _load_config(config, Path("agents.yaml"))
    if engine is not None and engine not in {e.name for e in cfg.resolved_engines()}:
        known = ", ".join(e.name for e in cfg.resolved_engines())
        raise SpecError(f"--engine {engine!r} is not configured (engines: {known})")
    db_path = _db_path(db, cfg)

    async def detect() -> list[dict[str, Any]]:
        from agentos.router.probe import probe_engine

        only = {engine} if engine else None
        async with open_engines(cfg, only=only) as handles:
            if cfg.embeddings.enabled:
                embedder_model.append(embedding_model(handles, cfg.embeddings.model))
            rows = []
            for h in handles:
                row: dict[str, Any] = {
                    "name": h.name,
                    "type": h.kind,
                    "endpoint": h.client.base_url,
                    "models": h.info.models,
                    "capabilities": h.info.capabilities,
                    "prompt_batching": h.prompt_batching,
                    "chat_template": h.chat_template.source if h.chat_template else None,
                    "healthy": h.healthy,
                    "detail": h.info.detail,
                    "max_requests": h.max_requests,
                    "max_batch_size": h.max_batch_size,
                }
                if probe and h.healthy and "completions" in h.info.capabilities:
                    report = await probe_engine(
                        h.client, h.info.models[0], prompt_batching=h.prompt_batching
                    )
                    row["probe"] = dataclasses.asdict(report)
                elif probe:
                    row["probe"] = None
                rows.append(row)
            return rows

    embedder_model: list[str | None] = []
    rows = _run_async(detect())
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
            memory_line = _embedder_line(cfg, store, embedder_model)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("engine", "type", "endpoint", "models", "capabilities", "limits", "health"):
        table.add_column(col)
    for r in rows:
        health = "[green]healthy[/]" if r["healthy"] else f"[red]unhealthy[/] {r['detail']}"
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


@app.command()
def replay(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run (a unique prefix will do).")
    ],
    mode: Annotated[
        str,
        typer.Argument(
            metavar="[MODE]",
            help="view (the timeline), exact (re-execute from the record, contacting no "
            "engine; exit 1 if it does not reproduce) or live (re-execute against today's "
            "engines and record a new run).",
        ),
    ] = "view",
    from_step: Annotated[
        int,
        typer.Option("--from-step", metavar="N", help="live: steps before N come from the record."),
    ] = 1,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check the run's audit trail (as `agentos audit`)."),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a recorded run, or re-execute it exactly or live."""
    if verify:
        audit(run_id, db=db, as_json=as_json)
    from agentos.replay.reexec import replay_exact
    from agentos.replay.render import print_report, print_timeline
    from agentos.replay.timeline import build_timeline
    from agentos.scheduler.display import NullDisplay
    from agentos.store import Store

    if mode not in ("view", "exact", "live"):
        raise typer.BadParameter(f"{mode!r} is not one of view, exact, live", param_hint="MODE")
    db_path = _db_path(db)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    with Store(db_path) as store:
        if mode == "view":
            timeline = build_timeline(store, run_id)
            if as_json:
                print(json.dumps(timeline.to_json(), indent=2, default=str))
            else:
                print_timeline(timeline, console)
            return
        if mode == "exact":
            report = _run_async(replay_exact(store, run_id, NullDisplay()))
        else:
            cfg = _load_config(config, None)
            report = _run_async(_replay_live(store, run_id, cfg, from_step))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print_report(report, console)
    if not report.reproduced and mode == "exact":
        raise typer.Exit(1)
    if mode == "live" and report.outcome is not None and report.outcome.status != "succeeded":
        raise typer.Exit(1)


async def _replay_live(store: Any, run_id: str, cfg: Any, from_step: int) -> Any:
    from agentos.replay.reexec import replay_live
    from agentos.router.engines import open_engines, router_settings
    from agentos.router.recording import StoreCallRecorder
    from agentos.router.router import Router
    from agentos.scheduler.display import NullDisplay

    async with (
        open_engines(cfg) as engines,
        Router(engines, StoreCallRecorder(store), settings=router_settings(cfg)) as router,
    ):
        return await replay_live(store, run_id, NullDisplay(), router, from_step=from_step)


@app.command()
def sinks(
    agents: Annotated[
        Path | None,
        typer.Argument(
            metavar="[AGENTS]",
            help="An agents file, so that sinks with readers but no items show too.",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The sinks between agents: depth per reader, done, failed, oldest pending, rates."""
    from agentos.sinks import sink_readers, sink_stats, sinks_table
    from agentos.spec.agents import load_agents
    from agentos.store import Store

    readers = sink_readers(load_agents(agents)) if agents is not None else None
    db_path = _existing_db(db)
    with Store(db_path, readonly=True) as store:
        rows = sink_stats(store, readers=readers)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        console.print("no sinks yet")
    else:
        console.print(sinks_table(rows))


@app.command()
def ask(
    request: Annotated[str, typer.Argument(metavar="REQUEST", help="What to do, in words.")],
    tool: Annotated[
        list[str] | None,
        typer.Option(
            "--tool",
            metavar="NAME",
            help="Tools the plan may use (repeatable; default: the built-in ones).",
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Plan anew, not from the response cache: a cached plan (the same request "
            "asked before) does not run its steps that change things again.",
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Do one request end to end: a planner turns it into a plan of tool steps, checks it
    against the tools, runs it step by step and shows the answer; exit 1 if it failed."""
    from agentos.agents.ask import ask as ask_planner
    from agentos.scheduler.display import NullDisplay

    cfg = _load_config(config, Path("agents.yaml"))
    db_path = _db_path(db, cfg)
    outcome = _run_async(
        ask_planner(
            request,
            config=cfg,
            store_path=db_path,
            display=NullDisplay(),
            tools=tool,
            fresh=fresh,
        )
    )
    if as_json:
        data = {
            **dataclasses.asdict(outcome),
            "verified": outcome.verified,
            "unverified": outcome.unverified,
        }
        print(json.dumps(data, indent=2, default=str))
    else:
        for number, step in enumerate(outcome.steps, 1):
            shown = step.error or json.dumps(step.output, default=str)[:200]
            console.print(
                f"[dim]step {number}:[/] {step.tool} {json.dumps(step.arguments)} → {shown}",
                highlight=False,
            )
        if outcome.status == "succeeded":
            answer = outcome.answer
            text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
            console.print(f"[bold green]{text}[/]")
            if outcome.verified:
                checks = "; ".join(f"step {n}: {s.check}" for n, s in enumerate(outcome.steps, 1))
                console.print(f"[dim]verified: {checks}[/]", highlight=False)
            else:
                console.print(
                    f"[yellow]not verified[/]: {'; '.join(outcome.unverified)}", highlight=False
                )
            if outcome.plan_cached:
                console.print(
                    "[dim]plan from the response cache; its steps ran anew (--fresh plans "
                    "anew too)[/]"
                )
        else:
            console.print(f"[red]{outcome.status}[/]: {outcome.error}")
        console.print(f"[dim]run {outcome.run_id}[/]")
    if outcome.status != "succeeded":
        raise typer.Exit(1)


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


def _embedder_line(cfg: Any, store: Any, model: list[str | None]) -> str:
    """``agentos engines``' line about background[embeddings]: its model, the vector
    store and how it ranks, and how much is embedded and pending."""
    from agentos.memory import VectorStoreError, backlog_status, open_vector_store

    if not cfg.embeddings.enabled:
        return "background[embeddings]: off (embeddings.enabled is false)"
    if not model or model[0] is None:
        return "background[embeddings]: off (no engine serves embeddings)"
    try:
        vectors = open_vector_store(cfg.vector_store, store)
        try:
            status = _run_async(backlog_status(store, model[0], vectors))
        finally:
            vectors.close()
    except VectorStoreError as exc:
        return f"background[embeddings]: model {model[0]}; {exc}"
    counts = status.counts
    line = (
        f"background[embeddings]: model {status.model}, vector store {status.vector_store}; "
        f"{counts.embedded} records embedded, {counts.pending} pending"
    )
    if counts.pending:
        line += " (`agentos embed` embeds them now)"
    return line


@app.command("search")
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

    cfg = _load_config(config, Path("agents.yaml"))
    db_path = _db_path(db, cfg)
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

    rows = _run_async(find())
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


@app.command("embed")
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

    cfg = _load_config(config, Path("agents.yaml"))
    db_path = _db_path(db, cfg)
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

    status = _run_async(embed())
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


@app.command()
def top(db: DbOption = None) -> None:
    """The live dashboard: jobs, queue, engines, processes and runs of every agentos running
    on the database (q quits; the footer shows the keys)."""
    from agentos.tui.app import run_top

    run_top(_db_path(db))


@app.command()
def audit(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run (a unique prefix will do).")
    ],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check that a run's recorded events and outputs (results, model answers, tool
    outputs) are complete and untouched; exit 1 when something was edited, deleted or
    added, or when the run cannot be verified (keyed: set AGENTOS_AUDIT_KEY)."""
    from agentos.replay.audit import audit_run
    from agentos.store import Store

    db_path = _existing_db(db)
    with Store(db_path, readonly=True) as store:
        report = audit_run(store, run_id)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        if not report.ok:
            raise typer.Exit(1)
        return
    kinds = {problem.kind for problem in report.problems}
    outputs = ", ".join(f"{count} {table}" for table, count in report.outputs.items())
    subject = f"run {report.run_id}: {report.events} events, {outputs or 'no outputs'}"
    keyed = " (keyed)" if report.keyed and report.ok else ""
    if report.ok and report.outputs_covered:
        console.print(f"[green]ok[/] {subject}, chain intact{keyed}")
    elif report.ok:
        console.print(f"[yellow]events intact, outputs not covered[/] {subject}{keyed}")
    elif report.legacy:
        console.print(
            f"[yellow]cannot be verified[/] run {report.run_id}: recorded before the audit "
            "trail existed"
        )
    elif kinds == {"keyed"}:
        console.print(
            f"[yellow]cannot be verified[/] run {report.run_id}: its audit trail is keyed"
        )
    elif kinds == {"wrong_key"}:
        console.print(f"[red]does not verify[/] run {report.run_id} with this key")
    elif kinds == {"unkeyed"}:
        console.print(f"[yellow]not keyed[/] {subject}")
    else:
        console.print(f"[red]tampered[/] {subject}")
    for problem in report.problems:
        if not report.legacy:
            console.print(f"  [red]{problem.kind}[/]: {problem.detail}", soft_wrap=True)
        else:
            console.print(f"  {problem.detail}", soft_wrap=True)
    for note in report.notes:
        console.print(f"[dim]{note}[/]", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    table: Annotated[
        str,
        typer.Option(
            "--table",
            "-t",
            metavar="TABLE",
            help="runs, events, llm_calls, tool_calls or results.",
        ),
    ] = "runs",
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="csv or jsonl.")] = (
        "jsonl"
    ),
    agent: Annotated[
        str | None, typer.Option("--agent", metavar="NAME", help="Only this agent.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only runs started since WHEN: 2026-11-01, an ISO time, or an age such as 7d.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Stream a table out as CSV or JSON lines (constant memory, any size)."""
    from agentos.store.export import EXPORT_FORMATS, EXPORT_TABLES, export_table, parse_since

    if table not in EXPORT_TABLES:
        raise SpecError(f"--table {table!r} is not one of {', '.join(EXPORT_TABLES)}")
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    since_ts = parse_since(since) if since else None
    db_path = _existing_db(db)
    kwargs: dict[str, Any] = {"table": table, "fmt": fmt, "agent": agent, "since": since_ts}
    if output is None:
        export_table(db_path, out=sys.stdout, **kwargs)
    else:
        with open(output, "w", newline="", encoding="utf-8") as out:
            rows = export_table(db_path, out=out, **kwargs)
        err_console.print(f"wrote {rows} rows to {output}")


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="AGE", help="Delete runs started more than AGE ago (e.g. 30d)."
        ),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last", metavar="N", help="Keep the newest N runs (per agent with --agent)."
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", metavar="NAME", help="Only this agent.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; change nothing.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete whole old runs with everything that belongs to them, then reclaim the space."""
    from agentos.router.cache import parse_duration
    from agentos.store import Store
    from agentos.store.retention import prune_runs

    seconds = parse_duration(older_than, key="--older-than") if older_than else None
    db_path = _existing_db(db)
    with Store(db_path) as store:
        report = prune_runs(
            store, older_than_s=seconds, keep_last=keep_last, agent=agent, dry_run=dry_run
        )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    verb = "would delete" if report.dry_run else "deleted"
    rows = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n)
    console.print(f"{verb} {len(report.run_ids)} runs" + (f" ({rows})" if rows else ""))
    if report.running_kept:
        console.print(f"[dim]kept {report.running_kept} runs still running[/]")
    if not report.dry_run and report.bytes_before:
        console.print(f"[dim]database {report.bytes_before:,} → {report.bytes_after:,} bytes[/]")
    for warning in report.warnings:
        console.print(f"[yellow]{warning}[/]")


def _existing_db(db: Path | None) -> Path:
    db_path = _db_path(db)
    if not db_path.exists():
        raise SpecError(f"no database at {db_path} (nothing has run yet?)")
    return db_path


schedule_app = typer.Typer(
    help="Scheduled agents in cron, launchd or systemd: each fire calls "
    "`agentos run AGENTS --agent NAME --once`.",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="BACKEND",
        help="cron, launchd or systemd (default: launchd on macOS, else cron).",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be written; change nothing.")
]


def _schedule_plan(agents: Path, config: Path | None, db: Path | None, backend: str | None) -> Any:
    from agentos.schedule import BACKENDS, default_backend, plan_schedule
    from agentos.spec.agents import load_agents

    chosen = backend or default_backend()
    if chosen not in BACKENDS:
        raise SpecError(f"--backend {chosen!r} is not one of {', '.join(BACKENDS)}")
    agents_file = load_agents(agents)
    cfg = _load_config(config, agents)
    cfg_path = _config_path(config, agents)
    return plan_schedule(
        agents_file,
        backend=chosen,
        db_path=_db_path(db, cfg).resolve(),
        config_path=cfg_path.resolve() if cfg_path else None,
    )


def _print_install(report: Any) -> None:
    for change in report.changes:
        console.print(f"[bold]{change.action}[/] {change.target}")
        if report.dry_run and change.content:
            console.print(change.content, markup=False, highlight=False)
    for problem in report.problems:
        console.print(f"[red]not installed[/] {problem.agent}: {problem.reason}")
    for note in report.notes:
        console.print(f"[dim]{note}[/]")


@schedule_app.command("show")
def schedule_show(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
    backend: BackendOption = None,
) -> None:
    """What would be installed for the scheduled agents, and what is installed now."""
    from agentos.schedule import show

    print(show(_schedule_plan(agents, config, db, backend)))


@schedule_app.command("install")
def schedule_install(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
    backend: BackendOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Install (or update) an entry per scheduled agent; idempotent. Exit 1 when an
    agent's schedule cannot be expressed by the backend (it is reported, not changed)."""
    from agentos.schedule import install

    report = install(_schedule_plan(agents, config, db, backend), dry_run=dry_run)
    _print_install(report)
    if report.problems:
        raise typer.Exit(1)


@schedule_app.command("uninstall")
def schedule_uninstall(
    agents: AgentsArgument = Path("agents.yaml"),
    backend: BackendOption = None,
    every_file: Annotated[
        bool, typer.Option("--all", help="Remove the entries of every agents file.")
    ] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Remove agentos's own entries (of AGENTS, or --all); the user's others stay."""
    from agentos.schedule import BACKENDS, default_backend, uninstall

    chosen = backend or default_backend()
    if chosen not in BACKENDS:
        raise SpecError(f"--backend {chosen!r} is not one of {', '.join(BACKENDS)}")
    report = uninstall(
        None if every_file else agents.resolve(),
        backend=chosen,
        dry_run=dry_run,
    )
    _print_install(report)


cache_app = typer.Typer(
    help="The response cache: every model request is looked up here before an engine is asked.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """How many answers the cache holds, how often they were used, and how big it is."""
    from agentos.router.cache import cache_stats
    from agentos.store import Store

    with Store(_db_path(db)) as store:
        stats = cache_stats(store)
    data = dataclasses.asdict(stats)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(
        f"{stats.entries} answers, {stats.hits} hits, {stats.bytes / 1e6:.1f} MB, "
        f"{stats.expired} expired; oldest {_fmt_time(stats.oldest)}, "
        f"newest {_fmt_time(stats.newest)}"
    )
    for model, count in sorted(stats.by_model.items()):
        console.print(f"  {model}: {count}")


@cache_app.command("clear")
def cache_clear_command(db: DbOption = None) -> None:
    """Delete every cached answer."""
    from agentos.router.cache import clear_cache
    from agentos.store import Store

    with Store(_db_path(db)) as store:
        removed = clear_cache(store)
    console.print(f"removed {removed} cached answers")


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
    """Remove expired cached answers (and, with --older-than, old ones)."""
    from agentos.router.cache import parse_duration, prune_cache
    from agentos.store import Store

    seconds = parse_duration(older_than, key="--older-than") if older_than else None
    with Store(_db_path(db)) as store:
        removed = prune_cache(store, older_than_s=seconds)
    console.print(f"removed {removed} cached answers")


def _show_error(exc: AgentosError) -> None:
    err_console.print(
        Panel(exc.message, title=exc.title, title_align="left", border_style="red", expand=False)
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
        sys.exit(2)
    except BaseExceptionGroup as group:
        # An error inside a task group (e.g. an agent's run) arrives wrapped; show the first
        # of ours, and let anything else through as the bug it is.
        ours = _first_agentos_error(group)
        if ours is None or raise_errors:
            raise
        _show_error(ours)
        sys.exit(2)
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
