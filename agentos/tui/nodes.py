"""The nodes table: the Ray cluster's nodes, while a runtime runs on one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text

from agentos.tui.format import count
from agentos.tui.rows import NodeRow
from agentos.tui.sorting import arrange
from agentos.tui.table import Cell, StoreTable, number


def cpus(value: float) -> str:
    """``8``, or ``0.5`` for a fraction of a CPU."""
    return f"{value:g}"


class NodesTable(StoreTable):
    """One row per node of the cluster (``agentos run --cluster``): its short id, its
    address, whether Ray sees it alive, its CPUs and the runs in flight there.

    Shown only while the view has nodes (the ``-shown`` class), and on tall terminals
    only: a short one gets :class:`~agentos.tui.nodes_line.NodesLine` instead.
    """

    COLUMNS = (
        ("node", "node"),
        ("address", "address"),
        ("state", "state"),
        ("cpus", "cpus"),
        ("runs", "runs"),
    )
    DROP_ORDER = ("address",)
    EXPLAIN: ClassVar[dict[str, str]] = {
        "node": "The node's short Ray id (with its runtime's pid in front when several "
        "runtimes show).",
        "address": "The node's IP address in the cluster.",
        "state": "alive, or dead once Ray has lost the node (its runs in flight are retried "
        "elsewhere or fail).",
        "cpus": "The CPUs Ray counts on the node (the header line sums the live nodes').",
        "runs": "Runs in flight on the node now.",
    }
    SORT_KEYS: ClassVar[dict[str, Callable[[NodeRow], Any]]] = {
        "node": lambda n: n.label,
        "address": lambda n: n.address,
        "state": lambda n: n.alive,
        "cpus": lambda n: n.cpus,
        "runs": lambda n: n.runs,
    }
    """What each column sorts by (the figure, not its text)."""
    TITLE = "nodes"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.nodes: Sequence[NodeRow] = ()

    def show(self, nodes: Sequence[NodeRow]) -> None:
        """Show ``nodes`` (filtered by id or state, in the order picked)."""
        self.nodes = nodes
        self.set_class(bool(nodes), "-shown")
        shown = arrange(
            nodes,
            self.order,
            self.SORT_KEYS,
            self.filter_text,
            lambda n: (n.label, "alive" if n.alive else "dead"),
        )
        self.replace_rows([(n.key, self._cells(n)) for n in shown])
        self.border_title = self.title()

    def rearrange(self) -> None:
        self.show(self.nodes)

    @staticmethod
    def _cells(n: NodeRow) -> list[Cell]:
        return [
            n.label,
            n.address,
            Text("alive", style="green") if n.alive else Text("dead", style="bold red"),
            number(cpus(n.cpus)),
            number(count(n.runs)),
        ]
