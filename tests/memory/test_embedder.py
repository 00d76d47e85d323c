"""background[embeddings] against a real store and a router on the loopback engine: what
it embeds (and what it leaves out), its marks, its failures and its progress."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from agentos.errors import EngineStatusError, NoEngineError
from agentos.memory import embedder as embedder_module
from agentos.memory.embedder import PROCESS_NAME, Embedder, embedding_model
from agentos.memory.vectors import unit_vector, unpack_vector
from agentos.router.client import EngineInfo
from agentos.router.jobs import RetryPolicy
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import Router
from agentos.store import Store
from agentos.testing.answers import embedding_vector
from agentos.testing.engine import CostModel, Faults, LoopbackEngine
from tests.memory.conftest import (
    MODEL,
    Connect,
    add_answer,
    add_result,
    add_sink_item,
    embedded_inputs,
    marks,
    new_run,
    vector_rows,
)


async def test_one_pass_embeds_every_output_answer_and_sink_item_once(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    add_result(store, run_id, {"title": "Apples", "summary": "Red and sweet."})
    add_result(store, run_id, "a plain result")
    chat = add_answer(store, run_id, "the chat answer")
    completion = add_answer(store, run_id, '{"city": "Oslo"}', kind="completions")
    add_answer(store, run_id, "the chat answer", cache_hit=True)
    add_answer(store, run_id, "never answered", status="error")
    add_answer(store, None, "", kind="embeddings")
    add_sink_item(store, "cities", {"city": "Bergen"}, produced_by=run_id)
    add_sink_item(store, "cities", {"city": "Tromsø"}, produced_by="collector")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle], recorder=StoreCallRecorder(store)) as router:
            embedder = Embedder(store, router, MODEL)
            try:
                assert await embedder.embed_pending() == 6
                await store.aflush()
                # its own embeddings calls, now in llm_calls, are not sources
                assert await embedder.embed_pending() == 0
                progress = embedder.progress()
            finally:
                embedder.close()

    expected = {
        "title: Apples\nsummary: Red and sweet.",
        "a plain result",
        "the chat answer",
        "city: Oslo",
        "city: Bergen",
        "city: Tromsø",
    }
    assert sorted(embedded_inputs(engine)) == sorted(expected)
    rows = store.db.execute(
        "SELECT source, source_id, run_id, agent, text, vector, created_at FROM embeddings"
    ).fetchall()
    assert len(rows) == 6 == len(set(vector_rows(store)))
    by_text = {
        text: (source, source_id, run, agent) for source, source_id, run, agent, text, *_ in rows
    }
    assert set(by_text) == expected
    assert by_text["the chat answer"] == ("llm_calls", chat, run_id, "writer")
    assert by_text["city: Oslo"] == ("llm_calls", completion, run_id, "writer")
    assert by_text["city: Bergen"][0::2] == ("sink_items", run_id)
    assert by_text["city: Bergen"][3] == "writer"
    assert by_text["city: Tromsø"][2:] == (None, "collector")
    for _, _, _, _, text, blob, created_at in rows:
        want = unit_vector(embedding_vector(MODEL, text, engine.embedding_dim))
        assert list(unpack_vector(blob)) == pytest.approx(want, abs=1e-6)
        assert created_at is not None
    assert set(marks(store).values()) == {"embedded"}
    assert len(marks(store)) == 6
    assert dataclasses.astuple(progress)[:6] == (MODEL, "idle", 6, 0, 0, 0)
    assert router.processes[PROCESS_NAME].jobs == 6


async def test_empty_texts_are_marked_without_asking_the_engine(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    empties: list[object] = ["", "   ", {}, [], None, {"note": ""}]
    for data in empties:
        add_result(store, run_id, data)
    add_result(store, run_id, "something")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL)
            try:
                assert await embedder.embed_pending() == 1
            finally:
                embedder.close()
    await store.aflush()

    assert embedded_inputs(engine) == ["something"]
    assert sorted(marks(store).values()) == ["embedded"] + ["empty"] * 6
    assert embedder.progress().empty == 6


async def test_long_texts_are_cut_before_embedding(store: Store, connect: Connect) -> None:
    run_id = new_run(store, "writer")
    add_result(store, run_id, "x" * 50 + "y" * 50)
    store.flush()
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL, max_chars=50)
            try:
                await embedder.embed_pending()
            finally:
                embedder.close()
    assert embedded_inputs(engine) == ["x" * 50]


async def test_a_text_the_engine_refuses_is_marked_failed_and_not_retried(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    add_result(store, run_id, "refused text")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        engine.faults = Faults(fail_first=1, error_status=400)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL)
            try:
                assert await embedder.embed_pending() == 0
                await store.aflush()
                assert await embedder.embed_pending() == 0
            finally:
                embedder.close()

    assert engine.stats.requests == 1
    assert list(marks(store).values()) == ["failed"]
    (error,) = store.db.execute("SELECT error FROM embedded_sources").fetchone()
    assert "400" in error
    assert embedder.progress().failed == 1


async def test_without_an_engine_rows_stay_pending_and_the_process_waits(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    add_result(store, run_id, "one")
    add_result(store, run_id, "two")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, "no-such-model", poll_s=0.01, max_backoff_s=0.02)
            with pytest.raises(NoEngineError):
                await embedder.embed_pending()
            task = asyncio.create_task(embedder.run())
            while embedder.progress().state != "waiting":
                await asyncio.sleep(0.01)
            progress = embedder.progress()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert progress.pending == 2
    assert progress.last_error is not None and "no-such-model" in progress.last_error
    assert embedder.progress().state == "stopped"
    assert marks(store, "no-such-model") == {}
    assert engine.stats.requests == 0


async def test_a_failure_mid_pass_keeps_what_succeeded_and_the_next_pass_does_the_rest(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    texts = [f"row {i}" for i in range(6)]
    for text in texts:
        add_result(store, run_id, text)
    store.flush()

    async with LoopbackEngine(cost=CostModel(slots=1, per_request_ms=20)) as engine:
        handle = await connect(engine, max_requests=1)
        async with asyncio.timeout(10), Router([handle]) as router:
            embedder = Embedder(
                store, router, MODEL, batch_size=2, retry=RetryPolicy(max_attempts=1)
            )
            try:
                passing = asyncio.create_task(embedder.embed_pending())
                while engine.stats.requests < 2:  # the second of the first batch is served
                    await asyncio.sleep(0.001)
                engine.faults = Faults(error_rate=1.0, error_status=503)
                with pytest.raises(EngineStatusError, match="503"):
                    await passing
                await store.aflush()
                assert sorted(marks(store)) == [("results", "1"), ("results", "2")]
                engine.faults = Faults()
                assert await embedder.embed_pending() == 4
            finally:
                embedder.close()
    await store.aflush()

    served = embedded_inputs(engine)
    assert served.count("row 0") == served.count("row 1") == 1  # not asked again
    assert sorted(set(served)) == texts
    assert len(marks(store)) == 6 and sorted(vector_rows(store)) == sorted(marks(store))


async def test_the_running_process_picks_up_new_rows_and_reports_progress(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    for i in range(5):
        add_result(store, run_id, f"first {i}")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with asyncio.timeout(10), Router([handle]) as router:
            embedder = Embedder(store, router, MODEL, batch_size=2, poll_s=30)
            task = asyncio.create_task(embedder.run())
            while embedder.progress().embedded < 5:
                await asyncio.sleep(0.01)
            for i in range(3):
                add_result(store, run_id, f"second {i}")
            await store.aflush()
            embedder.wake()  # the poll interval alone would take 30 s
            while embedder.progress().embedded < 8:
                await asyncio.sleep(0.01)
            counters = embedder.process_counters()[PROCESS_NAME]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert counters["kind"] == "system"
    assert counters["embedded"] == 8
    assert counters["pending"] == 0
    assert counters["progress"] == "8 embedded / 0 pending"
    assert json.loads(json.dumps(counters)) == counters
    assert sorted(embedded_inputs(engine)) == sorted(
        [f"first {i}" for i in range(5)] + [f"second {i}" for i in range(3)]
    )


async def test_a_row_marked_but_not_yet_committed_is_not_sent_again(
    store: Store, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks reach the database through the writer, a little later; a pass that starts
    before they are committed must not embed those rows again (here every pass reads the
    tables from their first row)."""
    monkeypatch.setattr(embedder_module, "FULL_SCAN_S", 0.0)
    run_id = new_run(store, "writer")
    add_result(store, run_id, "only once")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL)
            try:
                store.db.execute("BEGIN IMMEDIATE")  # holds the writer's commit back
                try:
                    assert await embedder.embed_pending() == 1
                    assert await embedder.embed_pending() == 0
                finally:
                    store.db.execute("COMMIT")
                await store.aflush()
                assert await embedder.embed_pending() == 0
            finally:
                embedder.close()

    assert embedded_inputs(engine) == ["only once"]
    assert vector_rows(store) == [("results", "1")]


def test_the_embedding_model_is_that_of_an_engine_serving_embeddings() -> None:
    @dataclasses.dataclass
    class Engine:
        info: EngineInfo
        healthy: bool = True

    chat_only = Engine(EngineInfo(models=["chatty"], capabilities=["chat"], healthy=True))
    sick = Engine(EngineInfo(models=["sick"], capabilities=["embeddings"]), healthy=False)
    embeds = Engine(
        EngineInfo(models=["e5", "bge"], capabilities=["chat", "embeddings"], healthy=True)
    )

    assert embedding_model([chat_only, sick, embeds]) == "e5"
    assert embedding_model([chat_only, embeds], configured="bge") == "bge"
    assert embedding_model([chat_only, embeds], configured="chatty") is None
    assert embedding_model([chat_only, sick]) is None


async def test_what_is_remembered_of_marked_rows_is_dropped_once_written(
    store: Store, connect: Connect
) -> None:
    """Rows marked by this process are remembered only until the writer has written
    their marks, so a long run does not pile them up."""
    run_id = new_run(store, "many")
    for i in range(60):
        add_result(store, run_id, f"text {i}")
    store.flush()
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle]) as router:
            embedder = Embedder(store, router, MODEL, batch_size=4)
            try:
                assert await embedder.embed_pending() == 60
                await store.aflush()
                embedder._forget_written()
                assert embedder._unconfirmed == {}
                assert await embedder.embed_pending() == 0
            finally:
                embedder.close()
    assert len(embedded_inputs(engine)) == 60


async def test_finish_embeds_the_backlog_within_its_bound_and_says_what_is_left(
    store: Store, connect: Connect
) -> None:
    run_id = new_run(store, "writer")
    said: list[str] = []

    async def finish_after_run(within_s: float) -> tuple[float, int]:
        """A runtime's exit: results written but perhaps not committed, then finish()."""
        for i in range(12):
            add_result(store, run_id, f"note {within_s} {i}")
        embedder = Embedder(store, router, MODEL, batch_size=1, poll_s=30)
        task = asyncio.create_task(embedder.run())
        started = time.monotonic()
        progress = await embedder.finish(task, within_s=within_s, say=said.append)
        assert task.done()
        return time.monotonic() - started, progress.pending

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with asyncio.timeout(30), Router([handle]) as router:
            took, left = await finish_after_run(10.0)
            assert left == 0 and took < 5 and said == []

            engine.faults.delay_ms = 200  # 12 records one at a time: 2.4 s
            took, left = await finish_after_run(0.5)
            assert 0.4 < took < 2 and left > 0
            assert said == [
                f"background embeddings: {left} records not embedded yet (not finished "
                "within embeddings.drain_s = 0.5s); `agentos embed` (or `agentos search`, "
                "or the next run) embeds them"
            ]

            said.clear()
            waiting = asyncio.create_task(finish_after_run(30.0))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            waiting.cancel()  # Ctrl-C while the exit waits for the backlog
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert time.monotonic() - started < 1.5
            assert len(said) == 1 and "(interrupted)" in said[0]

    assert marks(store)  # what was embedded before each stop is kept


async def test_a_text_met_again_gets_its_vector_without_asking_the_engine(
    store: Store, connect: Connect
) -> None:
    """A plain-text agent's result and the answer it came from are one text: it is embedded
    once, in the same batch or a later one, and both records get its vector."""
    run_id = new_run(store, "writer")
    add_result(store, run_id, "the same words")
    add_result(store, run_id, "other words")
    add_answer(store, run_id, "the same words")
    add_answer(store, run_id, "other words")
    add_answer(store, run_id, "only an answer")
    store.flush()

    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        async with Router([handle], recorder=StoreCallRecorder(store)) as router:
            embedder = Embedder(store, router, MODEL, batch_size=2, use_cache=False)
            try:
                assert await embedder.embed_pending() == 5
            finally:
                embedder.close()

    assert sorted(embedded_inputs(engine)) == ["only an answer", "other words", "the same words"]
    rows = store.db.execute("SELECT source, text, vector FROM embeddings").fetchall()
    assert len(rows) == 5
    by_text: dict[str, set[tuple[float, ...]]] = {}
    for _source, text, vector in rows:
        by_text.setdefault(text, set()).add(tuple(round(x, 5) for x in unpack_vector(vector)))
    assert all(len(vectors) == 1 for vectors in by_text.values())
    assert by_text["the same words"] == {
        tuple(round(x, 5) for x in unit_vector(embedding_vector(MODEL, "the same words", 16)))
    }
