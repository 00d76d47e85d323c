"""The nodes line: the cluster's nodes in one header line, for short terminals."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from agentos.tui.format import count
from agentos.tui.nodes import cpus
from agentos.tui.rows import NodeRow


class NodesLine(Static):
    """``nodes 2/3 alive · 12 cpus · 3 runs: a1b2c3 2 · d4e5f6 1 · 9f8e7d dead``: how
    many nodes Ray sees alive, their CPUs, the runs in flight and where they run. The
    nodes table's rows take height a short terminal (80×24) cannot spare, so there the
    line stands in for the table; it is cut at the right edge when the nodes are many.

    Shown only while the view has nodes (the ``-shown`` class)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)

    def show(self, nodes: Sequence[NodeRow]) -> None:
        self.set_class(bool(nodes), "-shown")
        self.update(self.describe(nodes))

    @staticmethod
    def describe(nodes: Sequence[NodeRow]) -> Text:
        alive = [n for n in nodes if n.alive]
        runs = sum(n.runs for n in nodes)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("nodes ", style="dim")
        text.append(f"{len(alive)}/{len(nodes)} alive", style="bold" if alive else "bold red")
        text.append(" · ", style="dim")
        text.append(f"{cpus(sum(n.cpus for n in alive))} cpus", style="bold")
        text.append(" · ", style="dim")
        text.append(f"{count(runs)} run{'' if runs == 1 else 's'}", style="bold")
        for i, node in enumerate(nodes):
            text.append(": " if i == 0 else " · ", style="dim")
            text.append(f"{node.label} ")
            if node.alive:
                text.append(count(node.runs), style="bold")
            else:
                text.append("dead", style="bold red")
        return text
