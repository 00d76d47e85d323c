"""Sorting and filtering the dashboard's tables, as htop and k9s users expect.

Each table has a :class:`SortOrder`: a column and a direction, or the table's natural
order (``column=None``: the engines and processes as the runtimes list them). ``<`` and
``>`` move the sort to the previous or next column (:func:`cycle`), ``I`` reverses it,
and a click on a header sorts by that column, or reverses it when it already is the one
(:func:`clicked`). The header shows the sort column with ``▲`` (ascending) or ``▼``.

A filter is text matched, case-insensitively and anywhere, against a table's name and
state columns (an agent's name or a run's status: ``failed``, ``fetch``). The engines and
processes tables hold every row the runtimes report, so they sort and filter in memory
(:func:`arrange`); the runs table lists a page of a table that grows without bound, so
its order and filter are a query (:mod:`agentos.tui.runs_query`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

Row = TypeVar("Row")

SortKey = Callable[[Any], Any]
"""The value a row is sorted by in one column (comparable within that column)."""

ASCENDING_MARK = "▲"
DESCENDING_MARK = "▼"


@dataclass(frozen=True, slots=True)
class SortOrder:
    """Sort by ``column`` (a column key), largest first when ``descending``; ``column``
    None: the table's natural order."""

    column: str | None = None
    descending: bool = False

    def reversed(self) -> SortOrder:
        return replace(self, descending=not self.descending)


NATURAL = SortOrder()

TEXT_COLUMNS = frozenset({"engine", "name", "agent", "kind", "state", "status", "endpoint", "id"})
"""Columns that sort A to Z when first picked; the others (figures, times) largest first,
as htop sorts CPU%."""


def first_order(column: str) -> SortOrder:
    """The order a column gets when it is picked: text ascending, figures descending."""
    return SortOrder(column, descending=column not in TEXT_COLUMNS)


def cycle(order: SortOrder, columns: Sequence[str], step: int, *, natural: bool) -> SortOrder:
    """The order after moving the sort ``step`` columns (``+1``: ``>``, ``-1``: ``<``).

    With ``natural``, the natural order is one stop of the cycle (before the first column);
    without it (the runs table, whose natural order is a column) only columns are.
    """
    stops: list[str | None] = [None, *columns] if natural else list(columns)
    at = stops.index(order.column) if order.column in stops else 0
    column = stops[(at + step) % len(stops)]
    return NATURAL if column is None else first_order(column)


def clicked(order: SortOrder, column: str) -> SortOrder:
    """The order after a click on ``column``'s header: that column, or reversed if it
    already was the sort column."""
    return order.reversed() if order.column == column else first_order(column)


def header(label: str, column: str, order: SortOrder) -> str:
    """A column's header label, with the sort mark when it is the sort column."""
    if order.column != column:
        return label
    return f"{label} {DESCENDING_MARK if order.descending else ASCENDING_MARK}"


def matches(text: str, fields: Iterable[str]) -> bool:
    """Whether the filter ``text`` occurs in one of ``fields`` (ignoring case); an empty
    filter matches everything."""
    needle = text.strip().casefold()
    return not needle or any(needle in field.casefold() for field in fields)


def present(value: Any) -> tuple[bool, Any]:
    """A sort value that puts a missing figure (None: no latency yet) below every other."""
    return (value is not None, value if value is not None else 0)


def arrange(
    rows: Sequence[Row],
    order: SortOrder,
    sort_keys: Mapping[str, Callable[[Row], Any]],
    text: str,
    fields: Callable[[Row], Iterable[str]],
) -> list[Row]:
    """``rows`` that match the filter ``text`` (in ``fields``), in ``order``.

    The sort is stable, so rows that tie keep their natural order whichever the direction.
    """
    kept = [row for row in rows if matches(text, fields(row))]
    if order.column is None:
        return kept
    return sorted(kept, key=sort_keys[order.column], reverse=order.descending)
