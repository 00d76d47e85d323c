"""CPU and memory of a model server agentos started, read from ``/proc`` (Linux).

No psutil: two small files per snapshot are all ``top`` needs. ``/proc/PID/stat`` gives
the CPU time the process has used (user + system, in clock ticks) and ``/proc/PID/statm``
its resident pages. CPU is a share of one core between two readings (``150%`` is one and a
half cores busy), so the first reading of a process only sets the baseline. Where
``/proc`` is missing (macOS) or the process is gone, the figures are None and ``top``
shows ``-``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def resident_bytes(pid: int) -> int | None:
    """The process's resident memory, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class ServerUsage:
    """Successive readings of one server process; the pid may change on a restart."""

    pid: int | None = None
    _last: tuple[float, float] | None = field(default=None, repr=False)
    """(monotonic time, CPU seconds) of the previous reading of ``pid``."""

    def read(self, pid: int | None, now: float | None = None) -> dict[str, float | int | None]:
        """``cpu_pct`` (None on the first reading of a pid) and ``rss_bytes``."""
        now = time.monotonic() if now is None else now
        if pid != self.pid:
            self.pid, self._last = pid, None
        if pid is None:
            return {"pid": None, "cpu_pct": None, "rss_bytes": None}
        used = cpu_seconds(pid)
        cpu_pct = None
        if used is not None and self._last is not None and now > self._last[0]:
            cpu_pct = round(100 * max(0.0, used - self._last[1]) / (now - self._last[0]), 1)
        self._last = (now, used) if used is not None else None
        return {"pid": pid, "cpu_pct": cpu_pct, "rss_bytes": resident_bytes(pid)}
