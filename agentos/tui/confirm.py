"""The confirmation asked before cancelling a run (a cancelled run cannot be resumed)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

from agentos.tui.rows import RunRow


class ConfirmCancel(ModalScreen[bool]):
    """Asks whether to cancel ``run``; dismissed with True for ``y``, False otherwise."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Cancel the run"),
        Binding("n,escape", "answer(False)", "Keep it running"),
    ]

    def __init__(self, run: RunRow) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label(
                Text.assemble(
                    "Cancel run ", (self.run.id, "bold"), " of ", (self.run.agent, "bold"), "?"
                ),
                id="confirm-question",
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
