"""The library entry points behind ``agentos embed``, ``agentos search`` and the memory
line of ``agentos engines``: they open a config's engines (the loopback engine over HTTP)
and a real database file themselves, as the commands that call them do."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.errors import SpecError
from agentos.memory import (
    BacklogStatus,
    EmbeddingProgress,
    embed_database,
    memory_summary,
    search_database,
)
from agentos.spec import Config
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from tests.memory.conftest import MODEL, add_result, new_run

PLANTED = "The lighthouse keeper's cat is called Barnacle"


def loop_config(engine: LoopbackEngine, **extra: Any) -> Config:
    engines = [{"type": "openai", "name": "loop", "base_url": engine.url}]
    return Config.model_validate({"engines": engines, **extra})


def seeded(tmp_path: Path) -> Path:
    db = tmp_path / "agentos.db"
    with Store(db) as store:
        run = new_run(store, "keeper")
        for i in range(12):
            add_result(store, run, f"log entry {i}: the lamp was lit")
        add_result(store, run, PLANTED)
    return db


class Progress:
    """A ProgressBar that keeps what it was shown: how often it was opened, and every
    progress the embedding reported."""

    def __init__(self) -> None:
        self.opened = 0
        self.seen: list[EmbeddingProgress] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Callable[[EmbeddingProgress], None]]:
        self.opened += 1
        yield self.seen.append


async def test_embed_database_embeds_the_backlog_says_where_it_stood_and_shows_progress(
    tmp_path: Path,
) -> None:
    db = seeded(tmp_path)
    statuses: list[BacklogStatus] = []
    bar = Progress()
    async with LoopbackEngine() as engine:
        after = await embed_database(
            loop_config(engine), db, on_status=statuses.append, progress=bar
        )
        again = await embed_database(loop_config(engine), db, progress=bar)

    [before] = statuses
    assert (before.model, before.counts.embedded, before.counts.pending) == (MODEL, 0, 13)
    assert (after.counts.embedded, after.counts.pending) == (13, 0)
    assert bar.opened == 1, "the second call had nothing pending, so no bar"
    assert bar.seen and bar.seen[-1].embedded == 13 and bar.seen[-1].pending == 0
    assert (again.counts.embedded, again.counts.pending) == (13, 0)


async def test_search_database_indexes_first_unless_told_not_to(tmp_path: Path) -> None:
    db = seeded(tmp_path)
    async with LoopbackEngine() as engine:
        config = loop_config(engine)
        unindexed = await search_database(config, db, PLANTED, index=False)
        statuses: list[BacklogStatus] = []
        rows = await search_database(
            config, db, PLANTED, limit=3, on_status=statuses.append, progress=Progress()
        )

    assert unindexed == []
    assert statuses[0].counts.pending == 13
    assert len(rows) == 3
    assert rows[0]["text"] == PLANTED and rows[0]["agent"] == "keeper"
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-5)


async def test_no_engine_serving_the_embedding_model_is_a_spec_error(tmp_path: Path) -> None:
    db = seeded(tmp_path)
    async with LoopbackEngine() as engine:
        config = loop_config(engine, embeddings={"model": "no-such-embedder"})
        with pytest.raises(SpecError, match="no engine serves embeddings"):
            await embed_database(config, db)
        with pytest.raises(SpecError, match="no engine serves embeddings"):
            await search_database(config, db, "anything")


async def test_memory_summary_says_off_embedded_and_pending(tmp_path: Path) -> None:
    db = seeded(tmp_path)
    async with LoopbackEngine() as engine:
        config = loop_config(engine)
        with Store(db) as store:
            pending = await memory_summary(config, store, MODEL)
        await embed_database(config, db)
        with Store(db) as store:
            done = await memory_summary(config, store, MODEL)
            no_model = await memory_summary(config, store, None)
            disabled = await memory_summary(
                loop_config(engine, embeddings={"enabled": False}), store, MODEL
            )

    assert pending.endswith("0 records embedded, 13 pending (`agentos embed` embeds them now)")
    assert pending.startswith(f"background[embeddings]: model {MODEL}, vector store sqlite")
    assert done.endswith("13 records embedded, 0 pending")
    assert no_model == "background[embeddings]: off (no engine serves embeddings)"
    assert disabled == "background[embeddings]: off (embeddings.enabled is false)"
