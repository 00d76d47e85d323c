"""``agentos schedule``: crontab blocks through the real ``crontab``, plists, systemd timers.

cron tests use the real ``crontab`` program on the real user crontab (saved before and
restored after each test); the session fixture installs Debian's ``cron`` package when
the program is missing. Fire times are checked against croniter, the reference the
runtime uses: the crontab fields under Vixie cron's rules, the plists' calendar intervals
under launchd's, and the timers' ``OnCalendar=`` by ``systemd-analyze`` itself.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from agentos.schedule import (
    ScheduleError,
    default_agentos_command,
    entry_status,
    install,
    plan_schedule,
    show,
    uninstall,
)
from agentos.schedule.calendar import (
    crontab_fields,
    follows_local_time,
    launchd_intervals,
    parse_cron,
    systemd_calendars,
)
from agentos.schedule.install import crontab_blocks
from agentos.testing.engine import LoopbackEngine

USER_CRONTAB = 'MAILTO=""\n# the user\'s own job\n17 3 * * * /usr/bin/true\n'

AGENTS = """\
agents:
  - name: daily-report
    prompt: "ANSWER: report"
    life_cycle: {type: scheduled, cron: "0 9 * * mon-fri"}
  - name: odd days
    prompt: "ANSWER: odd"
    life_cycle: {type: scheduled, cron: "*/15 8-18 */2 * 1"}
  - name: once
    prompt: "ANSWER: once"
  - name: ticker
    prompt: "ANSWER: tick"
    life_cycle: {type: perpetual, every: 5m}
"""

EXPRESSIONS = [
    "0 9 * * mon-fri",
    "*/15 8-18 */2 * 1",
    "0 0 1-31 * 1",
    "30 4 1,15 * 5",
    "@weekly",
    "5/20 * * * *",
    "0 12 * jan-mar sun",
    "0 0 * * 0-7",
    "59 23 31 * *",
    "0 */6 * * sat,sun",
    "0 0 13 * fri",
]


# -- fixtures --------------------------------------------------------------------------


def _crontab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["crontab", *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="session")
def crontab_program() -> str:
    """The real ``crontab``; installs Debian's cron package when missing (as root)."""
    found = shutil.which("crontab")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail(
            "the `crontab` program is missing and cannot be installed here (needs root and "
            "apt-get): install Debian's cron package (apt-get install cron) before the tests"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [[apt, "update"], [apt, "install", "-y", "--no-install-recommends", "cron"]]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(step)}` failed:\n{(done.stdout + done.stderr)[-2000:]}")
    found = shutil.which("crontab")
    if found is None:
        pytest.fail("Debian's cron package installed, yet there is no `crontab` on PATH")
    return found


@pytest.fixture
def user_crontab(crontab_program: str) -> Iterator[None]:
    """Starts from the user's crontab holding :data:`USER_CRONTAB`; restores the real one."""
    saved = _crontab("-l")
    original = saved.stdout if saved.returncode == 0 else None
    assert _crontab("-", stdin=USER_CRONTAB).returncode == 0
    try:
        yield
    finally:
        if original is None:
            _crontab("-r")
        else:
            _crontab("-", stdin=original)


@pytest.fixture
def utc_machine() -> Iterator[None]:
    """This process's local time is UTC (what cron and launchd would read)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    folder = tmp_path / "project dir"
    folder.mkdir()
    path = folder / "agents.yaml"
    path.write_text(AGENTS)
    return path


def run_to_end(argv: list[str], *, timeout: float) -> int:
    """Run ``argv`` in its own process group from ``/`` with an empty environment; on
    timeout kill the whole group (the shell and agentos under it) and fail."""
    process = subprocess.Popen(argv, env={}, cwd="/", start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{argv} did not exit within {timeout} s (does `run --once` return?)")


def current_crontab() -> str | None:
    listed = _crontab("-l")
    return listed.stdout if listed.returncode == 0 else None


# -- semantics: each backend's rendering fires when croniter fires ---------------------

START = datetime(2025, 1, 1)
DAYS = 45


def croniter_fires(expression: str, start: datetime = START, days: int = DAYS) -> set[datetime]:
    end = start + timedelta(days=days)
    fires: set[datetime] = set()
    it = croniter(expression, start - timedelta(minutes=1))
    while (fire := it.get_next(datetime)) < end:
        fires.add(fire)
    return fires


def _values(field: str, low: int, high: int) -> set[int]:
    """A Vixie cron field (numbers, ranges, steps, lists) as its values."""
    values: set[int] = set()
    for item in field.split(","):
        span, _, step = item.partition("/")
        first, last = (low, high) if span == "*" else map(int, (span.split("-") * 2)[:2])
        values.update(range(first, last + 1, int(step or 1)))
    return {0 if v == 7 and high == 7 else v for v in values}


def vixie_fires(fields: str, start: datetime = START, days: int = DAYS) -> set[datetime]:
    """Fire times of crontab time fields, read the way Vixie cron reads them."""
    minute, hour, dom, month, dow = fields.split()
    minutes, hours = _values(minute, 0, 59), _values(hour, 0, 23)
    doms, months, dows = _values(dom, 1, 31), _values(month, 1, 12), _values(dow, 0, 7)
    star = dom.startswith("*") or dow.startswith("*")
    fires: set[datetime] = set()
    for offset in range(days):
        day = start + timedelta(days=offset)
        dom_ok, dow_ok = day.day in doms, (day.weekday() + 1) % 7 in dows
        if day.month in months and ((dom_ok and dow_ok) if star else (dom_ok or dow_ok)):
            fires.update(day.replace(hour=h, minute=m) for h in hours for m in minutes)
    return fires


def launchd_fires(
    intervals: dict[str, int] | list[dict[str, int]], start: datetime = START, days: int = DAYS
) -> set[datetime]:
    """Fire times of a StartCalendarInterval: keys of a dict AND, dicts OR, a missing key
    is a wildcard, Weekday 0 and 7 are Sunday."""
    fires: set[datetime] = set()
    for interval in intervals if isinstance(intervals, list) else [intervals]:
        for offset in range(days):
            day = start + timedelta(days=offset)
            weekday = interval.get("Weekday")
            if weekday is not None and weekday % 7 != (day.weekday() + 1) % 7:
                continue
            if interval.get("Day", day.day) != day.day:
                continue
            if interval.get("Month", day.month) != day.month:
                continue
            hours = [interval["Hour"]] if "Hour" in interval else range(24)
            minutes = [interval["Minute"]] if "Minute" in interval else range(60)
            fires.update(day.replace(hour=h, minute=m) for h in hours for m in minutes)
    return fires


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_crontab_fields_fire_like_croniter_under_vixie_rules(expression: str) -> None:
    fields = crontab_fields(parse_cron(expression))
    assert re.fullmatch(r"[0-9*,-]+( [0-9*,-]+){4}", fields), fields
    assert vixie_fires(fields) == croniter_fires(expression)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_launchd_intervals_fire_like_croniter(expression: str) -> None:
    intervals = launchd_intervals(parse_cron(expression))
    assert launchd_fires(intervals) == croniter_fires(expression)


def test_the_day_rule_differs_from_a_naive_copy_of_the_expression() -> None:
    # Written as-is, Vixie cron would read "*/2" as unrestricted and AND the day fields.
    naive = vixie_fires("0 0 */2 * 1")
    assert naive != croniter_fires("0 0 */2 * 1")
    assert vixie_fires(crontab_fields(parse_cron("0 0 */2 * 1"))) == croniter_fires("0 0 */2 * 1")


def _systemd_fires(calendar: str, base: datetime, count: int) -> list[datetime]:
    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
            f"--iterations={count}",
            calendar,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", result.stdout)
    return [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("expression", "zone"),
    [
        *((e, None) for e in EXPRESSIONS[:6]),
        ("30 7 * * *", "Europe/Berlin"),  # across the March DST change
        ("0 2 * * 0", "America/New_York"),
    ],
)
def test_systemd_calendars_fire_like_croniter(expression: str, zone: str | None) -> None:
    base = datetime(2025, 3, 20, tzinfo=UTC)
    count = 25
    calendars = systemd_calendars(parse_cron(expression), zone)
    fires = sorted({f for c in calendars for f in _systemd_fires(c, base, count)})[:count]
    it = croniter(expression, base.astimezone(ZoneInfo(zone or "UTC")))
    expected = [it.get_next(datetime).astimezone(UTC) for _ in range(count)]
    assert fires == expected


def test_follows_local_time(utc_machine: None) -> None:
    assert follows_local_time("UTC")
    assert follows_local_time("Etc/UTC")
    assert not follows_local_time("Asia/Tokyo")
    assert not follows_local_time("Europe/London")  # equal in winter, not in summer
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    assert follows_local_time("Europe/Paris")
    assert not follows_local_time("UTC")


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 0 L * *", "croniter extension"),
        ("0 0 * * 5#3", "croniter extension"),
        ("0 0 1 * * 30", "6 fields"),
    ],
)
def test_croniter_extensions_are_reported_for_every_backend(
    tmp_path: Path, expression: str, words: str
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        f'- name: odd\n  prompt: hi\n  life_cycle: {{type: scheduled, cron: "{expression}"}}\n'
    )
    for backend in ("cron", "launchd", "systemd"):
        plan = plan_schedule(path, backend=backend, db_path=tmp_path / "a.db", home=tmp_path)
        assert plan.entries == ()
        assert [p.agent for p in plan.problems] == ["odd"]
        assert words in plan.problems[0].reason


# -- the plan --------------------------------------------------------------------------


def test_plan_runs_each_scheduled_agent_once_with_absolute_paths(
    agents_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(agents_file.parent)
    plan = plan_schedule(
        Path("agents.yaml"),
        backend="cron",
        db_path="state/runs.db",
        config_path="config.yaml",
        agentos_cmd=["/opt/agentos"],
    )
    assert [e.agent for e in plan.entries] == ["daily-report", "odd days"]
    assert {s.agent for s in plan.skipped} == {"once", "ticker"}
    assert "perpetual" in next(s.reason for s in plan.skipped if s.agent == "ticker")
    entry = plan.entries[1]
    folder = agents_file.parent.resolve()
    assert entry.argv == (
        "/opt/agentos",
        "run",
        str(folder / "agents.yaml"),
        "--agent",
        "odd days",
        "--once",
        "--db",
        str(folder / "state" / "runs.db"),
        "--config",
        str(folder / "config.yaml"),
    )
    assert entry.working_dir == folder
    assert entry.log_file.parent == folder / "state" / "logs"
    assert plan.entries[0].log_file != entry.log_file


def test_default_agentos_command_starts_this_agentos(tmp_path: Path) -> None:
    command = default_agentos_command()
    assert Path(command[0]).is_absolute()
    done = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, env={}, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("agentos ")


# -- cron ------------------------------------------------------------------------------


def test_cron_install_is_idempotent_and_uninstall_leaves_the_users_entries(
    agents_file: Path, tmp_path: Path, user_crontab: None
) -> None:
    plan = plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db")
    report = install(plan)
    assert report.changed and report.problems == []
    text = current_crontab()
    assert text is not None and text.startswith(USER_CRONTAB)
    blocks = crontab_blocks(text)
    assert list(blocks) == [str(agents_file.resolve())]
    jobs = [line for line in blocks[str(agents_file.resolve())] if not line.startswith("#")]
    assert len(jobs) == 2
    assert jobs[0].startswith("0 9 * * 1-5 cd ")
    assert "--agent daily-report --once --db " in jobs[0]
    assert "--agent 'odd days' --once" in jobs[1]
    assert plan.log_dir.is_dir()
    assert set(entry_status(plan).values()) == {"installed"}

    again = install(plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db"))
    assert not again.changed
    assert current_crontab() == text
    assert text.count("# agentos:begin") == 1

    removed = uninstall(agents_file, backend="cron")
    assert removed.changed
    assert current_crontab() == USER_CRONTAB
    assert not uninstall(agents_file, backend="cron").changed


def test_cron_reinstall_replaces_the_files_block_in_place(
    agents_file: Path, tmp_path: Path, user_crontab: None
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(
        '- name: nightly\n  prompt: hi\n  life_cycle: {type: scheduled, cron: "0 2 * * *"}\n'
    )
    install(plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db"))
    install(plan_schedule(other, backend="cron", db_path=tmp_path / "runs.db"))
    agents_file.write_text(AGENTS.replace("0 9 * * mon-fri", "45 6 * * *"))
    plan = plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db")
    assert entry_status(plan)["daily-report"] == "differs"
    install(plan)

    text = current_crontab() or ""
    blocks = crontab_blocks(text)
    assert list(blocks) == [str(agents_file.resolve()), str(other.resolve())]
    mine = "\n".join(blocks[str(agents_file.resolve())])
    assert "45 6 * * * cd " in mine and "0 9 * * 1-5" not in mine
    assert text.count("--agent daily-report") == 1

    uninstall(None, backend="cron")
    assert current_crontab() == USER_CRONTAB


def test_cron_uninstall_removes_a_crontab_that_only_held_agentos(
    agents_file: Path, tmp_path: Path, user_crontab: None
) -> None:
    _crontab("-r")
    install(plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db"))
    assert current_crontab() is not None
    uninstall(agents_file, backend="cron")
    assert current_crontab() is None


def test_cron_dry_run_changes_nothing(
    agents_file: Path, tmp_path: Path, user_crontab: None
) -> None:
    plan = plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db")
    report = install(plan, dry_run=True)
    assert [(c.action, c.target) for c in report.changes] == [("write", "crontab")]
    assert report.changes[0].content == plan.crontab_block()
    assert current_crontab() == USER_CRONTAB
    assert not plan.log_dir.exists()
    install(plan)
    report = uninstall(agents_file, backend="cron", dry_run=True)
    assert report.changes[0].action == "remove"
    assert "# agentos:begin" in (report.changes[0].content or "")
    assert crontab_blocks(current_crontab() or "")


def test_cron_damaged_block_is_an_error_and_left_alone(
    agents_file: Path, tmp_path: Path, user_crontab: None
) -> None:
    damaged = USER_CRONTAB + f"# agentos:begin {agents_file.resolve()}\n0 0 * * * /usr/bin/true\n"
    _crontab("-", stdin=damaged)
    plan = plan_schedule(agents_file, backend="cron", db_path=tmp_path / "runs.db")
    with pytest.raises(ScheduleError, match="damaged"):
        install(plan)
    assert current_crontab() == damaged


def test_cron_reports_what_it_cannot_run_unchanged(
    tmp_path: Path, user_crontab: None, utc_machine: None
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "- name: tokyo\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "0 9 * * *", timezone: Asia/Tokyo}\n'
        "- name: utc\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "0 9 * * *", timezone: UTC}\n'
        "- name: 50%\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "0 9 * * *"}\n'
    )
    plan = plan_schedule(path, backend="cron", db_path=tmp_path / "runs.db")
    assert [e.agent for e in plan.entries] == ["utc"]
    reasons = {p.agent: p.reason for p in plan.problems}
    assert "Asia/Tokyo" in reasons["tokyo"] and "CRON_TZ" in reasons["tokyo"]
    assert "'%'" in reasons["50%"]
    report = install(plan)
    assert [p.agent for p in report.problems] == ["tokyo", "50%"]
    text = current_crontab() or ""
    assert "--agent utc" in text and "tokyo" not in text and "CRON_TZ" not in text
    assert "systemd" in show(plan)


def test_the_installed_cron_command_runs_the_agent_from_a_bare_environment(
    tmp_path: Path, user_crontab: None
) -> None:
    folder = tmp_path / "my agents"
    folder.mkdir()
    (folder / "agents.yaml").write_text(
        "- name: it's due\n"
        '  prompt: "ANSWER: done"\n'
        '  life_cycle: {type: scheduled, cron: "* * * * *"}\n'
    )
    with LoopbackEngine().run_in_thread() as engine:
        config = folder / "engines.yaml"
        config.write_text(
            f"engines:\n  - name: loop\n    type: openai\n    base_url: {engine.url}\n"
        )
        db = tmp_path / "data" / "runs.db"
        plan = plan_schedule(folder / "agents.yaml", backend="cron", db_path=db, config_path=config)
        install(plan)
        line = next(
            line
            for line in (current_crontab() or "").splitlines()
            if "--agent" in line and not line.startswith("#")
        )
        command = line.split(" ", 5)[5]
        # As cron runs it: /bin/sh, an empty environment, another working folder.
        returncode = run_to_end(["/bin/sh", "-c", command], timeout=30)
    log = plan.entries[0].log_file
    assert returncode == 0, log.read_text() if log.exists() else returncode
    assert log.is_file()
    conn = sqlite3.connect(db)
    rows = conn.execute("select status from runs where agent = ?", ("it's due",)).fetchall()
    statuses = [status for (status,) in rows]
    conn.close()
    assert statuses and set(statuses) == {"succeeded"}


# -- launchd ---------------------------------------------------------------------------


def test_launchd_plists_parse_back_and_fire_like_croniter(
    agents_file: Path, tmp_path: Path, utc_machine: None
) -> None:
    home = tmp_path / "home"
    plan = plan_schedule(agents_file, backend="launchd", db_path=tmp_path / "runs.db", home=home)
    report = install(plan)
    assert report.problems == []
    folder = home / "Library" / "LaunchAgents"
    plists = sorted(folder.glob("*.plist"))
    assert len(plists) == 2
    for entry in plan.entries:
        [artifact] = entry.artifacts
        assert artifact.path is not None and artifact.path.parent == folder
        with artifact.path.open("rb") as handle:
            job = plistlib.load(handle)
        assert job["Label"] == artifact.path.stem == entry.name
        assert job["Label"].startswith("dev.agentos.")
        assert job["ProgramArguments"] == list(entry.argv)
        assert all(Path(a).is_absolute() for a in job["ProgramArguments"] if "/" in a)
        assert job["WorkingDirectory"] == str(agents_file.parent.resolve())
        assert job["StandardOutPath"] == job["StandardErrorPath"] == str(entry.log_file)
        assert launchd_fires(job["StartCalendarInterval"]) == croniter_fires(entry.cron)
    assert not install(plan).changed

    user_plist = folder / "com.example.backup.plist"
    user_plist.write_bytes(plistlib.dumps({"Label": "com.example.backup"}))
    agents_file.write_text(AGENTS.replace("  - name: daily-report", "  - name: weekly-report"))
    replaced = install(
        plan_schedule(agents_file, backend="launchd", db_path=tmp_path / "runs.db", home=home)
    )
    assert [c.target for c in replaced.changes if c.action == "remove"] == [
        str(plan.entries[0].artifacts[0].path)
    ]
    uninstall(agents_file, backend="launchd", home=home)
    assert sorted(folder.iterdir()) == [user_plist]


def test_launchd_reports_schedules_it_cannot_express(tmp_path: Path, utc_machine: None) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "- name: berlin\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "30 7 * * *", timezone: Europe/Berlin}\n'
        "- name: dense\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "*/2 */2 1-15 * *"}\n'
        "- name: fine\n  prompt: hi\n"
        '  life_cycle: {type: scheduled, cron: "*/5 9-17 * * 1-5"}\n'
    )
    home = tmp_path / "home"
    plan = plan_schedule(path, backend="launchd", db_path=tmp_path / "runs.db", home=home)
    reasons = {p.agent: p.reason for p in plan.problems}
    assert set(reasons) == {"berlin", "dense"}
    assert "Europe/Berlin" in reasons["berlin"] and "local time" in reasons["berlin"]
    assert "5400" in reasons["dense"]
    assert [e.agent for e in plan.entries] == ["fine"]
    report = install(plan, dry_run=True)
    assert [c.action for c in report.changes] == ["write"]
    assert not home.exists()


# -- systemd ---------------------------------------------------------------------------


def test_systemd_timers_install_verify_and_uninstall(agents_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    agents_file.write_text(
        AGENTS.replace(
            'cron: "0 9 * * mon-fri"}', 'cron: "0 9 * * mon-fri", timezone: Europe/Berlin}'
        )
    )
    plan = plan_schedule(agents_file, backend="systemd", db_path=tmp_path / "runs.db", home=home)
    assert plan.problems == ()
    install(plan)
    folder = home / ".config" / "systemd" / "user"
    user_unit = folder / "backup.timer"
    user_unit.write_text("[Timer]\nOnCalendar=daily\n")
    units = sorted(p.name for p in folder.glob("agentos-*"))
    assert len(units) == 4
    timer = next(p for p in folder.glob("*daily-report.timer"))
    assert "OnCalendar=Mon..Fri *-*-* 09:00:00 Europe/Berlin" in timer.read_text()
    link = folder / "timers.target.wants" / timer.name
    assert link.is_symlink() and link.resolve() == timer.resolve()
    service = timer.with_suffix(".service").read_text()
    assert '"--agent" "daily-report" "--once"' in service
    assert not install(plan).changed

    if shutil.which("systemd-analyze"):
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        verified = subprocess.run(
            ["systemd-analyze", "verify", *(str(folder / u) for u in units)],
            capture_output=True,
            text=True,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
            timeout=60,
            check=False,
        )
        assert verified.returncode == 0, verified.stderr

    uninstall(None, backend="systemd", home=home)
    assert sorted(p.name for p in folder.iterdir()) == ["backup.timer", "timers.target.wants"]
    assert list((folder / "timers.target.wants").iterdir()) == []
