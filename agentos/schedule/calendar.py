"""Cron expressions in the forms that cron, launchd and systemd take.

At run time croniter reads an agent's ``life_cycle.cron`` (the daemon and the ``--once``
call that cron starts both decide with it which fire is due), so croniter's reading is the
reference here too: :func:`parse_cron` keeps croniter's expansion of the expression as
explicit value sets, and every backend is written from those sets, never from the text.
That keeps the three renderings equal to the reference, including the rule that trips
people up — when both day-of-month and day-of-week are restricted, a day matches when
*either* does (croniter's ``day_or``, cron's documented rule):

- Vixie cron (Debian's) calls a day field unrestricted when its text *starts* with ``*``,
  so ``*/2`` would mean AND there; written as the expanded numbers (``1,3,5,…``) it means
  what croniter means. Its man page also forbids names in ranges; numbers avoid that too.
- launchd's ``StartCalendarInterval`` ANDs the keys of one dict and ORs a list of dicts, so
  the OR becomes one group of ``Day`` dicts and one of ``Weekday`` dicts.
- systemd ANDs weekday and date in one ``OnCalendar=``, and a timer fires on any of its
  ``OnCalendar=`` lines, so the OR becomes two lines.

What no backend gets: croniter's extensions (``L``, ``W``, ``#``, ``H``, a seconds or year
field) raise :class:`UnsupportedSchedule` and nothing is installed for that agent. Time
zones: systemd takes one per calendar; cron (Debian's has no ``CRON_TZ``) and launchd run
jobs in the machine's local time, so a zone whose clock differs from it is reported by
the caller (see :func:`follows_local_time`), never shifted.
"""

from __future__ import annotations

import itertools
import re
import time
import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from croniter import CroniterError, croniter

from agentos.errors import AgentosError

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
"""The five cron fields, in order."""

FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
"""Inclusive value range of each field; day of week 0 is Sunday (croniter folds 7 into 0)."""

MAX_LAUNCHD_INTERVALS = 1000
"""Most ``StartCalendarInterval`` dicts written for one agent. launchd documents no limit;
past this the plist is unreadable and a ``perpetual`` agent is the better fit."""

_NAMES = re.compile(
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat",
    re.IGNORECASE,
)
_PLAIN_FIELD = re.compile(r"[0-9*?,/-]+")
_SYSTEMD_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class UnsupportedSchedule(AgentosError):
    """A cron expression, or a part of one, that a backend cannot express exactly."""

    title = "schedule not expressible"


@dataclass(frozen=True)
class CronSchedule:
    """A 5-field cron expression as sets of values, the way croniter reads it.

    A field is ``None`` when croniter reads it as ``*`` (every value, and "unrestricted"
    for the day-of-month/day-of-week rule); otherwise the sorted values it matches. A
    restricted field may still list every value (``1-31``): croniter then applies the OR
    rule all the same, and so do the renderings below.
    """

    expression: str
    minute: tuple[int, ...] | None
    hour: tuple[int, ...] | None
    day: tuple[int, ...] | None
    month: tuple[int, ...] | None
    weekday: tuple[int, ...] | None
    """0 is Sunday, 6 Saturday."""

    @property
    def fields(self) -> tuple[tuple[int, ...] | None, ...]:
        return (self.minute, self.hour, self.day, self.month, self.weekday)

    @property
    def day_or(self) -> bool:
        """Both day fields are restricted, so a day matches when either matches."""
        return self.day is not None and self.weekday is not None


def parse_cron(expression: str) -> CronSchedule:
    """``expression`` (5 fields, names and ``@daily``-style nicknames allowed) as value sets.

    Raises :class:`UnsupportedSchedule` for croniter's extensions, which cron, launchd and
    systemd do not share.
    """
    text = expression.strip()
    if not text.startswith("@"):
        parts = text.split()
        if len(parts) != 5:
            raise UnsupportedSchedule(
                f"cron expression {expression!r} has {len(parts)} fields; cron, launchd and "
                "systemd take 5 (minute hour day-of-month month day-of-week)"
            )
        for name, part in zip(FIELD_NAMES, parts, strict=True):
            if not _PLAIN_FIELD.fullmatch(_NAMES.sub("0", part)):
                raise UnsupportedSchedule(
                    f"cron expression {expression!r}: the {name} field {part!r} uses a "
                    "croniter extension (L, W, #, H) that cron, launchd and systemd lack"
                )
    try:
        expanded, nth_weekday = croniter.expand(text)
    except (CroniterError, ValueError) as exc:
        raise UnsupportedSchedule(f"cron expression {expression!r} is not valid: {exc}") from None
    if len(expanded) != 5 or nth_weekday:
        raise UnsupportedSchedule(
            f"cron expression {expression!r} uses a croniter extension that cron, launchd "
            "and systemd lack"
        )
    fields: list[tuple[int, ...] | None] = []
    for name, values in zip(FIELD_NAMES, expanded, strict=True):
        if values == ["*"]:
            fields.append(None)
        elif all(isinstance(v, int) for v in values):
            fields.append(tuple(sorted({int(v) for v in values})))
        else:
            raise UnsupportedSchedule(
                f"cron expression {expression!r}: the {name} field is not a plain set of values"
            )
    minute, hour, day, month, weekday = fields
    return CronSchedule(text, minute, hour, day, month, weekday)


def _runs(values: tuple[int, ...]) -> list[tuple[int, int]]:
    """Sorted values as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _compact(values: tuple[int, ...], dash: str, fmt: str = "{}") -> str:
    """``0,15,30`` / ``1-5`` style: runs of three or more values become ranges."""
    out: list[str] = []
    for first, last in _runs(values):
        if last - first >= 2:
            out.append(f"{fmt.format(first)}{dash}{fmt.format(last)}")
        else:
            out.extend(fmt.format(v) for v in range(first, last + 1))
    return ",".join(out)


def _is_full(values: tuple[int, ...] | None, index: int) -> bool:
    low, high = FIELD_RANGES[index]
    return values is None or values == tuple(range(low, high + 1))


def crontab_fields(schedule: CronSchedule) -> str:
    """The five time fields of a crontab line, in numbers, meaning what croniter means.

    ``*`` is written exactly where croniter reads ``*``; every other field is an explicit
    list, which Vixie cron treats as restricted whatever it covers.
    """
    return " ".join("*" if values is None else _compact(values, "-") for values in schedule.fields)


def _day_rules(schedule: CronSchedule) -> list[dict[str, int]]:
    """The day constraints as alternatives: ``[{}]`` means every day."""
    day_full = _is_full(schedule.day, 2)
    weekday_full = _is_full(schedule.weekday, 4)
    days = [{"Day": d} for d in schedule.day or ()]
    weekdays = [{"Weekday": d} for d in schedule.weekday or ()]
    if schedule.day_or:
        return [{}] if day_full or weekday_full else days + weekdays
    if schedule.day is not None and not day_full:
        return days
    if schedule.weekday is not None and not weekday_full:
        return weekdays
    return [{}]


def launchd_intervals(schedule: CronSchedule) -> list[dict[str, int]]:
    """``StartCalendarInterval`` dicts (launchd ORs them) that fire when the cron fires.

    A key left out of a dict is a wildcard, so only restricted fields are expanded; the
    product of their values can grow large (``*/5 9-17 * * 1-5`` is 540 dicts), and past
    :data:`MAX_LAUNCHD_INTERVALS` this raises :class:`UnsupportedSchedule`.
    """
    keyed: list[list[dict[str, int]]] = []
    for key, index in (("Month", 3), ("Hour", 1), ("Minute", 0)):
        values = schedule.fields[index]
        if values is not None and not _is_full(values, index):
            keyed.append([{key: v} for v in values])
    groups = [_day_rules(schedule), *keyed]
    count = 1
    for group in groups:
        count *= len(group)
    if count > MAX_LAUNCHD_INTERVALS:
        raise UnsupportedSchedule(
            f"cron expression {schedule.expression!r} would need {count} launchd "
            f"StartCalendarInterval entries (at most {MAX_LAUNCHD_INTERVALS} are written); "
            "use a coarser schedule or the cron/systemd backend"
        )
    intervals: list[dict[str, int]] = []
    for combination in itertools.product(*groups):
        merged: dict[str, int] = {}
        for part in combination:
            merged.update(part)
        intervals.append(merged)
    return intervals


def systemd_calendars(schedule: CronSchedule, timezone: str | None = None) -> list[str]:
    """``OnCalendar=`` values (a timer fires on any of them) equal to the cron expression.

    ``timezone`` (an IANA name) is appended to each, as systemd 235 and later read it.
    """

    def part(index: int, fmt: str = "{:02d}") -> str:
        values = schedule.fields[index]
        return "*" if _is_full(values, index) or values is None else _compact(values, "..", fmt)

    clock = f"{part(1)}:{part(0)}:00"
    month = part(3)
    days = part(2)
    weekdays = "*"
    if schedule.weekday is not None and not _is_full(schedule.weekday, 4):
        # systemd orders weekdays Mon..Sun, so a range never wraps through Sunday.
        order = tuple(sorted((d + 6) % 7 for d in schedule.weekday))
        weekdays = ",".join(
            _SYSTEMD_WEEKDAYS[a] if a == b else f"{_SYSTEMD_WEEKDAYS[a]}..{_SYSTEMD_WEEKDAYS[b]}"
            for a, b in _runs(order)
        )
    by_date = f"*-{month}-{days} {clock}"
    by_weekday = f"{weekdays} *-{month}-* {clock}"
    if schedule.day_or:
        every_day = "*" in (days, weekdays)
        lines = [f"*-{month}-* {clock}"] if every_day else [by_date, by_weekday]
    else:
        lines = [by_weekday if weekdays != "*" else by_date]
    return [f"{line} {timezone}" if timezone else line for line in lines]


def follows_local_time(zone: str, *, start: float | None = None, days: int = 366) -> bool:
    """Whether clocks in ``zone`` read the same as this machine's local time at every hour
    of the next ``days`` days (daylight-saving changes included).

    cron and launchd start jobs by the local clock: an agent whose ``timezone`` passes
    this check fires at the same instants either way, and one that fails it cannot be
    installed there without changing its schedule. Local time is what :mod:`time` reads
    (``TZ``, else ``/etc/localtime``), which is what the cron daemon reads too unless it
    was started with another ``TZ``.
    """
    tz = zoneinfo.ZoneInfo(zone)
    first = int(time.time() if start is None else start)
    for instant in range(first, first + days * 86400, 3600):
        offset = datetime.fromtimestamp(instant, tz).utcoffset()
        if offset is None or offset.total_seconds() != time.localtime(instant).tm_gmtoff:
            return False
    return True
