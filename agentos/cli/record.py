"""Looking at the record: ``runs``, ``replay``, ``audit``, ``export``, ``prune``,
``sinks`` and the live ``top``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentos.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    SinceOption,
    console,
    database,
    err_console,
    existing_database,
    fmt_time,
    read_config,
    run_async,
)
from agentos.errors import SpecError


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
            help="Only runs with this status (running, succeeded, failed, cancelled, crashed).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent runs, newest first.

    A run is shown by the shortest prefix of its id that no other run shares (what
    `agentos replay` takes); `cached` is how many of the run's answers came from the
    response cache (a re-run of a single-shot agent is served from it). A run whose
    process is gone (killed, crashed, its host silent) is marked `crashed` first, with the
    time it was last seen."""
    from agentos.errors import StoreError
    from agentos.store import Store, owners, queries

    if status is not None and status not in queries.RUN_STATUSES:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(queries.RUN_STATUSES)}", param_hint="--status"
        )
    store = Store(database(db))
    try:
        with contextlib.suppress(StoreError):  # a full disk must not hide the list
            owners.sweep(store)
        rows = owners.crashed_view(
            store, queries.list_runs(store, agent=agent, status=status, limit=limit)
        )
        rows = [r for r in rows if status is None or r["status"] == status]
        ids = [r["id"] for r in rows]
        prefixes = queries.unique_prefixes(store, ids)
        calls = queries.model_calls_of(store, ids)
    finally:
        with contextlib.suppress(StoreError):
            store.close()
    for r in rows:
        r["answers"], r["cache_hits"] = calls.get(r["id"], (0, 0))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=None, box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    width = max((len(p) for p in prefixes.values()), default=3)
    table.add_column("run", no_wrap=True, min_width=width)
    # at 80 columns the essentials stay whole on one line; the error takes what is left
    agent_width = min(max((len(r["agent"]) for r in rows), default=5), 24)
    table.add_column("agent", no_wrap=True, min_width=agent_width, overflow="ellipsis")
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("good", no_wrap=True)
    table.add_column("tries", no_wrap=True, justify="right")
    table.add_column("cached", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", no_wrap=True, justify="right")
    table.add_column("error", overflow="fold", ratio=1)
    today = time.strftime("%Y-%m-%d")
    for r in rows:
        took = (
            f"{r['finished_at'] - r['started_at']:.1f}s"
            if r.get("finished_at") and r.get("started_at")
            else "-"
        )
        colour = {
            "succeeded": "green",
            "failed": "red",
            "crashed": "red",
            "running": "yellow",
        }.get(r["status"], "")
        cached = f"{r['cache_hits']}/{r['answers']}" if r["answers"] else "-"
        error = r.get("error") or ""
        if r["status"] == "crashed" and r.get("last_seen_at"):
            error = f"last seen {fmt_time(r['last_seen_at'])}; {error}"
        table.add_row(
            prefixes[r["id"]],
            r["agent"],
            f"[{colour}]{r['status']}[/]" if colour else r["status"],
            f"{r.get('successes') or 0}/{r.get('wanted') or 0}",
            str(r.get("attempts") or 0),
            f"[cyan]{cached}[/]" if r["cache_hits"] else cached,
            _short_time(r.get("started_at"), today),
            took,
            error[:90],
        )
    if not rows:
        console.print("no runs yet")
        return
    console.print(table)


def _short_time(ts: float | None, today: str) -> str:
    """A start time as narrow as it can be read: the time alone for today's runs."""
    shown = fmt_time(ts)
    return shown[11:] if shown.startswith(today) else shown[:16]


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
    from agentos.replay.reexec import replay_exact, replay_live_on_engines
    from agentos.replay.render import print_report, print_timeline
    from agentos.replay.timeline import build_timeline
    from agentos.scheduler.display import NullDisplay
    from agentos.store import Store

    if mode not in ("view", "exact", "live"):
        raise typer.BadParameter(f"{mode!r} is not one of view, exact, live", param_hint="MODE")
    db_path = database(db)
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
            report = run_async(replay_exact(store, run_id, NullDisplay()))
        else:
            cfg = read_config(config, None)
            report = run_async(
                replay_live_on_engines(store, run_id, cfg, NullDisplay(), from_step=from_step)
            )
    if as_json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print_report(report, console)
    if not report.reproduced and mode == "exact":
        raise typer.Exit(1)
    if mode == "live" and report.outcome is not None and report.outcome.status != "succeeded":
        raise typer.Exit(1)


def audit(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN_ID]",
            help="The run (a unique prefix will do); leave out to audit every run.",
        ),
    ] = None,
    db: DbOption = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", metavar="NAME", help="Without RUN_ID: only this agent's runs."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Without RUN_ID: only runs started since WHEN (2026-11-01, an ISO time, 7d).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check that a run's recorded events and outputs (results, model answers, tool
    outputs) are complete and untouched; exit 1 when something was edited, deleted or
    added, or when the run cannot be verified (keyed: set AGENTOS_AUDIT_KEY). Without
    RUN_ID, every run is checked: the runs that do not verify are shown, then a count."""
    from agentos.replay.audit import audit_run, audit_runs
    from agentos.store import Store
    from agentos.store.export import parse_since

    db_path = existing_database(db)
    if run_id is not None and (agent is not None or since is not None):
        raise typer.BadParameter("give a RUN_ID or --agent/--since, not both", param_hint="--agent")
    with Store(db_path, readonly=True) as store:
        if run_id is not None:
            report = audit_run(store, run_id)
            if as_json:
                print(json.dumps(report.to_json(), indent=2))
            else:
                _print_audit(report)
            if not report.ok:
                raise typer.Exit(1)
            return
        try:
            after = parse_since(since) if since is not None else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--since") from exc
        checked = verified = uncovered = 0
        for report in audit_runs(store, agent=agent, since=after):
            checked += 1
            if report.ok:
                verified += 1
                uncovered += not report.outputs_covered
            if as_json:
                print(json.dumps(report.to_json()))
            elif not report.ok:
                _print_audit(report)
    failed = checked - verified
    if not as_json:
        summary = f"{checked} runs audited: {verified} verified, {failed} not"
        if uncovered:
            summary += f" ({uncovered} of the verified recorded before outputs were covered)"
        console.print(("[green]" if not failed else "[red]") + summary + "[/]")
    if failed:
        raise typer.Exit(1)


def _print_audit(report: Any) -> None:
    """One run's audit, as ``agentos audit RUN_ID`` shows it."""
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
    since: SinceOption = None,
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
    db_path = existing_database(db)
    kwargs: dict[str, Any] = {"table": table, "fmt": fmt, "agent": agent, "since": since_ts}
    if output is None:
        export_table(db_path, out=sys.stdout, **kwargs)
    else:
        with open(output, "w", newline="", encoding="utf-8") as out:
            rows = export_table(db_path, out=out, **kwargs)
        err_console.print(f"wrote {rows} rows to {output}")


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
    db_path = existing_database(db)
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
    db_path = existing_database(db)
    with Store(db_path, readonly=True) as store:
        rows = sink_stats(store, readers=readers)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        console.print("no sinks yet")
    else:
        console.print(sinks_table(rows))


def top(db: DbOption = None) -> None:
    """The live dashboard: jobs, queue, engines, processes and runs of every agentos running
    on the database (q quits; the footer shows the keys)."""
    from agentos.tui.app import run_top

    run_top(database(db))
