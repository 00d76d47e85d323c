"""The nodes table: the Ray cluster's nodes, while a runtime runs on one."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from agentos.tui.format import count
from agentos.tui.rows import NodeRow
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

    def show(self, nodes: Sequence[NodeRow]) -> None:
        self.set_class(bool(nodes), "-shown")
        self.replace_rows([(n.key, self._cells(n)) for n in nodes])

    @staticmethod
    def _cells(n: NodeRow) -> list[Cell]:
        return [
            n.label,
            n.address,
            Text("alive", style="green") if n.alive else Text("dead", style="bold red"),
            number(cpus(n.cpus)),
            number(count(n.runs)),
        ]
