"""The dashboard's tables: a DataTable that is refilled from each read without losing the
user's place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

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
    :attr:`COLUMNS` as ``(key, label)`` pairs.

    Columns fit the width, as in k9s: when the rows are wider than the table, the columns
    of :attr:`DROP_ORDER` are left out, the first first, until the rest fits (measured
    on the rows shown, so the choice is made again on each read and each resize). The
    others always show: only when they alone are too wide does a horizontal scrollbar
    take a row. So an 80-column terminal shows the essential columns whole, and a wider
    one more of them, up to all.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "app.focus_next", "Next table")]

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    DROP_ORDER: ClassVar[tuple[str, ...]] = ()
    """Keys of the columns that may be left out when the table is too narrow, in the order
    they go; the least useful first."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._keys: list[str] = []
        self._rows: list[tuple[str, list[Text]]] = []
        self.shown_columns: tuple[str, ...] = tuple(key for key, _ in self.COLUMNS)
        """The keys of the columns shown now, in :attr:`COLUMNS` order."""
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._keys or not self.is_valid_row_index(self.cursor_row):
            return None
        return self._keys[self.cursor_row]

    def replace_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        """Show ``rows`` (``(key, cells)`` with one cell per column, keys unique)."""
        self._rows = [(key, [literal(c) for c in cells]) for key, cells in rows]
        self._fill()

    def _fill(self) -> None:
        rows = self._rows
        keys = [key for key, _ in rows]
        shown = self._fitting_columns()
        positions = [i for i, (key, _) in enumerate(self.COLUMNS) if key in shown]
        if keys == self._keys and shown == self.shown_columns:
            for key, cells in rows:
                old = self.get_row(key)
                for column, before, position in zip(shown, old, positions, strict=True):
                    after = cells[position]
                    if before != after:
                        self.update_cell(key, column, after, update_width=True)
            return
        selected = self.selected_key
        follow = self.follows_top()
        was_on = self.cursor_row
        line = was_on - round(self.scroll_y)  # the cursor's line among the rows shown
        self.clear(columns=True)  # so that widths fit these rows, not every row ever shown
        for key, label in self.COLUMNS:
            if key in shown:
                self.add_column(label, key=key)
        for key, cells in rows:
            self.add_row(*(cells[i] for i in positions), key=key)
        self._keys = keys
        self.shown_columns = shown
        if follow or not keys:
            return  # clear() left the cursor on the first row and the table at the top
        row = keys.index(selected) if selected in keys else min(was_on, len(keys) - 1)
        self._place(row, max(0, row - line))

    def _fitting_columns(self) -> tuple[str, ...]:
        """The columns to show: all, less those of :attr:`DROP_ORDER` (first first) that
        must go for the rest to fit the width (a vertical scrollbar's column kept free,
        so that one coming does not push the last column out)."""
        keys = [key for key, _ in self.COLUMNS]
        width = self.size.width - self.styles.scrollbar_size_vertical
        if self.size.width <= 0:  # not laid out yet: the resize that follows decides
            return tuple(keys)
        needed = {
            key: 2 * self.cell_padding
            + max([Text(label).cell_len] + [cells[i].cell_len for _, cells in self._rows])
            for i, (key, label) in enumerate(self.COLUMNS)
        }
        total = sum(needed.values())
        for key in self.DROP_ORDER:
            if total <= width:
                break
            if key in needed:
                total -= needed.pop(key)
        return tuple(key for key in keys if key in needed)

    def on_resize(self) -> None:
        """Fit the columns to the new width."""
        if self._fitting_columns() != self.shown_columns:
            self._fill()

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
