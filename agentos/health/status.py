"""``agentos status``: how each daemon is doing, and the watchdog for gone ones.

A daemon's *verdict*, worst first:

- ``crashed``: its process is gone without a word (:mod:`agentos.store.owners` proves
  it); ``stopped``: it ended (Ctrl-C, or a ``--once`` call that is done) — for a
  perpetual agent that is a state, not a problem;
- ``missed``: a scheduled agent whose next fire is more than the fire grace
  (:data:`agentos.scheduler.fires.GRACE_S`) in the past with no run since;
- ``failing``: its last run failed (``failures`` in a row);
- ``ok``.

With ``--alert`` (for cron: ``*/5 * * * * agentos status --alert``) the status also sets
off ``missed`` for scheduled agents that missed a fire, and ``stopped`` for perpetual
agents whose process crashed, each once (:meth:`Alerts.already_sent`): a process that
is gone cannot alert about itself.
"""

from __future__ import annotations

import time
from typing import Any

from agentos.health.alerts import Alert, Alerts
from agentos.scheduler.fires import GRACE_S
from agentos.store import Store, owners

VERDICT_ORDER = ("crashed", "missed", "failing", "stopped", "ok")


def daemon_status(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Every daemon's row with its process state, verdict and last alert, by agent."""
    owners.sweep(store)
    now = time.time() if now is None else now
    cursor = store.db.execute(
        "SELECT h.*, o.status AS process, o.pid AS pid, o.host AS host, "
        "(SELECT a.kind || ' ' || a.status || ' at ' || "
        "strftime('%Y-%m-%d %H:%M:%S', a.created_at, 'unixepoch', 'localtime') "
        " FROM alerts a WHERE a.agent = h.agent ORDER BY a.created_at DESC LIMIT 1) "
        "AS last_alert "
        "FROM agent_health h LEFT JOIN owners o ON o.id = h.owner ORDER BY h.agent"
    )
    names = [c[0] for c in cursor.description]
    rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    for row in rows:
        row["verdict"] = verdict(row, now)
    return rows


def verdict(row: dict[str, Any], now: float) -> str:
    process = row.get("process") or "crashed"
    if process == "crashed":
        return "crashed"
    if missed_fire(row, now):
        return "missed"
    if row.get("consecutive_failures"):
        return "failing"
    if process != "live":
        return "stopped"
    return "ok"


def missed_fire(row: dict[str, Any], now: float) -> bool:
    """A scheduled agent's next fire is past its grace, and no run came since."""
    fire = row.get("next_fire_at")
    if row.get("life_cycle") != "scheduled" or fire is None:
        return False
    return now > fire + GRACE_S and (row.get("updated_at") or 0) < fire


async def watchdog(store: Store, alerts: Alerts, rows: list[dict[str, Any]]) -> list[Alert]:
    """Set off the alerts ``rows`` call for (module docstring); the alerts sent."""
    sent = []
    for row in rows:
        agent = row["agent"]
        if row["verdict"] == "missed":
            fire = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["next_fire_at"]))
            gone = {"live": "its daemon is running but did not fire it"}.get(
                row.get("process") or "", f"its daemon's process is {row.get('process')}"
            )
            alert = Alert(
                agent=agent,
                kind="missed",
                message=f"{agent} missed its fire at {fire}: {gone}",
                ref=f"missed:{row['next_fire_at']}",
            )
        elif row["verdict"] == "crashed" and row["life_cycle"] == "perpetual":
            beat = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["heartbeat_at"] or 0))
            alert = Alert(
                agent=agent,
                kind="stopped",
                message=f"{agent}'s daemon is gone (last heartbeat {beat}, pid {row['pid']})",
                ref=f"stopped:{row['owner']}",
            )
        else:
            continue
        if not alerts.rules_for(alert) or alerts.already_sent(alert):
            continue
        await alerts.send(alert)
        sent.append(alert)
    await store.aflush()
    return sent
