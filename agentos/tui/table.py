"""The dashboard's tables: a DataTable that is refilled from each read without losing the
user's place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Squeezed:
    """A cell with a shorter form, shown when the full one would push a column out (a
    group of runs' start range: its last start alone)."""

    full: Cell
    short: Cell


def full(cell: Cell | Squeezed) -> Cell:
    return cell.full if isinstance(cell, Squeezed) else cell


def short(cell: Cell | Squeezed) -> Cell:
    return cell.short if isinstance(cell, Squeezed) else cell


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

    Columns fit the width, as in k9s: when the rows are wider than the table, the columns
    of :attr:`DROP_ORDER` are left out, the first first, until the rest fits (measured on
    the rows shown, so the choice is made again on each read and each resize; a cell with
    a short form, :class:`Squeezed`, takes it where that keeps a column). The others
    always show, and so does the column the user sorted by: only when they alone are too
    wide does a horizontal scrollbar take a row. So an 80-column terminal shows the
    essential columns whole, and a wider one more of them, up to all.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "app.focus_next", "Next")]

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    EXPLAIN: ClassVar[dict[str, str]] = {}
    """One sentence per column key: what the figure is and where it comes from."""
    TITLE: ClassVar[str] = ""
    """The table's name, shown on its top border."""
    NATURAL_ORDER: ClassVar[SortOrder] = NATURAL
    DROP_ORDER: ClassVar[tuple[str, ...]] = ()
    """Keys of the columns that may be left out when the table is too narrow, in the order
    they go; the least useful first."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._keys: list[str] = []
        self.order = self.NATURAL_ORDER
        self.filter_text = ""
        self._rows: list[tuple[str, list[Text]]] = []
        self._short_rows: list[tuple[str, list[Text]]] = []
        self.shown_columns: tuple[str, ...] = tuple(key for key, _ in self.all_columns())
        """The keys of the columns shown now, in :meth:`all_columns` order."""
        self.squeezed = False
        """Whether the cells with a short form show it now."""
        self._headers = self.headers(self.shown_columns)
        for key, label in self._headers:
            self.add_column(Text(label), key=key)

    def all_columns(self) -> tuple[tuple[str, str], ...]:
        """The table's columns now (``(key, label)``), shown or left out for the width;
        all of :attr:`COLUMNS` here. The rows have one cell for each."""
        return self.COLUMNS

    def headers(self, keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
        """The columns ``keys``, labelled with the sort mark."""
        return tuple(
            (key, header(label, key, self.order))
            for key, label in self.all_columns()
            if key in keys
        )

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

    def replace_rows(self, rows: Sequence[tuple[str, Sequence[Cell | Squeezed]]]) -> None:
        """Show ``rows`` (``(key, cells)`` with one cell per column of
        :meth:`all_columns`, keys unique)."""
        self._rows = [(key, [literal(full(c)) for c in cells]) for key, cells in rows]
        self._short_rows = [(key, [literal(short(c)) for c in cells]) for key, cells in rows]
        self._fill()

    def _fill(self) -> None:
        shown, squeezed = self._fitting_columns()
        rows = self._short_rows if squeezed else self._rows
        keys = [key for key, _ in rows]
        headers = self.headers(shown)
        positions = [i for i, (key, _) in enumerate(self.all_columns()) if key in shown]
        if keys == self._keys and headers == self._headers and squeezed == self.squeezed:
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
        for key, label in headers:
            self.add_column(Text(label), key=key)
        for key, cells in rows:
            self.add_row(*(cells[i] for i in positions), key=key)
        self._keys = keys
        self._headers = headers
        self.shown_columns = shown
        self.squeezed = squeezed
        if follow or not keys:
            return  # clear() left the cursor on the first row and the table at the top
        row = keys.index(selected) if selected in keys else min(was_on, len(keys) - 1)
        self._place(row, max(0, row - line))

    def _fitting_columns(self) -> tuple[tuple[str, ...], bool]:
        """The columns to show, and whether the cells with a short form show it: all of
        them less those of :attr:`DROP_ORDER` (first first, never the sort column) that
        must go for the rest to fit the width (a vertical scrollbar's column kept free,
        so that one coming does not push the last column out). The short forms are taken
        only when they keep a column that the full ones would drop."""
        keys = [key for key, _ in self.all_columns()]
        if self.size.width <= 0:  # not laid out yet: the resize that follows decides
            return tuple(keys), False
        whole = self._fit(self._rows)
        if self._short_rows == self._rows:
            return whole, False
        squeezed = self._fit(self._short_rows)
        return (whole, False) if whole == squeezed else (squeezed, True)

    def _fit(self, rows: list[tuple[str, list[Text]]]) -> tuple[str, ...]:
        """The columns that fit the width with ``rows``' cells (see :meth:`_fitting_columns`)."""
        columns = self.all_columns()
        width = self.size.width - self.styles.scrollbar_size_vertical
        needed = {
            key: 2 * self.cell_padding
            + max(
                [Text(header(label, key, self.order)).cell_len]
                + [cells[i].cell_len for _, cells in rows]
            )
            for i, (key, label) in enumerate(columns)
        }
        total = sum(needed.values())
        sorted_by = self.order.column if self.order != self.NATURAL_ORDER else None
        for key in self.DROP_ORDER:
            if total <= width:
                break
            if key in needed and key != sorted_by:
                total -= needed.pop(key)
        return tuple(key for key, _ in columns if key in needed)

    def on_resize(self) -> None:
        """Fit the columns to the new width."""
        if self._fitting_columns() != (self.shown_columns, self.squeezed):
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
