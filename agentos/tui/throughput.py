"""The throughput sparkline: jobs done per second over the last minutes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Label, Sparkline

from agentos.tui.data import ThroughputMeter
from agentos.tui.format import rate


class Throughput(Widget):
    """The latest rate and a sparkline of the samples of a :class:`ThroughputMeter`.

    The line is right-aligned, one column per sample (the newest on the right), padded
    with zeros on the left until there are enough samples, so its scale starts at zero
    and a column always means one read.
    """

    def __init__(self, meter: ThroughputMeter, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.meter = meter

    def compose(self) -> ComposeResult:
        yield Label(self._label(), id="throughput-rate")
        yield Sparkline([], id="throughput-line")

    def _label(self) -> str:
        current = self.meter.current
        return f"jobs/s {rate(current) if current is not None else '-'}"

    def show(self) -> None:
        """Redraw from the meter (after it took a sample)."""
        self.query_one("#throughput-rate", Label).update(self._label())
        line = self.query_one("#throughput-line", Sparkline)
        width = line.size.width
        samples = list(self.meter.samples)
        if width > 0:
            samples = samples[-width:]
            samples = [0.0] * (width - len(samples)) + samples
        line.data = samples

    def on_resize(self, event: Resize) -> None:
        self.call_after_refresh(self.show)
