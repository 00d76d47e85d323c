"""The dashboard's tables: a DataTable that is refilled from each read without losing the
user's place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from agentos.tui.sorting import NATURAL, SortOrder, header

Cell = str | Text
"""What a cell holds: plain text, or styled text (right-aligned numbers, coloured states).

A str is shown literally: DataTable would read ``[`` in it as markup, and names such as
``background[embeddings]`` must survive."""


def literal(cell: Cell) -> Text:
    """A cell as Text, a str taken literally (never as markup)."""
    return cell if isinstance(cell, Text) else Text(cell)


def number(value: str) -> Text:
    """A cell for a figure: right-aligned so that columns of figures line up."""
    return Text(value, justify="right")


class StoreTable(DataTable[Cell]):
    """A row-cursor table whose rows are replaced by :meth:`replace_rows` on every read.

    Refilling keeps the user's place: when the rows are the same ones as before (the usual
    case, figures moving), only the cells that changed are updated, so the cursor and the
    scroll position stay put; when rows come or go (a new run starts), the table is
    rebuilt. Then, as in htop once a process is picked (its "follow" mode) and in k9s, the
    highlighted row stays the *same row* and *where the user sees it*: rows that arrive
    above it scroll in above the top edge instead of pushing it down the screen, so what
    was under the user's eye before a refresh is still there after it, and a key pressed
    on it acts on it. Only when that row is gone does the cursor keep its screen line,
    on whatever row is there now. A subclass that follows the newest rows while the user
    is elsewhere says so in :meth:`follows_top`. Subclasses name their columns in
    :attr:`COLUMNS` as ``(key, label)`` pairs and explain each in :attr:`EXPLAIN` (the
    help screen shows those sentences, :mod:`agentos.tui.help`).

    :attr:`order` and :attr:`filter_text` are the user's sort and filter
    (:mod:`agentos.tui.sorting`); the header marks the sort column. A subclass applies
    them in its ``show`` and re-applies them in :meth:`rearrange`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "app.focus_next", "Next table")]

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    EXPLAIN: ClassVar[dict[str, str]] = {}
    """One sentence per column key: what the figure is and where it comes from."""
    TITLE: ClassVar[str] = ""
    """The table's name, shown on its top border."""
    NATURAL_ORDER: ClassVar[SortOrder] = NATURAL

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._keys: list[str] = []
        self.order = self.NATURAL_ORDER
        self.filter_text = ""
        self._headers = self.headers()
        for key, label in self._headers:
            self.add_column(Text(label), key=key)

    def shown_columns(self) -> tuple[tuple[str, str], ...]:
        """The columns shown now (``(key, label)``); all of :attr:`COLUMNS` here."""
        return self.COLUMNS

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The columns shown, labelled with the sort mark."""
        return tuple((key, header(label, key, self.order)) for key, label in self.shown_columns())

    def rearrange(self) -> None:
        """Show the rows again after the user changed :attr:`order` or the filter."""

    def title(self, extra: str = "") -> str:
        """The border title: the table's name, ``extra``, and the filter when one is set."""
        text = self.filter_text.strip()
        return self.TITLE + extra + (f" · filter /{text}" if text else "")

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._keys or not self.is_valid_row_index(self.cursor_row):
            return None
        return self._keys[self.cursor_row]

    def replace_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        """Show ``rows`` (``(key, cells)`` with one cell per column, keys unique)."""
        rows = [(key, [literal(c) for c in cells]) for key, cells in rows]
        keys = [key for key, _ in rows]
        headers = self.headers()
        columns = [key for key, _ in headers]
        if keys == self._keys and headers == self._headers:
            for key, cells in rows:
                old = self.get_row(key)
                for column, before, after in zip(columns, old, cells, strict=True):
                    if before != after:
                        self.update_cell(key, column, after, update_width=True)
            return
        selected = self.selected_key
        follow = self.follows_top()
        was_on = self.cursor_row
        line = was_on - round(self.scroll_y)  # the cursor's line among the rows shown
        self.clear(columns=True)  # so that widths fit these rows, not every row ever shown
        for key, label in headers:
            self.add_column(Text(label), key=key)
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._keys = keys
        self._headers = headers
        if follow or not keys:
            return  # clear() left the cursor on the first row and the table at the top
        row = keys.index(selected) if selected in keys else min(was_on, len(keys) - 1)
        self._place(row, max(0, row - line))

    def follows_top(self) -> bool:
        """Whether a rebuild puts the cursor on the first row and shows the top (the
        newest rows) rather than keeping the selected row in place. Never, here."""
        return False

    def _place(self, row: int, scroll_y: int) -> None:
        """The cursor on ``row`` with the table scrolled ``scroll_y`` rows down.

        Set now, while the virtual size is still the old one (the same in the usual case,
        a full table refilled), so that no frame shows the table at its top; set again
        after the refresh that measures the new rows, in case the old size clamped it."""
        self.move_cursor(row=row, animate=False, scroll=False)
        self.scroll_to(y=scroll_y, animate=False, immediate=True)
        self.call_after_refresh(self.scroll_to, y=scroll_y, animate=False, immediate=True)
