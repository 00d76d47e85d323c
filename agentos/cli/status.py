"""``agentos status``: how each daemon (perpetual or scheduled agent) is doing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentos.cli.common import (
    DbOption,
    JsonOption,
    console,
    err_console,
    existing_database,
    read_config,
    run_async,
)

_STYLE = {"ok": "green", "stopped": "dim", "failing": "red", "missed": "red", "crashed": "bold red"}


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, now - ts)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def status(
    db: DbOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="config.yaml with the alerts (default: $AGENTOS_CONFIG, else ./config.yaml).",
            envvar="AGENTOS_CONFIG",
            show_envvar=False,
        ),
    ] = None,
    alert: Annotated[
        bool,
        typer.Option(
            "--alert",
            help="Also set off the alerts of config.yaml for daemons that missed a fire or "
            "whose process is gone, each once (run it from cron as a watchdog).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show each daemon's heartbeat, last success and failures in a row; exit 1 when one
    is not ok.

    A daemon is a perpetual or scheduled agent. Its verdict: `ok`; `failing` (its last
    run failed); `missed` (a scheduled fire is overdue by more than a minute); `stopped`
    (its process ended); `crashed` (its process is gone without a word). `alerts:` in
    config.yaml runs a command or posts to a webhook when an agent fails N runs in a row or
    misses a fire; the last alert of each agent is shown.
    """
    from agentos.health.alerts import Alerts
    from agentos.health.status import daemon_status, watchdog
    from agentos.store import Store

    here = Path("config.yaml")
    cfg = read_config(config or (here if here.is_file() else None), None)
    if alert and not cfg.alerts:
        err_console.print(
            "no alerts: in the config (--config, $AGENTOS_CONFIG or ./config.yaml), so "
            "--alert has nowhere to send them"
        )
    db_path = existing_database(db)
    now = time.time()
    with Store(db_path) as store:
        rows = daemon_status(store, now)
        sent = []
        if alert:
            sent = run_async(watchdog(store, Alerts(store, cfg.alerts), rows))
            if sent:
                rows = daemon_status(store, now)
    if as_json:
        console.print_json(
            json.dumps({"daemons": rows, "alerts_sent": [a.payload() for a in sent]}, default=str)
        )
    else:
        _print(rows, now, sent)
    if any(row["verdict"] not in ("ok", "stopped") for row in rows):
        raise typer.Exit(1)


def _print(rows: list[dict[str, Any]], now: float, sent: list[Any]) -> None:
    if not rows:
        console.print(
            "no daemons yet: perpetual and scheduled agents report here once `agentos run` "
            "drives them"
        )
        return
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("agent", "cycle", "verdict", "heartbeat", "last ok", "fails", "next fire"):
        table.add_column(column, no_wrap=column in ("agent", "verdict"))
    table.add_column("last error / alert", overflow="fold")
    for row in rows:
        verdict = row["verdict"]
        note = row["last_error"] if row["consecutive_failures"] else None
        if note and len(note) > 100:
            note = note[:99] + "…"
        note = " · ".join(x for x in (note, row["last_alert"]) if x) or "-"
        table.add_row(
            row["agent"],
            row["life_cycle"],
            f"[{_STYLE.get(verdict, '')}]{verdict}[/]",
            _ago(row["heartbeat_at"], now),
            _ago(row["last_success_at"], now),
            str(row["consecutive_failures"] or 0),
            _when(row["next_fire_at"]) if row["life_cycle"] == "scheduled" else "-",
            note,
        )
    console.print(table)
    for alert in sent:
        console.print(f"alert sent: {alert.message}", highlight=False)
