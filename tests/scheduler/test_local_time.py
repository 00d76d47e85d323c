"""``--local-time``: a schedule in another time zone translated into the machine's local
time for cron and launchd.

The translation is checked three ways: the exact lines for a few zones (whole hours, half
hours, daylight saving in one zone, in both on different dates); every fire of the
runtime's own reading (:class:`~agentos.scheduler.fires.CronSeries`) over a year lands on
a translated line read the Vixie cron way, except the fires the translation warns about;
and a year of cron starts fed to ``--once``'s decision (:func:`due_once`) runs every fire
once, at its time. Installing goes through a stand-in ``crontab`` program on ``PATH`` that
keeps the crontab in a file, so the real user crontab is never touched."""

from __future__ import annotations

import os
import plistlib
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agentos.schedule import install, plan_schedule, show
from agentos.schedule.calendar import crontab_fields, local_translation, parse_cron
from agentos.scheduler.fires import CronSeries, due_once
from agentos.spec.agents import AgentSpec

from ..cli_process import run_agentos
from .test_install import launchd_fires, vixie_fires

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 1, tzinfo=UTC)
"""The translations below look at the year from here."""


@pytest.fixture
def local_zone() -> Iterator[object]:
    """Sets this process's local time zone (what cron and launchd read) for the test."""
    old = os.environ.get("TZ")

    def set_zone(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    try:
        yield set_zone
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def translated(expression: str, zone: str) -> list[str]:
    translation = local_translation(parse_cron(expression), zone, start=START.timestamp())
    return [crontab_fields(s) for s in translation.schedules]


@pytest.mark.parametrize(
    ("expression", "zone", "machine", "lines"),
    [
        # no daylight saving between them: one line, whole hours or not
        ("0 9 * * *", "Asia/Tokyo", "UTC", ["0 0 * * *"]),
        ("30 7 * * mon", "Asia/Tokyo", "UTC", ["30 22 * * 0"]),  # the day before
        ("0 9 * * *", "Asia/Kolkata", "UTC", ["30 3 * * *"]),
        # Berlin keeps summer time, UTC does not: both hours
        ("0 9 * * mon-fri", "Europe/Berlin", "UTC", ["0 7,8 * * 1-5"]),
        # both keep summer time, from different Sundays: both hours again
        ("0 9 * * *", "America/New_York", "Europe/Berlin", ["0 14,15 * * *"]),
        # the first of the month at midnight in Berlin is the last day before in UTC
        ("0 0 1 1 *", "Europe/Berlin", "UTC", ["0 22,23 28-31 1,12 *"]),
    ],
)
def test_translated_lines(
    local_zone: object, expression: str, zone: str, machine: str, lines: list[str]
) -> None:
    local_zone(machine)  # type: ignore[operator]
    assert translated(expression, zone) == lines


CASES = [
    ("Europe/Berlin", "UTC"),
    ("Asia/Kolkata", "UTC"),
    ("Australia/Lord_Howe", "UTC"),  # a half-hour daylight-saving change
    ("America/New_York", "Europe/Berlin"),
    ("UTC", "Europe/Berlin"),
    ("Pacific/Auckland", "America/Los_Angeles"),  # opposite seasons, 19 to 21 hours
]
EXPRESSIONS = [
    "0 9 * * mon-fri",
    "30 2 * * *",
    "*/15 8-18 */2 * 1",
    "30 4 1,15 * 5",
    "0 0 1 * *",
    "59 23 31 * *",
    "0 12 * jan-mar sun",
    "0 0 28 2 *",
    "0 */6 * * sat,sun",
]


@pytest.mark.parametrize(("zone", "machine"), CASES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_every_fire_lands_on_a_translated_line(
    local_zone: object, zone: str, machine: str, expression: str
) -> None:
    local_zone(machine)  # type: ignore[operator]
    translation = local_translation(parse_cron(expression), zone, start=START.timestamp())
    first = datetime.fromtimestamp(START.timestamp()) - timedelta(days=1)
    starts: set[datetime] = set()
    for schedule in translation.schedules:
        starts |= vixie_fires(crontab_fields(schedule), first, 368)
    series = CronSeries(expression, ZoneInfo(zone))
    end = START.timestamp() + 360 * 86400
    fire = series.next_after(START.timestamp())
    fires = 0
    missed: list[datetime] = []
    while fire < end:
        fires += 1
        at = datetime.fromtimestamp(fire)
        if at.fold or at.replace(fold=0) not in starts:
            missed.append(at)
        fire = series.next_after(fire)

    assert fires > 0
    warned = " ".join(translation.warnings)
    assert [f"{m:%Y-%m-%d %H:%M}" in warned for m in missed] == [True] * len(missed)
    assert len(translation.warnings) == len(missed) <= 2  # only at clock changes


@pytest.mark.parametrize(("zone", "machine"), [("Europe/Berlin", "UTC"), CASES[3]])
def test_a_year_of_cron_starts_runs_each_fire_once_at_its_time(
    local_zone: object, zone: str, machine: str
) -> None:
    local_zone(machine)  # type: ignore[operator]
    spec = AgentSpec.model_validate(
        {
            "name": "reminder",
            "prompt": "hi",
            "life_cycle": {
                "type": "scheduled",
                "cron": "0 9 * * mon-fri",
                "timezone": zone,
                "catch_up": False,
            },
        }
    )
    translation = local_translation(parse_cron("0 9 * * mon-fri"), zone, start=START.timestamp())
    first = datetime.fromtimestamp(START.timestamp()) + timedelta(days=1)
    starts = sorted(
        at.timestamp()
        for schedule in translation.schedules
        for at in vixie_fires(crontab_fields(schedule), first, 360)
    )
    series = CronSeries("0 9 * * mon-fri", ZoneInfo(zone))
    last_seen: float | None = series.latest_at_or_before(starts[0] - 1)
    ran: list[float] = []
    idle = 0
    for now in starts:
        decision = due_once(spec, series, now=now, last_seen=last_seen)
        if decision.action == "run":
            assert decision.fire is not None and decision.fire.time == now  # on time
            ran.append(now)
            last_seen = now
        else:
            assert decision.action == "claimed", (datetime.fromtimestamp(now), decision)
            idle += 1
    expected = []
    fire = series.next_after(starts[0] - 1)
    while fire <= starts[-1]:
        expected.append(fire)
        fire = series.next_after(fire)
    assert ran == expected
    assert idle == len(starts) - len(ran) > 0  # the other hour's starts ran nothing


# -- the plan and install ---------------------------------------------------------------

BERLIN = """\
- name: standup
  prompt: hi
  life_cycle: {type: scheduled, cron: "0 9 * * mon-fri", timezone: Europe/Berlin}
- name: tokyo
  prompt: hi
  life_cycle: {type: scheduled, cron: "30 7 * * mon", timezone: Asia/Tokyo}
- name: plain
  prompt: hi
  life_cycle: {type: scheduled, cron: "0 6 * * *"}
"""


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(BERLIN)
    return path


def test_without_local_time_cron_still_refuses_and_says_how(
    agents: Path, tmp_path: Path, local_zone: object
) -> None:
    local_zone("UTC")  # type: ignore[operator]
    plan = plan_schedule(agents, backend="cron", db_path=tmp_path / "a.db")

    assert [e.agent for e in plan.entries] == ["plain"]
    reasons = {p.agent: p.reason for p in plan.problems}
    assert set(reasons) == {"standup", "tokyo"}
    assert "CRON_TZ" in reasons["standup"] and "--local-time" in reasons["standup"]
    assert "(UTC)" in reasons["standup"]


def test_cron_lines_in_local_time(agents: Path, tmp_path: Path, local_zone: object) -> None:
    local_zone("UTC")  # type: ignore[operator]
    plan = plan_schedule(agents, backend="cron", db_path=tmp_path / "a.db", local_time=True)

    assert plan.problems == ()
    standup, tokyo, plain = plan.entries
    comment, line = (a.content for a in standup.artifacts)
    assert comment == (
        "# standup: 0 9 * * mon-fri (Europe/Berlin, translated into this machine's local "
        "time by --local-time)"
    )
    assert line.startswith("0 7,8 * * 1-5 cd ")
    assert standup.notes[0] == (
        "'0 9 * * mon-fri' in Europe/Berlin is, in this machine's local time (UTC): "
        "'0 8 * * 1-5' while Europe/Berlin is 1 h ahead of it; '0 7 * * 1-5' while "
        "Europe/Berlin is 2 h ahead of it"
    )
    assert "nothing due" in standup.notes[1] and standup.warnings == ()
    assert [a.content.split(" cd ")[0] for a in tokyo.artifacts[1:]] == ["30 22 * * 0"]
    assert len(tokyo.notes) == 1  # one difference all year: nothing about daylight saving
    assert plain.notes == () and plain.artifacts[1].content.startswith("0 6 * * * cd ")
    assert "0 7,8 * * 1-5" in show(plan) and "nothing due" in show(plan)


def test_launchd_intervals_in_local_time(agents: Path, tmp_path: Path, local_zone: object) -> None:
    local_zone("UTC")  # type: ignore[operator]
    home = tmp_path / "home"
    plan = plan_schedule(
        agents, backend="launchd", db_path=tmp_path / "a.db", home=home, local_time=True
    )
    install(plan)

    standup = plan.entries[0]
    [artifact] = standup.artifacts
    assert artifact.path is not None
    job = plistlib.loads(artifact.path.read_bytes())
    intervals = job["StartCalendarInterval"]
    assert {(i["Weekday"], i["Hour"], i["Minute"]) for i in intervals} == {
        (d, h, 0) for d in range(1, 6) for h in (7, 8)
    }
    day = datetime(2026, 6, 1)
    fires = launchd_fires(intervals, day, 7)
    assert datetime(2026, 6, 1, 7, 0) in fires and datetime(2026, 6, 6, 7, 0) not in fires


def test_systemd_keeps_the_zone(agents: Path, tmp_path: Path) -> None:
    plan = plan_schedule(
        agents, backend="systemd", db_path=tmp_path / "a.db", home=tmp_path, local_time=True
    )
    timer = plan.entries[0].artifacts[1].content
    assert "OnCalendar=Mon..Fri *-*-* 09:00:00 Europe/Berlin" in timer
    assert plan.entries[0].notes == ()


FAKE_CRONTAB = """\
#!/bin/sh
# a stand-in for crontab(1): the crontab lives in $FAKE_CRONTAB_FILE
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB_FILE" ]; then cat "$FAKE_CRONTAB_FILE"; else
        echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -r) rm -f "$FAKE_CRONTAB_FILE" ;;
  -) cat > "$FAKE_CRONTAB_FILE" ;;
  *) echo "fake crontab: $1?" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``crontab`` on PATH is a script that keeps the crontab in a file, for this test
    and the processes it starts; returns that file."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "crontab"
    program.write_text(FAKE_CRONTAB)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    table = tmp_path / "crontab.txt"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CRONTAB_FILE", str(table))
    return table


def test_the_scheduled_example_installs_with_local_time(fake_crontab: Path, tmp_path: Path) -> None:
    example = ROOT / "examples" / "scheduled.yaml"
    db = tmp_path / "runs.db"
    args = ["schedule", "install", str(example), "--backend", "cron", "--db", str(db)]
    utc = {"TZ": "UTC"}

    refused = run_agentos(*args, cwd=tmp_path, env=utc)
    dry = run_agentos(*args, "--local-time", "--dry-run", cwd=tmp_path, env=utc)
    assert not fake_crontab.exists()  # neither wrote anything
    done = run_agentos(*args, "--local-time", cwd=tmp_path, env=utc)
    again = run_agentos(*args, "--local-time", cwd=tmp_path, env=utc)

    assert refused.returncode == 1
    assert "not installed morning-reminder" in refused.stdout
    assert "install with --local-time" in refused.stdout
    assert dry.returncode == 0, dry.stderr
    assert "0 7,8 * * 1-5 cd " in dry.stdout
    assert done.returncode == 0, done.stderr
    assert "write crontab" in done.stdout
    assert "morning-reminder: '0 9 * * mon-fri' in Europe/Berlin is" in done.stdout
    assert "'0 8 * * 1-5' while Europe/Berlin is 1 h ahead of it" in done.stdout
    lines = [line for line in fake_crontab.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("0 7,8 * * 1-5 cd ")
    assert "--agent morning-reminder --once" in lines[0]
    assert again.returncode == 0 and "keep crontab" in again.stdout
