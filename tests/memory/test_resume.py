"""Embedding resumes after a killed process with nothing missed and nothing embedded
twice: a real child process running background[embeddings] is SIGKILLed mid-way, and a
fresh embedder finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import agentos
from agentos.memory.embedder import Embedder
from agentos.memory.vectors import unit_vector, unpack_vector
from agentos.router.router import Router
from agentos.store import Store
from agentos.testing.answers import embedding_vector
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.memory.conftest import MODEL, Connect, add_result, embedded_inputs, marks, new_run

REPO_ROOT = Path(agentos.__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("embed_worker.py")
ROWS = 400
BATCH = 16


def committed_marks(db: Path) -> int:
    with Store(db, readonly=True) as reader:
        return int(reader.db.execute("SELECT count(*) FROM embedded_sources").fetchone()[0])


async def test_a_killed_embedder_resumes_with_nothing_missed_or_duplicated(
    tmp_path: Path, connect: Connect
) -> None:
    db = tmp_path / "agentos.db"
    texts = {str(i + 1): f"note {i}: something worth remembering" for i in range(ROWS)}
    with Store(db) as store:
        run_id = new_run(store, "writer")
        for i in range(ROWS):
            add_result(store, run_id, texts[str(i + 1)])

    engine = LoopbackEngine(cost=CostModel(slots=2, per_request_ms=4))
    with engine.run_in_thread():
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        log = tmp_path / "worker.log"
        with log.open("wb") as output:
            child = subprocess.Popen(
                [sys.executable, str(WORKER), str(db), engine.url, str(BATCH)],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while committed_marks(db) < ROWS // 4:
                assert child.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the child embedded too little in time"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL
        first_life = embedded_inputs(engine)
        engine.reset_stats()

        with Store(db) as store:
            done_at_kill = marks(store)
            assert ROWS // 4 <= len(done_at_kill) < ROWS, "killed before it was done"
            stored_at_kill = {
                source_id for (source_id,) in store.db.execute("SELECT source_id FROM embeddings")
            }
            assert set(k[1] for k in done_at_kill) <= stored_at_kill  # marks follow vectors

            handle = await connect(engine, max_requests=2)
            async with Router([handle]) as router:
                embedder = Embedder(store, router, MODEL, batch_size=BATCH)
                try:
                    resumed = await embedder.embed_pending()
                finally:
                    embedder.close()
            await store.aflush()
            second_life = embedded_inputs(engine)

            # Nothing done before the kill was asked again; everything else was, once.
            left = [texts[i] for i in texts if ("results", i) not in done_at_kill]
            assert Counter(second_life) == Counter(left)
            assert resumed == len(left) == ROWS - len(done_at_kill)
            # The first life asked for each text at most once, for everything it marked,
            # and for little more: what was in flight or not yet committed at the kill.
            assert max(Counter(first_life).values()) == 1
            assert set(first_life) >= {texts[i] for (_, i) in done_at_kill}
            assert len(first_life) - len(done_at_kill) <= 4 * BATCH

            rows = store.db.execute(
                "SELECT source, source_id, text, vector FROM embeddings WHERE model = ?",
                [MODEL],
            ).fetchall()
            assert sorted(int(r[1]) for r in rows) == list(range(1, ROWS + 1))
            assert {r[0] for r in rows} == {"results"}
            for _, source_id, text, blob in rows:
                assert text == texts[source_id]
                want = unit_vector(embedding_vector(MODEL, text, engine.embedding_dim))
                assert (
                    max(abs(a - b) for a, b in zip(unpack_vector(blob), want, strict=True)) < 1e-6
                )
            final = marks(store)
            assert len(final) == ROWS and set(final.values()) == {"embedded"}
