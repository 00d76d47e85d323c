"""Semantic memory from the command line, as a user meets it: a finished run leaves its
records embedded (within ``embeddings.drain_s``), what it could not finish is said and
then embedded by ``agentos embed`` or ``agentos search``, each with a progress bar. Real
subprocesses, a real database file and the loopback engine over HTTP."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.memory.sources import SourceReader
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from tests.test_cli import agentos, write_config

AGENTS = """\
agents:
  - name: notes
    prompt: "Write a note. ANSWER: a note about lighthouses"
    life_cycle: {type: single-shot, length: LENGTH, concurrency: 10}
"""


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


def setup(tmp_path: Path, engine: LoopbackEngine, length: int, embeddings: str) -> None:
    """Agents and config.yaml; the response cache is off, so that each identical answer
    is a call of its own and each text an embedding request of its own."""
    (tmp_path / "agents.yaml").write_text(AGENTS.replace("LENGTH", str(length)))
    config = write_config(tmp_path, engine.url)
    config.write_text(config.read_text() + f"cache: {{enabled: false}}\nembeddings: {embeddings}\n")


def pending(db: Path) -> tuple[int, int]:
    """(embedded, pending) records of the database, for the SQLite vector store."""
    with Store(db, readonly=True) as store:
        reader = SourceReader(store)
        try:
            counts = reader.counts("test-model", "sqlite")
        finally:
            reader.close()
    return counts.embedded, counts.pending


def test_a_finished_run_leaves_its_records_embedded(tmp_path: Path, engine: LoopbackEngine) -> None:
    setup(tmp_path, engine, 150, "{batch_size: 8}")
    db = tmp_path / "runs.db"

    result = agentos("run", "agents.yaml", "--once", "--db", str(db), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    conn = sqlite3.connect(db)
    (results,) = conn.execute("SELECT count(*) FROM results").fetchone()
    (vectors,) = conn.execute("SELECT count(*) FROM embeddings WHERE source = 'results'").fetchone()
    assert (results, vectors) == (150, 150)
    assert pending(db) == (300, 0)  # 150 results and the 150 answers they came from
    assert "not embedded yet" not in result.stdout + result.stderr


def test_a_backlog_that_outlasts_drain_s_is_said_and_embedded_by_embed_and_search(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    setup(tmp_path, engine, 1, "{batch_size: 1, drain_s: 0.5}")
    # 20 agents with a note each: 40 records of 20 texts (a result and the answer it came
    # from are one text, embedded once), one at a time: 3 s, far beyond drain_s
    (tmp_path / "agents.yaml").write_text(
        "agents:\n"
        + "".join(
            f"  - name: notes-{i}\n    prompt: 'Write a note. ANSWER: note {i} about lighthouses'\n"
            for i in range(20)
        )
    )
    db = tmp_path / "runs.db"
    engine.faults.delay_ms = 150

    started = time.monotonic()
    run = agentos("run", "agents.yaml", "--once", "--db", str(db), cwd=tmp_path)
    took = time.monotonic() - started

    assert run.returncode == 0, run.stdout + run.stderr
    embedded, left = pending(db)
    assert left > 0 and embedded + left == 40
    said = run.stdout + run.stderr
    assert f"background embeddings: {left} records not embedded yet" in said
    assert "not finished within embeddings.drain_s = 0.5s" in said
    assert "`agentos embed`" in said
    assert took < 6, f"the exit waited {took:.1f}s"

    engine.faults.delay_ms = 0
    engines = agentos("engines", "--db", str(db), cwd=tmp_path)
    assert engines.returncode == 0, engines.stdout + engines.stderr
    assert (
        "background[embeddings]: model test-model, vector store sqlite (sqlite-vec); "
        f"{embedded} records embedded, {left} pending (`agentos embed` embeds them now)"
    ) in " ".join(engines.stdout.split())  # rich wraps the line

    embed = agentos("embed", "--db", str(db), cwd=tmp_path)
    assert embed.returncode == 0, embed.stdout + embed.stderr
    assert f"{left} not yet" in embed.stderr
    assert "embedding" in embed.stderr and f"{left}/{left}" in embed.stderr  # the bar
    assert "40 records embedded with test-model in sqlite (sqlite-vec)" in embed.stdout
    assert "0 pending" in embed.stdout
    assert pending(db) == (40, 0)

    again = agentos("embed", "--db", str(db), cwd=tmp_path)
    assert again.returncode == 0 and "embedding" not in again.stderr
    assert "40 records embedded" in again.stdout


def test_search_embeds_what_a_run_left_before_it_searches(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    setup(tmp_path, engine, 12, "{drain_s: 0}")
    db = tmp_path / "runs.db"
    run = agentos("run", "agents.yaml", "--once", "--db", str(db), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    _, left = pending(db)
    assert left > 0

    found = agentos("search", "lighthouses", "--json", "--db", str(db), cwd=tmp_path)

    assert found.returncode == 0, found.stdout + found.stderr
    assert "in sqlite (sqlite-vec)" in found.stderr
    assert f"{left}/{left}" in found.stderr
    assert pending(db) == (24, 0)
    import json

    hits = json.loads(found.stdout)
    assert hits and hits[0]["text"] == "a note about lighthouses"
    assert hits[0]["agent"] == "notes"
