"""The recent runs table, newest first, with a perpetual agent's runs grouped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from agentos.tui.format import STATE_STYLES, clock_or_date, count, duration
from agentos.tui.rows import RunEntry, RunGroup, RunRow
from agentos.tui.runs_query import DEFAULT_ORDER, RunsQuery
from agentos.tui.table import Cell, Squeezed, StoreTable, number


class RunsTable(StoreTable):
    """One row per recent run: ``good/wanted`` results, attempts made, when it started
    and how long it took (so far, while it runs). The id comes last, in full, because it
    is long and what ``agentos replay`` takes; it is the first column to go when the
    terminal is narrow (80 columns), then the cluster node (when shown), the tries and the
    start time (the timeline, ``enter``, shows them all). Before any goes, a group's start
    range (``18:40:35–18:40:37``) is cut to its last start.

    Two ways to show new runs, chosen by where the user is. While the focus is elsewhere
    and the table is in its default order (newest first), it follows the newest runs,
    like htop's list before a process is picked: the top is shown and the cursor stays on
    the first line, whatever run comes there. Once the user is in the table (tab), or has
    sorted it by another column (the top then is not "the newest", so there is nothing to
    follow), the row they are on is theirs: it stays highlighted on the same screen line
    while rows come in above the top edge (the title says how many; ``home`` goes to
    them), so a ``c`` pressed a moment after a refresh still means the run that was under
    the eye, and the confirmation names it. A filter keeps the default order, so a
    filtered table still follows its newest run.

    Consecutive finished runs of one agent with one status are one row
    (:class:`~agentos.tui.rows.RunGroup`, ``▸ ticker ×1,160``) while grouping is on
    (``g``) and the table is sorted by start, agent or status (sorted by a figure, each
    run is a row: :data:`~agentos.tui.runs_query.GROUPING_ORDERS`); ``space`` shows a
    group's runs (``▾``, each under it) or folds them again, and ``enter`` on a group
    opens its latest run. The order, the filter and the groups are
    the store's query (:mod:`agentos.tui.runs_query`): a change posts
    :class:`QueryChanged` and the app reads again.
    """

    class QueryChanged(Message):
        """The user changed the table's order, filter, grouping or expanded groups."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Timeline"),
        Binding("home", "scroll_top", "Newest", show=False),
        Binding("space", "toggle_group", "Expand", show=False),
        Binding("g", "toggle_grouping", "Group", show=False),
    ]

    COLUMNS = (
        ("agent", "agent"),
        ("status", "status"),
        ("good", "good/wanted"),
        ("attempts", "tries"),
        ("started", "started"),
        ("took", "took"),
        ("id", "id"),
    )
    NODE_COLUMN = ("node", "node")
    """Shown before the id when a run in view records the cluster node it ran on."""
    EXPLAIN: ClassVar[dict[str, str]] = {
        "agent": "The agent the run is of; '▸ name ×N' is N consecutive runs of it that "
        "ended alike, folded into one row (space shows them, enter opens the latest).",
        "status": "running, succeeded, failed, cancelled, or crashed (the database says "
        "running but the process that ran it is gone).",
        "good": "Good results / results it wanted (- when it wanted no number); a group "
        "sums its runs.",
        "attempts": "Attempts it made at a result (each asks the model once; failed "
        "ones count); a group sums its runs.",
        "started": "When it started (a time today, else month-day and time); a group: its "
        "first and its last run's start.",
        "took": "How long it ran (so far, while it runs); a group: from its first run's "
        "start to its last run's end.",
        "node": "The cluster node it ran on (runs on Ray; shown when a run in view has one).",
        "id": "The run's id, what agentos replay and agentos runs take; a group: its latest run's.",
    }
    TITLE = "recent runs"
    NATURAL_ORDER = DEFAULT_ORDER
    DROP_ORDER = ("id", "node", "attempts", "started")

    def __init__(
        self, *, tz: tzinfo | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        self.node_shown = False
        super().__init__(id=id, classes=classes)
        self.tz = tz
        self.rows_by_key: dict[str, RunRow] = {}
        """The run each row stands for (a group's row: its latest run)."""
        self.groups: dict[str, RunGroup] = {}
        """The groups shown, by row key; and by the key of each run shown in one."""
        self.grouped = True
        self.expanded: set[str] = set()

    # -- what the store is asked ------------------------------------------------------------

    def store_query(self) -> RunsQuery:
        return RunsQuery(
            order=self.order,
            text=self.filter_text,
            grouped=self.grouped,
            expanded=frozenset(self.expanded),
        )

    def rearrange(self) -> None:
        self.post_message(self.QueryChanged())

    def action_toggle_grouping(self) -> None:
        self.grouped = not self.grouped
        self.notify(f"runs {'grouped' if self.grouped else 'not grouped'}", markup=False)
        self.rearrange()

    def action_toggle_group(self) -> None:
        key = self.selected_key
        group = self.groups.get(key) if key is not None else None
        if group is None:
            return
        if group.key in self.expanded:
            self.expanded.discard(group.key)
        else:
            self.expanded.add(group.key)
        self.rearrange()

    # -- what is shown -----------------------------------------------------------------------

    @property
    def selected(self) -> RunRow | None:
        key = self.selected_key
        return self.rows_by_key.get(key) if key is not None else None

    def run(self, run_id: str) -> RunRow | None:
        """The run ``run_id`` if the table shows it (alone, or as a group's latest)."""
        return self.rows_by_key.get(run_id) or next(
            (r for r in self.rows_by_key.values() if r.id == run_id), None
        )

    def all_columns(self) -> tuple[tuple[str, str], ...]:
        if not self.node_shown:
            return self.COLUMNS
        return (*self.COLUMNS[:-1], self.NODE_COLUMN, self.COLUMNS[-1])

    def follows_top(self) -> bool:
        return self.screen.focused is not self and self.order == DEFAULT_ORDER

    def show(self, entries: Sequence[RunEntry], now: float) -> None:
        self.node_shown = any(_nodes(e) for e in entries)
        self.rows_by_key = {}
        self.groups = {}
        rows: list[tuple[str, Sequence[Cell | Squeezed]]] = []
        for entry in entries:
            if isinstance(entry, RunRow):
                self.rows_by_key[entry.id] = entry
                rows.append((entry.id, self._cells(entry, now)))
                continue
            self.rows_by_key[entry.key] = entry.latest
            self.groups[entry.key] = entry
            rows.append((entry.key, self._group_cells(entry, now)))
            for run in entry.members:
                self.rows_by_key[run.id] = run
                self.groups[run.id] = entry
                rows.append((run.id, self._cells(run, now, member=True)))
        self.replace_rows(rows)
        self.call_after_refresh(self._say_newer)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._say_newer()

    def _say_newer(self) -> None:
        """Say in the title how many rows are above the top edge (newer ones, in the
        default order)."""
        above = round(self.scroll_y)
        what = "newer" if self.order == DEFAULT_ORDER else "above"
        self.border_title = self.title(f" · ↑ {above} {what} (home)" if above else "")

    def _cells(self, r: RunRow, now: float, *, member: bool = False) -> list[Cell]:
        wanted = count(r.wanted) if r.wanted is not None else "-"
        cells: list[Cell] = [
            Text.assemble(("│ ", "dim"), r.agent) if member else r.agent,
            Text(r.status, style=STATE_STYLES.get(r.status, "")),
            number(f"{count(r.successes)}/{wanted}"),
            number(count(r.attempts)),
            clock_or_date(r.started_at, now, self.tz),
            number(duration(r.took_s(now))),
            Text(r.id, style="dim"),
        ]
        if self.node_shown:
            cells.insert(-1, r.node or "-")
        return cells

    def _group_cells(self, g: RunGroup, now: float) -> list[Cell | Squeezed]:
        wanted = count(g.wanted) if g.wanted is not None else "-"
        first = clock_or_date(g.first_started_at, now, self.tz)
        last = clock_or_date(g.last_started_at, now, self.tz)
        times = f"{count(g.count)}{'' if g.complete else '+'}"
        cells: list[Cell | Squeezed] = [
            Text.assemble(("▾ " if g.expanded else "▸ ", "bold"), g.agent, (f" ×{times}", "bold")),
            Text(g.status, style=STATE_STYLES.get(g.status, "")),
            number(f"{count(g.successes)}/{wanted}"),
            number(count(g.attempts)),
            Squeezed(f"{first}–{last}", last),
            number(duration(g.took_s(now))),
            Text(g.latest.id, style="dim"),
        ]
        if self.node_shown:
            nodes = g.nodes
            cells.insert(
                -1, nodes[0] if len(nodes) == 1 else f"{len(nodes)} nodes" if nodes else "-"
            )
        return cells


def _nodes(entry: RunEntry) -> bool:
    if isinstance(entry, RunRow):
        return entry.node is not None
    return bool(entry.nodes)
