"""Fixtures for the dashboard tests: a seeded database per test and a fixed clock."""

from __future__ import annotations

import io
from datetime import UTC
from pathlib import Path

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from agentos.tui.app import TopApp
from tests.tui.seed import NOW, seed


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentos.db"


@pytest.fixture
def seeded_db(db_path: Path) -> Path:
    seed(db_path)
    return db_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_app(db_path: Path, clock: FakeClock | None = None) -> TopApp:
    """The dashboard as the tests run it: fixed clock, UTC, no refresh timer."""
    return TopApp(db_path, clock=clock or FakeClock(), tz=UTC, refresh_s=None)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every worker is done and its message handled."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def reload(pilot: Pilot[None]) -> None:
    """One more refresh, as the timer would do, and wait for it."""
    app = pilot.app
    assert isinstance(app, TopApp)
    app.reload()
    await settle(pilot)


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text on one wide line per row."""
    console = Console(width=400, record=True, color_system=None, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()
