"""The confirmation asked before cancelling a run (a cancelled run cannot be resumed)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

from agentos.tui.format import STATE_STYLES, count
from agentos.tui.rows import RunRow


class ConfirmCancel(ModalScreen[bool]):
    """Asks whether to cancel ``run``, naming it (agent, id, status, progress) as it was
    when ``c`` was pressed; dismissed with True for ``y``, False otherwise. The run named
    is the one cancelled, whatever the dashboard shows meanwhile."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Cancel the run"),
        Binding("n,escape", "answer(False)", "Keep it running"),
    ]

    def __init__(self, run: RunRow) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        run = self.run
        with Vertical(id="confirm-dialog"):
            yield Label(
                Text.assemble("Cancel this run of ", (run.agent, "bold"), "?"),
                id="confirm-question",
            )
            yield Label(
                Text.assemble(
                    ("id      ", "dim"),
                    (run.id, "bold"),
                    ("\nstatus  ", "dim"),
                    (run.status, STATE_STYLES.get(run.status, "")),
                    ("\ngood    ", "dim"),
                    f"{count(run.successes)}/{count(run.wanted) if run.wanted is not None else '-'}"
                    f" in {count(run.attempts)} attempts",
                ),
                id="confirm-run",
            )
            yield Label(
                Text.assemble(
                    ("y", "bold"),
                    " cancel it    ",
                    ("n", "bold"),
                    " / ",
                    ("escape", "bold"),
                    " keep it running",
                )
            )

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
