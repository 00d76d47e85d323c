"""What a task agent's results are: the period a run is for, and the items and their keys.

A task run stores each item its function returns under (agent, period, item key), unique
in ``task_results``; these functions decide the period and the key, so two runs for the
same slot, in any two processes, agree on both.

The period says which slot a run is for, in this order:

1. the ``period`` variable (any string), when the scheduler or the user gives one;
2. else the ``fire_time`` variable (the scheduled fire's time, epoch seconds or a
   datetime, or an already formatted string) as an ISO timestamp to the second in the
   agent's ``life_cycle.timezone`` (local time, with its UTC offset, when unset), so the
   same fire gives the same text in a daemon and in a ``cron`` call;
3. else the date the run started (``YYYY-MM-DD``, same time zone rule): a single-shot
   collector run twice on one day stores its items once.

An item's key is its ``id`` field when it has one (a string as is, anything else as
JSON), else ``sha256:`` and 32 hex digits of its canonical JSON, so identical items
without an id are one item.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from agentos.errors import AgentosError
from agentos.spec.agents import AgentSpec


class TaskResultError(AgentosError):
    """A task function returned something that cannot be stored as results."""

    title = "unusable task result"


PERIOD_VARIABLE = "period"
"""Variable a scheduler may set to name the run's period outright."""

FIRE_TIME_VARIABLE = "fire_time"
"""Variable a scheduler sets to the fire's time (epoch seconds or a datetime)."""


def task_period(spec: AgentSpec, variables: dict[str, Any], started_at: float) -> str:
    """The period a run is for, from its variables or its start time (see the module
    docstring for the order)."""
    period = variables.get(PERIOD_VARIABLE)
    if period is not None:
        return str(period)
    zone = _zone(spec)
    fire = variables.get(FIRE_TIME_VARIABLE)
    if fire is None:
        return _moment(started_at, zone).date().isoformat()
    if isinstance(fire, str):
        return fire
    if isinstance(fire, datetime):
        if fire.tzinfo is None and zone is not None:
            fire = fire.replace(tzinfo=zone)
        return fire.astimezone(zone).isoformat(timespec="seconds")
    if isinstance(fire, int | float) and not isinstance(fire, bool):
        return _moment(float(fire), zone).isoformat(timespec="seconds")
    raise ValueError(f"the {FIRE_TIME_VARIABLE!r} variable is a {type(fire).__name__}")


def item_key(item: Any) -> str:
    """An item's key within its period: its ``id`` field, else a hash of its content."""
    if isinstance(item, dict) and item.get("id") is not None:
        identity = item["id"]
        return identity if isinstance(identity, str) else json.dumps(identity, sort_keys=True)
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def result_items(value: Any, spec: AgentSpec) -> list[Any]:
    """The items of what a task function returned: a list (or tuple), a dict, or None.

    Raises TaskResultError for anything else, or for items that are not JSON, naming the
    agent and what came back.
    """
    if value is None:
        return []
    if isinstance(value, dict):
        items: list[Any] = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise TaskResultError(
            f"agent '{spec.name}': '{spec.run}' returned a {type(value).__name__}; a task "
            "returns a list of items, one item (a dict), or None"
        )
    for index, item in enumerate(items):
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TaskResultError(
                f"agent '{spec.name}': item {index} returned by '{spec.run}' is not JSON: {exc}"
            ) from None
    return items


def _zone(spec: AgentSpec) -> tzinfo | None:
    name = spec.life_cycle.timezone
    return ZoneInfo(name) if name else None


def _moment(epoch: float, zone: tzinfo | None) -> datetime:
    """``epoch`` in ``zone``, or in local time (with its offset) when ``zone`` is None."""
    if zone is None:
        return datetime.fromtimestamp(epoch).astimezone()
    return datetime.fromtimestamp(epoch, zone)
