"""Running agents: ``run``, ``validate`` and ``ask``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentos.cli.common import (
    AgentsArgument,
    ConfigOption,
    DbOption,
    JsonOption,
    config_file,
    console,
    database,
    read_config,
    run_async,
)
from agentos.errors import SpecError

if TYPE_CHECKING:
    from agentos.spec.config import Config


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--var expects NAME=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


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
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="ADDRESS",
            help="Run on a Ray cluster: auto, ray://HOST:PORT or HOST:PORT "
            "(overrides cluster.address of config.yaml; needs agentos[ray]).",
        ),
    ] = None,
) -> None:
    """Run the agents of AGENTS; exit 1 when a run failed."""
    from agentos.scheduler.display import PlainDisplay, RichDisplay
    from agentos.scheduler.runner import run_agents, select_agents
    from agentos.spec import check_agent_kinds, check_agents_against_config
    from agentos.spec.agents import load_agents

    agents_file = load_agents(agents)
    cfg = read_config(config, agents)
    if cluster is not None:
        cfg = _on_cluster(cfg, cluster)
    check_agents_against_config(agents_file, cfg)
    check_agent_kinds(agents_file, agents, cfg)
    selected = select_agents(agents_file, agent or [])
    variables = _parse_vars(var or [])
    db_path = database(db, cfg)
    live = sys.stdout.isatty() and not plain
    display = RichDisplay(console) if live else PlainDisplay()
    from agentos.scheduler.runner import check_renderable

    check_renderable(selected, variables, str(agents))
    try:
        outcomes = run_async(
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


def _on_cluster(cfg: Config, address: str) -> Config:
    """``cfg`` with ``cluster.address`` set to ``--cluster``'s value (checked)."""
    from pydantic import ValidationError

    from agentos.spec.config import ClusterConfig

    try:
        settings = ClusterConfig.model_validate({**cfg.cluster.model_dump(), "address": address})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise SpecError(f"--cluster {address!r}: {reason}") from None
    return cfg.model_copy(update={"cluster": settings})


def validate(
    agents: AgentsArgument = Path("agents.yaml"),
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Check AGENTS and the config file without running anything (nothing is written)."""
    from agentos.scheduler.runner import check_renderable
    from agentos.spec import check_agent_kinds, check_agents_against_config
    from agentos.spec.agents import load_agents

    agents_file = load_agents(agents)
    cfg = read_config(config, agents)
    check_agents_against_config(agents_file, cfg)
    check_agent_kinds(agents_file, agents, cfg)
    check_renderable(agents_file.agents, {}, str(agents))
    cfg_path = config_file(config, agents)
    engines = ", ".join(e.name for e in cfg.engines) or "the bundled local engine"
    console.print(
        f"[green]ok[/] {agents}: {len(agents_file.agents)} agent(s) "
        f"({', '.join(a.name for a in agents_file.agents)}); "
        f"config {cfg_path or '(defaults)'}: engines {engines}; "
        f"database {database(db, cfg)}"
    )


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

    cfg = read_config(config, Path("agents.yaml"))
    db_path = database(db, cfg)
    outcome = run_async(
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
            cached = " [dim](from the tool cache)[/]" if step.cache_hit else ""
            console.print(
                f"[dim]step {number}:[/] {step.tool} {json.dumps(step.arguments)}{cached} → "
                f"{shown}",
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
