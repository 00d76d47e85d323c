"""``agentos schedule``: scheduled agents as crontab lines, launchd jobs or systemd timers.

:mod:`~agentos.schedule.calendar` turns cron expressions into what each backend takes,
:mod:`~agentos.schedule.plan` computes the entries of one agents file (touching nothing),
and :mod:`~agentos.schedule.install` applies, removes or compares them.
"""

from agentos.schedule.calendar import UnsupportedSchedule
from agentos.schedule.install import Change, InstallReport, entry_status, install, show, uninstall
from agentos.schedule.plan import (
    BACKENDS,
    AgentNote,
    Artifact,
    Backend,
    ScheduleEntry,
    ScheduleError,
    SchedulePlan,
    default_agentos_command,
    default_backend,
    plan_schedule,
)

__all__ = [
    "BACKENDS",
    "AgentNote",
    "Artifact",
    "Backend",
    "Change",
    "InstallReport",
    "ScheduleEntry",
    "ScheduleError",
    "SchedulePlan",
    "UnsupportedSchedule",
    "default_agentos_command",
    "default_backend",
    "entry_status",
    "install",
    "plan_schedule",
    "show",
    "uninstall",
]
