"""The attach line: which runtimes the figures come from, or since when nothing runs."""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.widgets import Static

from agentos.tui.format import when
from agentos.tui.rows import TopView


class AttachStatus(Static):
    """``attached: N runtimes`` while runtimes write snapshots; ``not attached — last seen
    …`` once none does (the figures below then are that runtime's last ones)."""

    def __init__(self, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(Text("reading the store …", style="dim"), id=id)
        self.tz = tz

    def show(self, view: TopView) -> None:
        self.update(self.describe(view))

    def describe(self, view: TopView) -> Text:
        if view.problem is not None:
            return Text.assemble(("! ", "bold yellow"), (view.problem, "yellow"))
        attached = view.attached
        if attached:
            pids = ", ".join(str(r.pid) for r in attached)
            plural = "s" if len(attached) > 1 else ""
            return Text.assemble(
                ("● ", "bold green"),
                (f"attached: {len(attached)} runtime{plural}", "bold"),
                (f" (pid{plural} {pids})", "dim"),
            )
        last_seen = view.last_seen
        if last_seen is None:
            return Text.assemble(
                ("○ ", "bold yellow"),
                ("not attached", "bold"),
                (" — nothing has run on this database yet", "dim"),
            )
        pid = view.runtimes[-1].pid
        return Text.assemble(
            ("○ ", "bold yellow"),
            ("not attached", "bold"),
            f" — last seen {when(last_seen, self.tz)}",
            (f" (pid {pid})", "dim"),
        )
