"""Apply a :class:`~agentos.schedule.plan.SchedulePlan`, take it back, or compare it.

Install is idempotent and owns exactly one agents file's entries: it replaces that file's
crontab block (or plists, or units) with the plan's, removes the ones the plan no longer
has, and writes nothing when all is already as planned. Uninstall removes agentos's own
entries (one file's, or all) and leaves everything else as it was, byte for byte:

- cron: the block between ``# agentos:begin <path>`` and ``# agentos:end <path>``, read
  with ``crontab -l`` and written back with ``crontab -`` (``crontab -r`` when nothing
  is left). New blocks go at the end. A begin marker without its end marker is an error,
  not a guess. No environment lines (``CRON_TZ=``, ``PATH=``) are written, because in a
  crontab they apply to every line below them, the user's included.
- launchd: ``~/Library/LaunchAgents/dev.agentos.<file key>.<agent>.plist``; ``launchctl
  bootout``/``bootstrap`` are called where ``launchctl`` exists.
- systemd: ``agentos-<file key>--<agent>.service`` and ``.timer`` in the user unit
  folder, each starting with ``# agentos:managed <path>``, enabled by the same
  ``timers.target.wants`` link that ``systemctl --user enable`` makes; ``daemon-reload``
  and ``restart``/``stop`` run only when the user's service manager answers.

``dry_run`` computes the same changes and applies none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentos.schedule.plan import (
    CRON_BEGIN,
    CRON_END,
    LAUNCHD_PREFIX,
    SYSTEMD_MARKER,
    SYSTEMD_PREFIX,
    SYSTEMD_SEPARATOR,
    AgentNote,
    Backend,
    ScheduleError,
    SchedulePlan,
    file_key,
    launch_agents_dir,
    systemd_user_dir,
)

ChangeAction = Literal["write", "remove", "keep", "run"]


@dataclass(frozen=True)
class Change:
    """One step of an install or uninstall: a file or crontab written, removed or kept as
    it was, or a command run (``target`` is then the command line)."""

    action: ChangeAction
    target: str
    content: str | None = None


@dataclass
class InstallReport:
    """What install/uninstall did (or, with ``dry_run``, would do)."""

    backend: Backend
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    problems: list[AgentNote] = field(default_factory=list)
    """Agents of the plan left out because their schedule cannot be expressed."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know or do (e.g. a service manager that did not answer)."""
    warnings: list[str] = field(default_factory=list)
    """Fires that will not start on time (``--local-time`` translations), by agent."""

    @property
    def changed(self) -> bool:
        return any(c.action != "keep" for c in self.changes)


def install(plan: SchedulePlan, *, dry_run: bool = False) -> InstallReport:
    """Make the backend's entries for ``plan.agents_path`` exactly the plan's entries.

    Agents in ``plan.problems`` get no entry (any old one is removed) and are repeated in
    the report, so the caller can fail loudly while the expressible ones still run.
    """
    report = InstallReport(plan.backend, dry_run, problems=list(plan.problems))
    for entry in plan.entries:
        report.notes.extend(f"{entry.agent}: {note}" for note in entry.notes)
        report.warnings.extend(f"{entry.agent}: {warning}" for warning in entry.warnings)
    if not dry_run and plan.entries:
        plan.log_dir.mkdir(parents=True, exist_ok=True)
    files = {a.path: a.content for e in plan.entries for a in e.artifacts if a.path}
    if plan.backend == "cron":
        _apply_cron(report, str(plan.agents_path), plan.crontab_block())
    elif plan.backend == "launchd":
        _apply_launchd(report, plan.home, plan.file_key, files)
    else:
        _apply_systemd(report, plan.home, plan.file_key, files)
    return report


def uninstall(
    agents_file: str | Path | None,
    *,
    backend: Backend,
    home: Path | None = None,
    dry_run: bool = False,
) -> InstallReport:
    """Remove agentos's entries for ``agents_file`` (which need not exist any more), or
    every agentos entry of ``backend`` when it is None. Nothing else is touched."""
    report = InstallReport(backend, dry_run)
    path = None if agents_file is None else Path(agents_file).expanduser().resolve()
    if backend == "cron":
        _apply_cron(report, None if path is None else str(path), "")
    elif backend == "launchd":
        _apply_launchd(report, home, None if path is None else file_key(path), {})
    else:
        _apply_systemd(report, home, None if path is None else file_key(path), {})
    if not report.changed:
        what = "any agents file" if path is None else str(path)
        report.notes.append(f"nothing of agentos's was installed in {backend} for {what}")
    return report


def entry_status(plan: SchedulePlan) -> dict[str, str]:
    """Per planned agent: ``installed``, ``differs`` (an older version is installed) or
    ``not installed``."""
    status: dict[str, str] = {}
    if plan.backend == "cron":
        blocks = crontab_blocks(read_crontab() or "")
        block = blocks.get(str(plan.agents_path))
        for entry in plan.entries:
            lines = [a.content for a in entry.artifacts]
            if block is None:
                status[entry.agent] = "not installed"
            else:
                present = all(line in block for line in lines)
                status[entry.agent] = "installed" if present else "differs"
        return status
    for entry in plan.entries:
        states = set()
        for artifact in entry.artifacts:
            assert artifact.path is not None
            if not artifact.path.is_file():
                states.add("not installed")
            elif artifact.path.read_text() == artifact.content:
                states.add("installed")
            else:
                states.add("differs")
        status[entry.agent] = (
            states.pop() if len(states) == 1 else "differs" if "differs" in states else "partly"
        )
    return status


def show(plan: SchedulePlan) -> str:
    """The plan as text: each entry with its status and what it writes, then problems."""
    status = entry_status(plan)
    out = [f"{plan.backend} schedule of {plan.agents_path}"]
    if not plan.entries:
        out.append("  no scheduled agents to install")
    for entry in plan.entries:
        zone = f" ({entry.timezone})" if entry.timezone else ""
        out.append(f"  {entry.agent}: {entry.cron}{zone} — {status[entry.agent]}")
        out.append(f"    log: {entry.log_file}")
        out.extend(f"    {note}" for note in entry.notes)
        out.extend(f"    warning: {warning}" for warning in entry.warnings)
        for artifact in entry.artifacts:
            if artifact.path is not None:
                out.append(f"    {artifact.path}:")
            out.extend(f"      {line}" for line in artifact.content.splitlines())
    for note in plan.problems:
        out.append(f"  cannot install {note.agent}: {note.reason}")
    for note in plan.skipped:
        out.append(f"  not scheduled: {note.agent} ({note.reason})")
    return "\n".join(out)


# -- cron ------------------------------------------------------------------------------


def _crontab() -> str:
    program = shutil.which("crontab")
    if program is None:
        raise ScheduleError(
            "the `crontab` program is not installed (Debian/Ubuntu: apt-get install cron); "
            "or choose --backend systemd"
        )
    return program


def read_crontab() -> str | None:
    """The user's crontab (``crontab -l``), or None when the user has none."""
    result = _run([_crontab(), "-l"])
    if result.returncode == 0:
        return result.stdout
    if "no crontab" in result.stderr.lower():
        return None
    raise ScheduleError(f"`crontab -l` failed: {result.stderr.strip() or result.returncode}")


def write_crontab(text: str) -> None:
    """Install ``text`` as the user's crontab; an empty one removes the crontab."""
    if not text.strip():
        result = _run([_crontab(), "-r"])
        if result.returncode != 0 and "no crontab" not in result.stderr.lower():
            raise ScheduleError(f"`crontab -r` failed: {result.stderr.strip()}")
        return
    if not text.endswith("\n"):
        text += "\n"
    result = _run([_crontab(), "-"], stdin=text)
    if result.returncode != 0:
        raise ScheduleError(f"`crontab -` refused the new crontab: {result.stderr.strip()}")


def crontab_blocks(text: str) -> dict[str, list[str]]:
    """agentos's blocks in a crontab: agents path → the block's lines, markers included."""
    lines = text.splitlines()
    return {path: lines[first : last + 1] for path, (first, last) in _block_spans(lines).items()}


def _block_spans(lines: list[str]) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    open_path: str | None = None
    start = 0
    for index, line in enumerate(lines):
        text = line.strip()
        if text.startswith(CRON_BEGIN):
            if open_path is not None:
                raise _broken_block(open_path, "a new begin marker comes before its end")
            open_path, start = text.removeprefix(CRON_BEGIN), index
        elif text.startswith(CRON_END):
            path = text.removeprefix(CRON_END)
            if open_path != path:
                raise _broken_block(path, "its end marker has no matching begin marker")
            spans[path] = (start, index)
            open_path = None
    if open_path is not None:
        raise _broken_block(open_path, "its begin marker has no end marker")
    return spans


def _broken_block(path: str, what: str) -> ScheduleError:
    return ScheduleError(
        f"the crontab block of {path} is damaged ({what}); fix or remove the agentos "
        "lines with `crontab -e` and try again"
    )


def _replace_blocks(text: str, path: str | None, block: str) -> str:
    """``text`` with the block of ``path`` (every agentos block when None) replaced by
    ``block`` (removed when empty); a new block is appended at the end."""
    lines = text.splitlines(keepends=True)
    spans = _block_spans([line.rstrip("\r\n") for line in lines])
    doomed = sorted(spans.values() if path is None else [spans[path]] if path in spans else [])
    insert_at = doomed[0][0] if doomed else len(lines)
    kept = [
        line
        for index, line in enumerate(lines)
        if not any(first <= index <= last for first, last in doomed)
    ]
    if block:
        if insert_at == len(lines) and kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        kept.insert(insert_at, block)
    return "".join(kept)


def _apply_cron(report: InstallReport, path: str | None, block: str) -> None:
    current = read_crontab()
    before = current or ""
    after = _replace_blocks(before, path, block)
    if after == before:
        report.changes.append(Change("keep", "crontab", block or None))
        return
    removed = "\n".join(
        "\n".join(lines) for p, lines in crontab_blocks(before).items() if path is None or p == path
    )
    report.changes.append(
        Change("write", "crontab", block) if block else Change("remove", "crontab", removed)
    )
    if not report.dry_run:
        write_crontab(after)


# -- launchd ---------------------------------------------------------------------------


def _apply_launchd(
    report: InstallReport, home: Path | None, key: str | None, wanted: dict[Path, str]
) -> None:
    folder = launch_agents_dir(home)
    pattern = f"{LAUNCHD_PREFIX}{key}.*.plist" if key else f"{LAUNCHD_PREFIX}*.plist"
    existing = sorted(folder.glob(pattern)) if folder.is_dir() else []
    launchctl = shutil.which("launchctl")
    domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui"
    for path in existing:
        if path not in wanted:
            if launchctl:
                _step(report, [launchctl, "bootout", domain, str(path)], check=False)
            report.changes.append(Change("remove", str(path)))
            if not report.dry_run:
                path.unlink(missing_ok=True)
    for path, content in wanted.items():
        if path.is_file() and path.read_text() == content:
            report.changes.append(Change("keep", str(path), content))
            continue
        report.changes.append(Change("write", str(path), content))
        if not report.dry_run:
            _write(path, content)
        if launchctl:
            _step(report, [launchctl, "bootout", domain, str(path)], check=False)
            _step(report, [launchctl, "bootstrap", domain, str(path)])
    if wanted and not launchctl:
        report.notes.append(
            "launchctl is not available here: the jobs load at the next login "
            "(or run `launchctl bootstrap gui/$UID <plist>`)"
        )


# -- systemd ---------------------------------------------------------------------------


def _owned_units(folder: Path, key: str | None) -> list[Path]:
    """Unit files agentos wrote for file ``key`` (all files when None), by name and marker."""
    if not folder.is_dir():
        return []
    stem = f"{SYSTEMD_PREFIX}{key}{SYSTEMD_SEPARATOR}" if key else SYSTEMD_PREFIX
    found = []
    for path in sorted(folder.iterdir()):
        if not (path.name.startswith(stem) and path.suffix in (".service", ".timer")):
            continue
        if SYSTEMD_SEPARATOR not in path.name.removeprefix(SYSTEMD_PREFIX):
            continue
        if path.is_file() and path.read_text().startswith(SYSTEMD_MARKER):
            found.append(path)
    return found


def _systemctl_user() -> str | None:
    """``systemctl`` when the user's service manager answers, else None."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        probe = _run([systemctl, "--user", "show-environment"], timeout=10)
    except ScheduleError:
        return None
    return systemctl if probe.returncode == 0 else None


def _apply_systemd(
    report: InstallReport, home: Path | None, key: str | None, wanted: dict[Path, str]
) -> None:
    folder = systemd_user_dir(home)
    wants = folder / "timers.target.wants"
    systemctl = _systemctl_user()
    changed_timers: list[str] = []
    for path in _owned_units(folder, key):
        if path in wanted:
            continue
        link = wants / path.name
        if path.suffix == ".timer" and systemctl:
            _step(report, [systemctl, "--user", "stop", path.name], check=False)
        report.changes.append(Change("remove", str(path)))
        if link.is_symlink():
            report.changes.append(Change("remove", str(link)))
        if not report.dry_run:
            path.unlink(missing_ok=True)
            if link.is_symlink():
                link.unlink()
    for path, content in wanted.items():
        link = wants / path.name
        if path.is_file() and path.read_text() == content:
            report.changes.append(Change("keep", str(path), content))
        else:
            report.changes.append(Change("write", str(path), content))
            if path.suffix == ".timer":
                changed_timers.append(path.name)
            if not report.dry_run:
                _write(path, content)
        if path.suffix == ".timer" and not (link.is_symlink() and link.readlink() == path):
            report.changes.append(Change("write", str(link), f"-> {path}"))
            if path.name not in changed_timers:
                changed_timers.append(path.name)
            if not report.dry_run:
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(path)
    if not report.changed:
        return
    if systemctl:
        _step(report, [systemctl, "--user", "daemon-reload"])
        for timer in changed_timers:
            _step(report, [systemctl, "--user", "restart", timer])
    elif wanted:
        report.notes.append(
            "the systemd user manager did not answer here: the timers start at the next "
            "login, or now with `systemctl --user daemon-reload && systemctl --user start "
            "<timer>`; `loginctl enable-linger` keeps them running while logged out"
        )


# -- helpers ---------------------------------------------------------------------------


def _write(path: Path, content: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content)
    temporary.replace(path)


def _run(
    argv: list[str], *, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"`{' '.join(argv)}` could not run: {exc}") from None


def _step(report: InstallReport, argv: list[str], *, check: bool = True) -> None:
    """Record ``argv`` as a change and, unless dry-running, run it; a failure (when
    ``check``) becomes a note, since the files are in place and the next login loads them."""
    report.changes.append(Change("run", " ".join(argv)))
    if report.dry_run:
        return
    result = _run(argv)
    if check and result.returncode != 0:
        report.notes.append(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
