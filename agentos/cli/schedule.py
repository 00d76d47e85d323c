"""``schedule``: the scheduled agents in cron, launchd or systemd."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentos.cli.common import (
    AgentsArgument,
    ConfigOption,
    DbOption,
    config_file,
    console,
    database,
    read_config,
)
from agentos.errors import SpecError

schedule_app = typer.Typer(
    help="Scheduled agents in cron, launchd or systemd: each fire calls "
    "`agentos run AGENTS --agent NAME --once`.",
    no_args_is_help=True,
)
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
LocalTimeOption = Annotated[
    bool,
    typer.Option(
        "--local-time",
        help="cron and launchd: translate an agent's timezone that differs from this "
        "machine's into local time (started at each local time a fire can have across "
        "daylight-saving changes; `run --once` runs each fire once), instead of refusing it.",
    ),
]


def _schedule_plan(
    agents: Path,
    config: Path | None,
    db: Path | None,
    backend: str | None,
    local_time: bool = False,
) -> Any:
    from agentos.schedule import BACKENDS, default_backend, plan_schedule
    from agentos.spec.agents import load_agents

    chosen = backend or default_backend()
    if chosen not in BACKENDS:
        raise SpecError(f"--backend {chosen!r} is not one of {', '.join(BACKENDS)}")
    agents_file = load_agents(agents)
    cfg = read_config(config, agents)
    cfg_path = config_file(config, agents)
    return plan_schedule(
        agents_file,
        backend=chosen,
        db_path=database(db, cfg).resolve(),
        config_path=cfg_path.resolve() if cfg_path else None,
        local_time=local_time,
    )


def _print_install(report: Any) -> None:
    for change in report.changes:
        console.print(f"[bold]{change.action}[/] {change.target}")
        if report.dry_run and change.content:
            console.print(change.content, markup=False, highlight=False)
    for problem in report.problems:
        console.print(f"[red]not installed[/] {problem.agent}: {problem.reason}")
    for note in report.notes:
        console.print(f"[dim]{note}[/]", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)


@schedule_app.command("show")
def schedule_show(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
    backend: BackendOption = None,
    local_time: LocalTimeOption = False,
) -> None:
    """What would be installed for the scheduled agents, and what is installed now."""
    from agentos.schedule import show

    print(show(_schedule_plan(agents, config, db, backend, local_time)))


@schedule_app.command("install")
def schedule_install(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
    backend: BackendOption = None,
    dry_run: DryRunOption = False,
    local_time: LocalTimeOption = False,
) -> None:
    """Install (or update) an entry per scheduled agent; idempotent. Exit 1 when an
    agent's schedule cannot be expressed by the backend (it is reported, not changed;
    a time zone that differs from the machine's can be translated with --local-time)."""
    from agentos.schedule import install

    report = install(_schedule_plan(agents, config, db, backend, local_time), dry_run=dry_run)
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
