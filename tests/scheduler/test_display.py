"""The plain display: every line written, attempt lines flushed in bunches."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from agentos.scheduler.display import PlainDisplay, RichDisplay, RunOutcome


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed_text = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed_text = self.getvalue()


async def test_attempt_lines_are_flushed_in_bunches_and_never_left_behind() -> None:
    stream = CountingStream()
    display = PlainDisplay(stream)
    display.FLUSH_EVERY_S = 0.05
    display.run_started("r1", "bulk", 500, 1500)
    assert stream.flushes == 1
    for n in range(1, 501):
        display.attempt_finished("r1", "bulk", True, n, n, "ok")
    assert stream.flushes <= 3
    await asyncio.sleep(0.2)  # the timer flushes the last lines
    assert stream.flushed_text.count("\n") == 501
    display.run_finished(RunOutcome("r1", "bulk", "succeeded", 500, 500, 500))
    assert stream.flushed_text.endswith("500/500 in 500 attempts\n")


def test_without_an_event_loop_every_line_is_flushed() -> None:
    stream = CountingStream()
    display = PlainDisplay(stream)
    display.FLUSH_EVERY_S = 60
    display.attempt_finished("r1", "bulk", True, 1, 1, "ok")
    display.attempt_finished("r1", "bulk", False, 1, 2, "bad")
    assert stream.flushed_text.count("\n") == 2
    assert "attempt 2 failed (1 good) bad" in stream.flushed_text


def test_rich_messages_are_shown_as_written_never_read_as_markup() -> None:
    """Messages carry engine errors and model output: a "[/x]" in one used to end the run
    with rich's MarkupError (a closing tag that matches nothing)."""
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=200, force_terminal=False))
    text = "engine e at http://h: [Connect call failed] [/tmp/x] [bold]not bold[/bold]"
    display.message(text)
    display.close()
    assert text in out.getvalue()
