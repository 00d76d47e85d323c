"""The messages the dashboard's workers post back to the UI thread: one small value per
read or write, never one per event in the store."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from agentos.tui.rows import TopView
from agentos.tui.timeline_data import Timeline


@dataclass
class ViewRead(Message):
    """A refresh read the store."""

    view: TopView


@dataclass
class TimelineRead(Message):
    """The timeline screen read its run (``timeline`` None: ``problem`` says why)."""

    timeline: Timeline | None
    problem: str | None = None


@dataclass
class CommandSent(Message):
    """A control command was inserted (``id`` set) or could not be (``problem`` set)."""

    command: str
    target: str
    label: str
    """What the command acts on, as the user knows it (an agent name, ``run 01a1…``)."""
    id: int | None = None
    problem: str | None = None
