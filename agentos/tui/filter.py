"""The filter line: ``/`` opens it under the tables, and what is typed filters the table
that had the focus, as it is typed (k9s's ``/``)."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

from agentos.tui.table import StoreTable


class FilterBar(Input):
    """An input for the filter of :attr:`target`, hidden until :meth:`open`.

    ``enter`` keeps the filter and goes back to the table (its title then shows the
    filter); ``escape`` clears it. The app applies each change (``Input.Changed``).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear the filter"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="filter by name or status", id=id)
        self.target: StoreTable | None = None

    def open(self, target: StoreTable) -> None:
        """Show the line for ``target``'s filter, with the cursor at its end."""
        self.target = target
        self.value = target.filter_text
        self.cursor_position = len(self.value)
        self.placeholder = (
            f"filter {target.TITLE} by name or status (enter: keep it, escape: clear it)"
        )
        # Shown and focused now, not after a refresh (Widget.focus waits for one): keys
        # typed right after the / (a paste, a fast typist) must come here, not to the
        # table, where c or p would cancel or pause.
        self.display = True
        self.screen.set_focus(self)

    def close(self) -> None:
        """Hide the line and give the focus back to the table it filters."""
        self.display = False
        if self.target is not None:
            self.target.focus()

    def action_clear(self) -> None:
        self.value = ""  # posts Input.Changed: the app shows the table unfiltered
        self.close()
