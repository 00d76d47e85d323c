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
the caller (see :func:`follows_local_time`), and shifted only when the user asks for it
(``--local-time``, :func:`local_translation`).

The translation into local time starts the job at *every* local time a fire can have:
one set of lines per difference between the zone's clock and the local clock that
occurs in the coming year (Berlin seen from UTC: 1 hour in winter, 2 in summer, so
``0 9 * * 1-5`` becomes ``0 8 * * 1-5`` and ``0 7 * * 1-5``). That is exact whatever the
daylight-saving rules of either zone and whatever the offsets (``+05:30``), because
``agentos run --once`` decides by the agent's own zone which fire is due and claims each
fire once: at the start that matches a fire it runs that fire, on time; at the other
start the latest fire is already claimed and it runs nothing ("nothing due"). Day fields
are shifted with the hours (a fire at 00:30 in Tokyo is at 15:30 on the day before in
UTC); where a shift crosses a month's end, which cron cannot name, the lines also start
on the days that could be one (28 to 31), and those starts run nothing either. What
stays inexact are fires at a clock change: in the hour that a local fall-back repeats,
cron starts a job once, so a fire in the second pass starts late, and a fire in the
hour a spring change skips in the agent's zone is due when the gap ends, which no line
names (:attr:`LocalTranslation.warnings` names these fires).
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


# -- translation into local time -------------------------------------------------------


@dataclass(frozen=True)
class LocalTranslation:
    """A schedule in one zone as schedules in this machine's local time (module docstring)."""

    zone: str
    schedules: tuple[CronSchedule, ...]
    """Read in local time, together they start the job at every fire (and at some times
    that are no fire, where ``--once`` runs nothing)."""
    differences: tuple[tuple[int, tuple[CronSchedule, ...]], ...]
    """(minutes the zone's clock is ahead of the local clock, the schedules that cover the
    fires while it is) for each difference of the coming year, in order of first
    occurrence."""
    changes: tuple[datetime, ...]
    """When the difference changes within the year (local time, to the hour)."""
    warnings: tuple[str, ...]
    """Fires that cron or launchd will not start on time (at a daylight-saving change)."""


def _offset_minutes(instant: float, tz: zoneinfo.ZoneInfo) -> int:
    zone = datetime.fromtimestamp(instant, tz).utcoffset()
    assert zone is not None
    return int(zone.total_seconds() // 60) - time.localtime(instant).tm_gmtoff // 60


def local_translation(
    schedule: CronSchedule, zone: str, *, start: float | None = None, days: int = 366
) -> LocalTranslation:
    """``schedule`` (read in ``zone``) as schedules in local time over the next ``days``.

    The difference between the clocks is sampled every 15 minutes (every offset change of
    the time zone database falls on a quarter hour), so no stretch of a year is missed.
    """
    tz = zoneinfo.ZoneInfo(zone)
    first = int(time.time() if start is None else start) // 900 * 900
    end = first + days * 86400
    order: list[int] = []
    changes: list[datetime] = []
    transitions: list[int] = []
    last: tuple[int, int] | None = None
    for instant in range(first, end, 900):
        delta = _offset_minutes(instant, tz)
        state = (delta, time.localtime(instant).tm_gmtoff)
        if state != last:
            if last is not None:
                transitions.append(instant)
                if delta != last[0]:
                    changes.append(datetime.fromtimestamp(instant).replace(minute=0, second=0))
            if delta not in order:
                order.append(delta)
            last = state
    differences = tuple((delta, tuple(shift_schedule(schedule, delta))) for delta in order)
    merged = _merged([s for _, shifted in differences for s in shifted])
    return LocalTranslation(
        zone=zone,
        schedules=tuple(merged),
        differences=differences,
        changes=tuple(changes),
        warnings=tuple(_late_fires(schedule, zone, tuple(merged), transitions)),
    )


def _merged(schedules: list[CronSchedule]) -> tuple[CronSchedule, ...]:
    """``schedules`` with those that differ only in their hours made one (their union is
    the same set of times), in order of first appearance."""
    hours: dict[tuple[object, ...], set[int]] = {}
    first: dict[tuple[object, ...], CronSchedule] = {}
    for schedule in schedules:
        rest = (schedule.minute, schedule.day, schedule.month, schedule.weekday)
        first.setdefault(rest, schedule)
        hours.setdefault(rest, set()).update(
            schedule.hour if schedule.hour is not None else range(24)
        )
    return tuple(
        CronSchedule(
            schedule.expression,
            schedule.minute,
            _full_or(hours[rest], 1),
            schedule.day,
            schedule.month,
            schedule.weekday,
        )
        for rest, schedule in first.items()
    )


def _full_or(values: set[int], index: int) -> tuple[int, ...] | None:
    result = tuple(sorted(values))
    return None if _is_full(result, index) else result


def shift_schedule(schedule: CronSchedule, delta: int) -> list[CronSchedule]:
    """``schedule`` as read on a clock ``delta`` minutes behind (local = zone − delta):
    every fire lands on a fire of the result (a superset where a month's end is crossed,
    see the module docstring). Hours that share their minutes share a schedule."""
    hours = schedule.hour if schedule.hour is not None else tuple(range(24))
    minutes = schedule.minute if schedule.minute is not None else tuple(range(60))
    by_day: dict[int, dict[int, set[int]]] = {}
    for hour in hours:
        for minute in minutes:
            day_shift, of_day = divmod(hour * 60 + minute - delta, 1440)
            by_day.setdefault(day_shift, {}).setdefault(of_day // 60, set()).add(of_day % 60)
    text = f"{schedule.expression} shifted by {-delta} min"
    out: list[CronSchedule] = []
    for day_shift, hour_minutes in sorted(by_day.items()):
        day, month, weekday = _shift_days(schedule, day_shift)
        groups: dict[tuple[int, ...], set[int]] = {}
        for hour, minute_set in sorted(hour_minutes.items()):
            groups.setdefault(tuple(sorted(minute_set)), set()).add(hour)
        for its_minutes, its_hours in groups.items():
            out.append(
                CronSchedule(
                    text,
                    _full_or(set(its_minutes), 0),
                    _full_or(its_hours, 1),
                    day,
                    month,
                    weekday,
                )
            )
    return out


def _shift_days(
    schedule: CronSchedule, shift: int
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None, tuple[int, ...] | None]:
    """(day, month, weekday) of a schedule whose times moved ``shift`` days (-2 to 2)."""
    if shift == 0:
        return schedule.day, schedule.month, schedule.weekday
    weekday = (
        None
        if schedule.weekday is None
        else tuple(sorted({(w + shift) % 7 for w in schedule.weekday}))
    )
    crosses = schedule.day is None
    day: tuple[int, ...] | None = None
    if schedule.day is not None:
        days: set[int] = set()
        for value in schedule.day:
            moved = value + shift
            if 1 <= moved <= 31:
                days.add(moved)  # the same month (when it has that day)
            if moved < 1 or (moved > 28 and shift > 0):
                crosses = True
                # the month before, of any length; or the next one, after any length
                for length in (28, 29, 30, 31):
                    candidate = moved + length if moved < 1 else moved - length
                    if 1 <= candidate <= (31 if moved < 1 else shift):
                        days.add(candidate)
        day = tuple(sorted(days))
    month = schedule.month
    if month is not None and crosses:
        month = tuple(
            sorted({*month, *(((m - 1 + (1 if shift > 0 else -1)) % 12) + 1 for m in month)})
        )
    return day, month, weekday


def matches(schedule: CronSchedule, when: datetime) -> bool:
    """Whether ``schedule`` fires at wall time ``when`` (cron's reading, day rule included)."""
    minute, hour, day, month, weekday = schedule.fields
    if minute is not None and when.minute not in minute:
        return False
    if hour is not None and when.hour not in hour:
        return False
    if month is not None and when.month not in month:
        return False
    day_ok = day is None or when.day in day
    weekday_ok = weekday is None or (when.weekday() + 1) % 7 in weekday
    return (day_ok or weekday_ok) if schedule.day_or else (day_ok and weekday_ok)


def _late_fires(
    schedule: CronSchedule,
    zone: str,
    local: tuple[CronSchedule, ...],
    transitions: list[int],
) -> list[str]:
    """Warnings for fires near a clock change that cron or launchd will not start at
    their time: a fire in the hour a zone's spring change skips (the runtime fires it
    when the gap ends, which no local line names), or one whose local time is the second
    pass of an hour this machine's clock repeats (cron starts a job once, in the first).
    Fires are the runtime's own (:class:`agentos.scheduler.fires.CronSeries`)."""
    from agentos.scheduler.fires import CronSeries

    series = CronSeries(schedule.expression, zoneinfo.ZoneInfo(zone))
    warnings: list[str] = []
    seen: set[float] = set()
    for instant in transitions:
        fire = series.next_after(instant - 3 * 3600 - 1)
        while fire <= instant + 3 * 3600:
            at = datetime.fromtimestamp(fire)
            if fire not in seen and (at.fold or not any(matches(s, at) for s in local)):
                seen.add(fire)
                warnings.append(
                    f"the fire due at {at:%Y-%m-%d %H:%M} (local time) falls in a "
                    "daylight-saving change that cron and launchd do not start it at; it "
                    "runs at the next start, late (or is skipped when catch_up is false)"
                )
            fire = series.next_after(fire)
    return warnings
