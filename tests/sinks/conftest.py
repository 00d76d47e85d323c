"""Fixtures for the sink tests: a real SQLite file per test and a clock tests move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.sinks import SinkStore
from agentos.store import Store


class ManualClock:
    """A clock that stands still until a test advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentos.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sinks(store: Store, clock: ManualClock) -> Iterator[SinkStore]:
    with SinkStore(store, owner="runtime-a", clock=clock) as opened:
        yield opened
