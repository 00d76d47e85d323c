"""What the scheduler tells the person watching, and the two ways of showing it.

The scheduler and the agents talk to the ``Display`` protocol only, never to rich or
Textual (STYLE.md 7): ``RichDisplay`` draws live progress bars on a terminal,
``PlainDisplay`` writes one plain line per event for cron, CI and pipes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


@dataclass
class RunOutcome:
    """How one run ended."""

    run_id: str
    agent: str
    status: str
    wanted: int
    successes: int
    attempts: int
    error: str | None = None
    answers: int = 0
    """Model answers the run got (where the scheduler counted them)."""
    cache_hits: int = 0
    """Of them, answers served from the response cache."""

    def cache_note(self) -> str:
        """``"3 of 3 answers from the cache"``, or empty when none were."""
        if not self.cache_hits:
            return ""
        return f"{self.cache_hits} of {self.answers} answers from the cache"


class Display(Protocol):
    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None: ...

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None: ...

    def run_finished(self, outcome: RunOutcome) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """One line per event, timestamped (cron and CI logs).

    Lines about runs and messages are written and flushed at once. Attempt lines, which
    come thousands a second from a long single-shot run, are written together at most
    every ``FLUSH_EVERY_S`` (a write to a pipe or file per attempt, unbuffered where
    ``PYTHONUNBUFFERED`` is set, was a visible share of the event loop's time): the last
    one always within that time, by a timer on the running event loop, or at once where
    there is none. Lines keep their order.
    """

    FLUSH_EVERY_S = 0.2

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._stamp_second = -1
        self._stamp = ""
        self._flushed_at = 0.0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._pending: list[str] = []

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return self._stamp

    def _line(self, text: str, *, urgent: bool = True) -> None:
        self._pending.append(f"{self._timestamp()} {text}\n")
        if urgent or time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
            self._flush()
            return
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
                return
            self._flush_timer = loop.call_later(self.FLUSH_EVERY_S, self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._flushed_at = time.monotonic()
        if self._pending:
            lines, self._pending = self._pending, []
            self.stream.write("".join(lines))
        self.stream.flush()

    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None:
        self._line(
            f"run {run_id} started: {agent} (wants {wanted}, at most {attempt_cap} attempts)"
        )

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None:
        word = "ok" if ok else "failed"
        self._line(
            f"run {run_id} {agent}: attempt {attempts} {word} ({successes} good) {detail}",
            urgent=False,
        )

    def run_finished(self, outcome: RunOutcome) -> None:
        tail = f": {outcome.error}" if outcome.error else ""
        cached = outcome.cache_note()
        cached = f" ({cached})" if cached else ""
        self._line(
            f"run {outcome.run_id} {outcome.status}: {outcome.agent} "
            f"{outcome.successes}/{outcome.wanted} in {outcome.attempts} attempts{cached}{tail}"
        )

    def message(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        self._flush()


class RichDisplay:
    """A live progress bar per run on a terminal."""

    KEEP_FINISHED = 8

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[agent]}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} good"),
            TextColumn("[dim]{task.fields[attempts]} attempts"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.finished: list[str] = []
        self.progress.start()

    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None:
        self.tasks[run_id] = self.progress.add_task(
            agent, total=wanted, agent=agent, attempts=0, note=f"[dim]run {run_id}"
        )

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None:
        task = self.tasks.get(run_id)
        if task is not None:
            note = "" if ok else f"[yellow]{detail[:60]}"
            self.progress.update(task, completed=successes, attempts=attempts, note=note)

    def run_finished(self, outcome: RunOutcome) -> None:
        task = self.tasks.get(outcome.run_id)
        colour = "green" if outcome.status == "succeeded" else "red"
        note = f"[{colour}]{outcome.status}[/] [dim]run {outcome.run_id}"
        if outcome.cache_hits:
            note += f" [cyan]{outcome.cache_note()}"
        if outcome.error:
            note += f" [red]{outcome.error[:80]}"
        if task is not None:
            self.progress.update(
                task, completed=outcome.successes, attempts=outcome.attempts, note=note
            )
            # a daemon's perpetual and scheduled agents finish run after run: keep the
            # screen to the latest few finished bars
            self.finished.append(outcome.run_id)
            while len(self.finished) > self.KEEP_FINISHED:
                old = self.tasks.pop(self.finished.pop(0), None)
                if old is not None:
                    self.progress.remove_task(old)

    def message(self, text: str) -> None:
        # plain text, never markup: messages carry engine errors and model output, where
        # a "[/...]" would be read as a closing tag and end the run with a MarkupError
        self.progress.console.print(escape(text))

    def close(self) -> None:
        self.progress.stop()


class NullDisplay:
    """Shows nothing (replays, which report their own summary)."""

    def run_started(self, run_id: str, agent: str, wanted: int, attempt_cap: int) -> None:
        pass

    def attempt_finished(
        self, run_id: str, agent: str, ok: bool, successes: int, attempts: int, detail: str
    ) -> None:
        pass

    def run_finished(self, outcome: RunOutcome) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
