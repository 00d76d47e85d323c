"""How the dashboard writes numbers, durations and times: short, fixed-ish width, no units
that change meaning between rows (seconds stay seconds until a minute has passed)."""

from __future__ import annotations

from datetime import datetime, tzinfo

STATE_STYLES = {
    "running": "green",
    "paused": "yellow",
    "paused (budget)": "yellow",
    "failed": "red",
    "failing": "red",
    "cancelled": "red",
    "crashed": "bold red",
    "succeeded": "",
    "idle": "dim",
}
"""How a process's (or a run's) state is coloured; unknown states are plain."""


def duration(seconds: float | None) -> str:
    """``0s``, ``0.7ms``, ``42ms``, ``5.0s``, ``12m05s``, ``3h12m``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s == 0:
        return "0s"
    if s < 0.01:
        return f"{s * 1000:.1f}ms"
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        minutes, rest = divmod(int(s), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(s), 3600)
    return f"{hours}h{rest // 60:02d}m"


def count(n: int | float | None) -> str:
    """An integer with thousands separators; ``-`` for None."""
    if n is None:
        return "-"
    return f"{int(n):,}"


def size(n_bytes: int | None) -> str:
    """``512K``, ``212M``, ``1.3G``; ``-`` for None."""
    if n_bytes is None:
        return "-"
    if n_bytes < 1 << 20:
        return f"{n_bytes / 1024:.0f}K"
    if n_bytes < 1 << 30:
        return f"{n_bytes / (1 << 20):.0f}M"
    return f"{n_bytes / (1 << 30):.1f}G"


def percent(value: float | None) -> str:
    """``35%``; ``-`` for None."""
    return "-" if value is None else f"{value:.0f}%"


def rate(per_second: float) -> str:
    """Jobs per second: two significant decimals below 10, none above."""
    return f"{per_second:.2f}" if per_second < 10 else f"{per_second:.0f}"


def when(timestamp: float, tz: tzinfo | None) -> str:
    """A full local date and time, ``2026-11-21 08:04:43`` (``tz`` None: the local zone)."""
    return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S")


def clock_or_date(timestamp: float, now: float, tz: tzinfo | None) -> str:
    """``08:04:43`` for a time on the same day as ``now``, else ``11-20 08:04``."""
    moment = datetime.fromtimestamp(timestamp, tz)
    if moment.date() == datetime.fromtimestamp(now, tz).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%m-%d %H:%M")


def elide(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"
