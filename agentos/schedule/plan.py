"""What ``agentos schedule`` would install: one entry per scheduled agent, per backend.

A plan is pure: it reads the agents file and computes text (crontab lines, plists, unit
files), and touches nothing; :mod:`agentos.schedule.install` applies it. Every entry runs

    cd <folder of the agents file> && <agentos> run <agents file> --agent NAME --once
        --db <database> [--config <config>]   (output appended to <log dir>/<file>.<agent>.log)

with absolute paths throughout, because cron, launchd and systemd start jobs with a bare
environment (no ``AGENTOS_DB``, a minimal ``PATH``, the home folder as working folder).

Which agents: those with ``life_cycle.type: scheduled``. ``perpetual`` agents are left
out on purpose — one with an input sink has no calendar at all, and one with ``every``
keeps its interval, overlap and catch-up state in the long-running ``agentos run``, which
is what should be supervised (by launchd/systemd as a service), not restarted per tick.
Both kinds are listed in :attr:`SchedulePlan.skipped` with the reason.

An agent whose schedule a backend cannot express exactly is listed in
:attr:`SchedulePlan.problems` and gets no entry; nothing is installed with a changed
schedule. One exception, on request: with ``local_time`` (``--local-time``), cron and
launchd get an agent whose time zone differs from the machine's translated into local
time (:func:`agentos.schedule.calendar.local_translation`: started at every local time a
fire can have, ``--once`` runs each fire once, on time), and the entry's ``notes`` say
how, with ``warnings`` for the fires that still start late.

Names: every installed thing carries a key of the agents file (``<stem>-<8 hex of its
absolute path>``), so install replaces exactly that file's entries and uninstall removes
only agentos's own.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentos.errors import AgentosError
from agentos.schedule.calendar import (
    MAX_LAUNCHD_INTERVALS,
    CronSchedule,
    LocalTranslation,
    UnsupportedSchedule,
    crontab_fields,
    follows_local_time,
    launchd_intervals,
    local_translation,
    parse_cron,
    systemd_calendars,
)
from agentos.spec.agents import AgentsFile, AgentSpec, load_agents

Backend = Literal["cron", "launchd", "systemd"]
BACKENDS: tuple[Backend, ...] = ("cron", "launchd", "systemd")

CRON_BEGIN = "# agentos:begin "
"""Opens agentos's block in a crontab; the absolute agents path follows."""
CRON_END = "# agentos:end "
"""Closes the block opened for the same path."""
LAUNCHD_PREFIX = "dev.agentos."
"""Label (and plist file name) prefix of every launchd job agentos writes."""
SYSTEMD_PREFIX = "agentos-"
"""Name prefix of every systemd unit agentos writes: ``agentos-<file key>--<agent>``."""
SYSTEMD_SEPARATOR = "--"
"""Between file key and agent in a unit name; slugs never hold two dashes in a row, so the
file key of a unit name is never ambiguous."""
SYSTEMD_MARKER = "# agentos:managed "
"""First line of every unit file agentos writes; the absolute agents path follows."""
CRON_MAX_LINE = 998
"""Longest crontab command line: Vixie cron refuses longer ones ("command too long")."""


class ScheduleError(AgentosError):
    """A crontab, plist folder or unit folder that cannot be read or written as needed."""

    title = "schedule"


@dataclass(frozen=True)
class AgentNote:
    """Why an agent of the file gets no entry."""

    agent: str
    reason: str


@dataclass(frozen=True)
class Artifact:
    """One thing install writes: a file (``path``), or crontab lines (``path`` is None)."""

    path: Path | None
    content: str


@dataclass(frozen=True)
class ScheduleEntry:
    """One scheduled agent, as the backend will start it."""

    agent: str
    cron: str
    """The expression as written in the agents file."""
    timezone: str | None
    argv: tuple[str, ...]
    """The command, absolute paths only."""
    working_dir: Path
    log_file: Path
    name: str
    """The backend's name for it: launchd label, systemd unit stem, or the agent's name
    in the crontab comment."""
    artifacts: tuple[Artifact, ...]
    notes: tuple[str, ...] = ()
    """How the schedule was translated into local time (``--local-time``), if it was."""
    warnings: tuple[str, ...] = ()
    """Fires the installed entry will not start on time."""


@dataclass(frozen=True)
class SchedulePlan:
    """Everything :func:`agentos.schedule.install.install` would write for one agents file."""

    backend: Backend
    agents_path: Path
    """Absolute, symlinks resolved: the identity of the file's entries."""
    file_key: str
    home: Path | None
    """Where ``Library/LaunchAgents`` / ``.config/systemd/user`` live; None: the user's."""
    log_dir: Path
    entries: tuple[ScheduleEntry, ...]
    problems: tuple[AgentNote, ...]
    """Scheduled agents left out because the backend cannot express their schedule."""
    skipped: tuple[AgentNote, ...]
    """Agents that are not scheduled (single-shot, perpetual)."""

    def crontab_block(self) -> str:
        """The marked crontab block for this file ("" when there is nothing to install)."""
        if not self.entries:
            return ""
        path = str(self.agents_path)
        lines = [
            CRON_BEGIN + path,
            "# written by `agentos schedule install`: edit the agents file and install "
            "again, not these lines",
        ]
        for entry in self.entries:
            lines.extend(a.content for a in entry.artifacts)
        lines.append(CRON_END + path)
        return "\n".join(lines) + "\n"


def default_backend() -> Backend:
    """launchd on macOS, cron elsewhere."""
    return "launchd" if sys.platform == "darwin" else "cron"


def default_agentos_command() -> list[str]:
    """The argv that starts this agentos from a bare environment.

    The ``agentos`` script that was run (``sys.argv[0]``), else the one beside the running
    Python (a virtualenv's ``bin``), else ``python -m agentos``. Paths are made absolute
    but symlinks are kept: a virtualenv's ``python`` is a symlink whose target is outside
    the virtualenv and would lose its packages.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "agentos" and argv0.is_file():
        return [str(argv0.absolute())]
    beside = Path(sys.executable).parent / "agentos"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "agentos"]


def launch_agents_dir(home: Path | None) -> Path:
    """``~/Library/LaunchAgents`` (under ``home`` when given)."""
    return (home or Path.home()) / "Library" / "LaunchAgents"


def systemd_user_dir(home: Path | None) -> Path:
    """``~/.config/systemd/user`` (``$XDG_CONFIG_HOME`` honoured when ``home`` is not given)."""
    if home is not None:
        return home / ".config" / "systemd" / "user"
    config = os.environ.get("XDG_CONFIG_HOME")
    return (Path(config) if config else Path.home() / ".config") / "systemd" / "user"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "agent"


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_key(agents_path: Path) -> str:
    """``<stem>-<8 hex>``: names this agents file's launchd labels, units and logs."""
    return f"{_slug(agents_path.stem)}-{_short_hash(str(agents_path), 8)}"


def agent_key(name: str) -> str:
    """The agent's name as a file-name-safe slug; a hash is added when the slug had to
    change it, so two names never share a slug."""
    slug = _slug(name)
    return slug if slug == name else f"{slug}-{_short_hash(name, 6)}"


def plan_schedule(
    agents_file: AgentsFile | str | Path,
    *,
    backend: Backend,
    db_path: str | Path,
    config_path: str | Path | None = None,
    agentos_cmd: Sequence[str] | None = None,
    log_dir: str | Path | None = None,
    home: Path | None = None,
    local_time: bool = False,
) -> SchedulePlan:
    """The entries ``backend`` needs for the scheduled agents of ``agents_file``.

    ``local_time``: translate a time zone that differs from the machine's into local time
    for cron and launchd, instead of reporting it (systemd takes zones as they are).

    ``agentos_cmd`` defaults to :func:`default_agentos_command`; ``log_dir`` to ``logs``
    beside the database. Raises :class:`~agentos.errors.SpecError` for an agents file that
    does not load, and :class:`ScheduleError` for a path no backend can hold (a newline).
    """
    agents = agents_file if isinstance(agents_file, AgentsFile) else load_agents(agents_file)
    agents_path = Path(agents.path).expanduser().resolve()
    db = Path(db_path).expanduser().resolve()
    config = None if config_path is None else Path(config_path).expanduser().resolve()
    logs = Path(log_dir).expanduser().resolve() if log_dir else db.parent / "logs"
    command = list(agentos_cmd) if agentos_cmd else default_agentos_command()
    for path in (agents_path, db, logs, *([config] if config else [])):
        if "\n" in str(path) or "\r" in str(path):
            raise ScheduleError(f"path {str(path)!r} has a line break; no scheduler can hold it")
    key = file_key(agents_path)
    entries: list[ScheduleEntry] = []
    problems: list[AgentNote] = []
    skipped: list[AgentNote] = []
    for agent in agents:
        cycle = agent.life_cycle
        if cycle.type != "scheduled" or not cycle.cron:
            skipped.append(AgentNote(agent.name, _skip_reason(agent)))
            continue
        # ``--agent=NAME`` only where NAME would otherwise read as an option.
        name_args = (
            [f"--agent={agent.name}"] if agent.name.startswith("-") else ["--agent", agent.name]
        )
        argv = [*command, "run", str(agents_path), *name_args, "--once"]
        argv += ["--db", str(db)]
        if config is not None:
            argv += ["--config", str(config)]
        log_file = logs / f"{key}.{agent_key(agent.name)}.log"
        try:
            schedule = parse_cron(cycle.cron)
            entry = _ENTRY_BUILDERS[backend](
                agent, schedule, argv, agents_path, log_file, key, home, local_time
            )
        except UnsupportedSchedule as exc:
            problems.append(AgentNote(agent.name, exc.message))
            continue
        entries.append(entry)
    return SchedulePlan(
        backend=backend,
        agents_path=agents_path,
        file_key=key,
        home=home,
        log_dir=logs,
        entries=tuple(entries),
        problems=tuple(problems),
        skipped=tuple(skipped),
    )


def _skip_reason(agent: AgentSpec) -> str:
    if agent.life_cycle.type == "perpetual":
        return (
            "perpetual: keeps running in `agentos run` (run that as a service); only "
            "scheduled agents get cron/launchd/systemd entries"
        )
    return "single-shot: not scheduled"


def _local_zone() -> str:
    """This machine's local time, in words (``UTC``, ``CET``)."""
    return time.strftime("%Z") or "local time"


def _in_local_time(
    backend: str, schedule: CronSchedule, timezone: str | None, local_time: bool
) -> LocalTranslation | None:
    """None when ``timezone`` fires at the same instants as the machine's local time; the
    translation into local time when it does not and ``local_time`` asks for one; else
    raises UnsupportedSchedule."""
    if timezone is None or follows_local_time(timezone):
        return None
    if local_time:
        return local_translation(schedule, timezone)
    if backend == "cron":
        why = "cron starts jobs by local time and Debian's cron has no CRON_TZ"
    else:
        why = "launchd starts jobs by local time (StartCalendarInterval has no time zone)"
    raise UnsupportedSchedule(
        f"timezone {timezone!r} differs from this machine's local time ({_local_zone()}); "
        f"{why}, so the schedule would shift: install with --local-time to have it "
        "translated into local time, or use --backend systemd, which takes a time zone"
    )


def _translation_notes(agent: AgentSpec, translation: LocalTranslation) -> tuple[str, ...]:
    """What ``--local-time`` made of the agent's schedule, in words."""
    parts = []
    for delta, schedules in translation.differences:
        size = f"{abs(delta) // 60}:{abs(delta) % 60:02d}" if delta % 60 else f"{abs(delta) // 60}"
        side = "ahead of" if delta > 0 else "behind"
        lines = " and ".join(f"'{crontab_fields(s)}'" for s in schedules)
        parts.append(f"{lines} while {translation.zone} is {size} h {side} it")
    notes = [
        f"'{agent.life_cycle.cron}' in {translation.zone} is, in this machine's local time "
        f"({_local_zone()}): " + "; ".join(parts)
    ]
    if len(translation.differences) > 1:
        when = ", ".join(c.strftime("%Y-%m-%d") for c in translation.changes)
        notes.append(
            f"the difference changes on {when} (daylight saving): the job is started at "
            "each of those local times, and `agentos run --once` runs each fire once, at "
            "its time in the agent's zone; the other starts run nothing ('nothing due')"
        )
    return tuple(notes)


def _cron_entry(
    agent: AgentSpec,
    schedule: CronSchedule,
    argv: list[str],
    agents_path: Path,
    log_file: Path,
    key: str,
    home: Path | None,
    local_time: bool = False,
) -> ScheduleEntry:
    workdir = agents_path.parent
    timezone = agent.life_cycle.timezone
    translation = _in_local_time("cron", schedule, timezone, local_time)
    command = (
        f"cd {shlex.quote(str(workdir))} && {shlex.join(argv)} >>{shlex.quote(str(log_file))} 2>&1"
    )
    if "%" in command or "\n" in command or "\r" in command:
        # cron turns % into a line break and feeds the rest to stdin; escaping it is read
        # differently by different crons, so such a name or path is refused outright.
        raise UnsupportedSchedule(
            "the command has a '%' or a line break (in the agent's name or a path), which "
            "cron would not pass through unchanged"
        )
    schedules = translation.schedules if translation is not None else (schedule,)
    lines = [f"{crontab_fields(s)} {command}" for s in schedules]
    longest = max(len(line) for line in lines)
    if longest > CRON_MAX_LINE:
        raise UnsupportedSchedule(
            f"the crontab line would be {longest} characters; cron takes at most "
            f"{CRON_MAX_LINE} (shorten the paths)"
        )
    if translation is not None:
        zone = f" ({timezone}, translated into this machine's local time by --local-time)"
    else:
        zone = f" ({timezone}, this machine's local time)" if timezone else ""
    comment = f"# {agent.name}: {agent.life_cycle.cron}{zone}"
    return ScheduleEntry(
        agent=agent.name,
        cron=agent.life_cycle.cron or "",
        timezone=timezone,
        argv=tuple(argv),
        working_dir=workdir,
        log_file=log_file,
        name=agent.name,
        artifacts=(Artifact(None, comment), *(Artifact(None, line) for line in lines)),
        notes=_translation_notes(agent, translation) if translation is not None else (),
        warnings=translation.warnings if translation is not None else (),
    )


def _launchd_entry(
    agent: AgentSpec,
    schedule: CronSchedule,
    argv: list[str],
    agents_path: Path,
    log_file: Path,
    key: str,
    home: Path | None,
    local_time: bool = False,
) -> ScheduleEntry:
    workdir = agents_path.parent
    timezone = agent.life_cycle.timezone
    translation = _in_local_time("launchd", schedule, timezone, local_time)
    intervals: list[dict[str, int]] = []
    for each in translation.schedules if translation is not None else (schedule,):
        intervals += [i for i in launchd_intervals(each) if i not in intervals]
    if len(intervals) > MAX_LAUNCHD_INTERVALS:
        raise UnsupportedSchedule(
            f"cron expression {schedule.expression!r} in local time would need "
            f"{len(intervals)} launchd StartCalendarInterval entries (at most "
            f"{MAX_LAUNCHD_INTERVALS} are written); use the cron or systemd backend"
        )
    label = f"{LAUNCHD_PREFIX}{key}.{agent_key(agent.name)}"
    plist = {
        "Label": label,
        "ProgramArguments": argv,
        "WorkingDirectory": str(workdir),
        "StartCalendarInterval": intervals[0] if len(intervals) == 1 else intervals,
        "StandardOutPath": str(log_file),
        "StandardErrorPath": str(log_file),
        "ProcessType": "Background",
    }
    content = plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False).decode()
    path = launch_agents_dir(home) / f"{label}.plist"
    return ScheduleEntry(
        agent=agent.name,
        cron=agent.life_cycle.cron or "",
        timezone=timezone,
        argv=tuple(argv),
        working_dir=workdir,
        log_file=log_file,
        name=label,
        artifacts=(Artifact(path, content),),
        notes=_translation_notes(agent, translation) if translation is not None else (),
        warnings=translation.warnings if translation is not None else (),
    )


def _systemd_quote(arg: str) -> str:
    """One ``ExecStart=`` word: double-quoted, with systemd's ``%`` and ``$`` expansion off."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def _systemd_entry(
    agent: AgentSpec,
    schedule: CronSchedule,
    argv: list[str],
    agents_path: Path,
    log_file: Path,
    key: str,
    home: Path | None,
    local_time: bool = False,
) -> ScheduleEntry:
    workdir = agents_path.parent
    cycle = agent.life_cycle
    unit = f"{SYSTEMD_PREFIX}{key}{SYSTEMD_SEPARATOR}{agent_key(agent.name)}"
    marker = f"{SYSTEMD_MARKER}{agents_path}"
    zone = f" in {cycle.timezone}" if cycle.timezone else ""
    service = "\n".join(
        [
            marker,
            "[Unit]",
            f"Description=agentos agent {agent.name!r} (cron '{cycle.cron}'{zone})".replace(
                "%", "%%"
            ),
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={str(workdir).replace('%', '%%')}",
            "ExecStart=" + " ".join(_systemd_quote(a) for a in argv),
            f"StandardOutput=append:{str(log_file).replace('%', '%%')}",
            f"StandardError=append:{str(log_file).replace('%', '%%')}",
            "",
        ]
    )
    timer_lines = [
        marker,
        "[Unit]",
        f"Description=schedule of agentos agent {agent.name!r}".replace("%", "%%"),
        "",
        "[Timer]",
        *(f"OnCalendar={c}" for c in systemd_calendars(schedule, cycle.timezone)),
        # Persistent: a fire missed while the machine was off runs at the next boot, once;
        # agentos's own catch-up then decides what that run covers.
        f"Persistent={'true' if cycle.catch_up else 'false'}",
        f"Unit={unit}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    folder = systemd_user_dir(home)
    return ScheduleEntry(
        agent=agent.name,
        cron=cycle.cron or "",
        timezone=cycle.timezone,
        argv=tuple(argv),
        working_dir=workdir,
        log_file=log_file,
        name=unit,
        artifacts=(
            Artifact(folder / f"{unit}.service", service),
            Artifact(folder / f"{unit}.timer", "\n".join(timer_lines)),
        ),
    )


_ENTRY_BUILDERS = {"cron": _cron_entry, "launchd": _launchd_entry, "systemd": _systemd_entry}
