"""The ``agentos`` command as a user runs it: a real process, real files, a real engine.

The engine is the loopback test engine in a thread of this process; agentos runs as a
subprocess, so exit codes, stderr and the database are exactly what a user gets.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.memory.sources import answer_text
from agentos.testing.engine import LoopbackEngine
from tests.cli_process import run_agentos


@pytest.fixture
def engine() -> Iterator[LoopbackEngine]:
    with LoopbackEngine().run_in_thread() as eng:
        yield eng


agentos = run_agentos


def agent_requests(engine: LoopbackEngine) -> int:
    """Agents' prompts the engine was asked (start-up capability probes excluded): chat
    requests, or prompts of completions requests where the router rendered chat jobs with
    the engine's chat template."""
    asked = 0
    for path, body in engine.stats.recorded:
        if path == "/v1/chat/completions" and "ANSWER:" in json.dumps(body):
            asked += 1
        elif path == "/v1/completions":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            asked += sum("ANSWER:" in p for p in prompts)
    return asked


def write_config(tmp_path: Path, url: str, **extra: object) -> Path:
    lines = ["engines:", "  - name: loop", "    type: openai", f"    base_url: {url}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in extra.items()]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


AGENTS = """\
agents:
  - name: scripted
    prompt: "ANSWER: {\\"city\\": \\"Paris\\", \\"sights\\": [\\"Louvre\\"]}"
    response_format:
      city: the city
      sights:
        - a sight
    life_cycle: {type: single-shot, length: 3}
"""


def test_version_and_module_entry_point(tmp_path: Path) -> None:
    from agentos import __version__

    result = agentos("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"agentos {__version__}"


def test_a_single_shot_agents_attempts_share_batches(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    """The engine takes prompt lists and tells its chat template (GET /props, like
    llama-server): the agent's chat attempts go as templated prompts, several a request."""
    (tmp_path / "agents.yaml").write_text(
        "agents:\n"
        "  - name: words\n"
        "    system: You answer with one word.\n"
        "    prompt: 'Say a word. ANSWER: hello'\n"
        "    temperature: 0.9\n"
        "    life_cycle: {type: single-shot, length: 12, concurrency: 12}\n"
    )
    write_config(tmp_path, engine.url, batch_window_ms=300, max_batch_size=16, max_requests=4)
    db = tmp_path / "runs.db"
    result = agentos("run", "agents.yaml", "--once", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    agent_bodies = [
        body
        for path, body in engine.stats.recorded
        if path == "/v1/completions" and "ANSWER:" in json.dumps(body)
    ]
    assert agent_bodies, "the agent's chat jobs went as completions prompts"
    sizes = [len(b["prompt"]) if isinstance(b["prompt"], list) else 1 for b in agent_bodies]
    assert sum(sizes) == 12 and max(sizes) > 1, sizes
    for body in agent_bodies:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        for prompt in prompts:
            assert prompt.startswith("<|im_start|>system\nYou answer with one word.<|im_end|>")
            assert prompt.endswith("<|im_start|>assistant\n")
        assert "<|im_end|>" in body["stop"]
    conn = sqlite3.connect(db)
    # the background embedder's requests (it finishes the run's backlog before exit) aside
    calls = conn.execute(
        "select kind, batch_id, batch_size, response from llm_calls "
        "where status = 'ok' and kind != 'embeddings'"
    ).fetchall()
    assert len(calls) == 12
    assert {kind for kind, *_ in calls} == {"chat"}, "recorded as the agent's chat jobs"
    batches = {batch_id for _, batch_id, size, _ in calls if size > 1}
    assert batches and len(batches) < 12
    assert all(answer_text(json.loads(response)) == "hello" for *_, response in calls)
    results = [json.loads(r) for (r,) in conn.execute("select data from results")]
    assert results == ["hello"] * 12


def test_run_records_runs_calls_and_results(tmp_path: Path, engine: LoopbackEngine) -> None:
    (tmp_path / "agents.yaml").write_text(AGENTS)
    write_config(tmp_path, engine.url)
    db = tmp_path / "runs.db"
    result = agentos("run", "agents.yaml", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded: scripted 3/3" in result.stdout

    conn = sqlite3.connect(db)
    run = conn.execute("select id, status, successes, attempts, spec from runs").fetchall()
    assert len(run) == 1
    run_id, status, successes, attempts, spec = run[0]
    assert (status, successes, attempts) == ("succeeded", 3, 3)
    assert json.loads(spec)["name"] == "scripted"
    calls = conn.execute(
        "select engine, status, request, response from llm_calls where run_id = ?", (run_id,)
    ).fetchall()
    assert len(calls) == 3
    for engine_name, call_status, request, response in calls:
        assert (engine_name, call_status) == ("loop", "ok")
        sent = json.loads(request)  # a chat request, or its prompt in the chat template
        assert "ANSWER:" in (
            sent["messages"][-1]["content"] if "messages" in sent else sent["prompt"]
        )
        assert answer_text(json.loads(response))
    results = [json.loads(r) for (r,) in conn.execute("select data from results")]
    assert results == [{"city": "Paris", "sights": ["Louvre"]}] * 3
    seqs = [
        s for (s,) in conn.execute("select seq from events where run_id=? order by seq", (run_id,))
    ]
    assert seqs == list(range(1, len(seqs) + 1))

    listed = agentos("runs", "--db", str(db), "--json", cwd=tmp_path)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(run_id, "succeeded")]


def test_failed_run_exits_1_and_records_why(tmp_path: Path, engine: LoopbackEngine) -> None:
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: scripted\n    prompt: 'ANSWER: I do not do JSON'\n"
        "    response_format: {city: the city}\n"
        "    life_cycle: {type: single-shot, length: 1, max_attempts: 2}\n"
    )
    write_config(tmp_path, engine.url)
    db = tmp_path / "runs.db"
    result = agentos("run", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    conn = sqlite3.connect(db)
    status, error, attempts = conn.execute("select status, error, attempts from runs").fetchone()
    assert status == "failed"
    assert "attempt cap (2)" in error
    assert attempts == 2
    parse_errors = conn.execute("select count(*) from events where type='parse_error'").fetchone()
    assert parse_errors[0] >= 2


@pytest.mark.parametrize(
    ("agents_text", "needle"),
    [
        ("agents:\n  - name: a\n    prompt: hi\n    colour: red\n", "agents.yaml:4"),
        ("agents:\n  - name: a\n    prompt: hi\n    temperature: hot\n", "temperature"),
        ("agents:\n  - name: a\n    prompt: 'hi {{ x '\n", "agents.yaml:3"),
        ("agents:\n  - name: a\n    prompt: 'hi {{ who }}'\n", "who"),
        ("agents:\n  - name: a\n    prompt: hi\n    engine: nowhere\n", "nowhere"),
        ("agents: [\n", "agents.yaml"),
    ],
    ids=["unknown-key", "wrong-type", "bad-template", "missing-var", "unknown-engine", "yaml"],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, engine: LoopbackEngine, agents_text: str, needle: str
) -> None:
    (tmp_path / "agents.yaml").write_text(agents_text)
    write_config(tmp_path, engine.url)
    db = tmp_path / "runs.db"
    for command in (["validate"], ["run", "--db", str(db)]):
        result = agentos(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert needle in result.stderr
        assert "Traceback" not in result.stderr
    assert not db.exists()
    assert engine.stats.requests == 0, "bad input must fail before any engine is contacted"


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text("agents:\n  - name: a\n    prompt: hi\n")
    (tmp_path / "config.yaml").write_text(
        "engines:\n  - name: o\n    type: openai\n    base_url: http://127.0.0.1:9\n"
        "    api_key: ${AGENTOS_TEST_MISSING_KEY}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENTOS_TEST_MISSING_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "agentos", "validate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AGENTOS_TEST_MISSING_KEY" in result.stderr
    assert "config.yaml:5" in result.stderr


def test_api_key_never_reaches_output_or_database(tmp_path: Path, engine: LoopbackEngine) -> None:
    secret = "sk-test-very-secret-value-123"
    (tmp_path / "agents.yaml").write_text(AGENTS)
    config = write_config(tmp_path, engine.url)
    config.write_text(config.read_text() + "    api_key: ${AGENTOS_TEST_KEY}\n")
    db = tmp_path / "runs.db"
    result = agentos("run", "--db", str(db), cwd=tmp_path, env={"AGENTOS_TEST_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert secret.encode() not in db.read_bytes()
    for extra in db.parent.glob("runs.db*"):
        assert secret.encode() not in extra.read_bytes()


def test_no_engine_serves_the_model(tmp_path: Path, engine: LoopbackEngine) -> None:
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - name: a\n    prompt: hi\n    model: not-served\n"
    )
    write_config(tmp_path, engine.url)
    db = tmp_path / "runs.db"
    result = agentos("run", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2
    assert "not-served" in result.stderr
    assert not db.exists()


def test_engines_lists_models_capabilities_and_health(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    write_config(tmp_path, engine.url)
    db = tmp_path / "e.db"
    result = agentos("engines", "--json", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == "loop"
    assert row["models"] == ["test-model"]
    assert set(row["capabilities"]) == {"chat", "completions", "embeddings"}
    assert row["healthy"] is True
    conn = sqlite3.connect(db)
    assert conn.execute("select name, healthy from engine_health").fetchall() == [("loop", 1)]


def test_runs_rejects_an_unknown_status(tmp_path: Path) -> None:
    result = agentos("runs", "--status", "bogus", "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert "bogus" in result.stderr


def test_a_rerun_is_served_from_the_cache_and_cache_commands_work(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    sampled = AGENTS.replace("length: 3}", "length: 3}\n    temperature: 0.8")
    (tmp_path / "agents.yaml").write_text(sampled)
    config = write_config(tmp_path, engine.url)
    # the cache figures below are the agent's answers only: no background embeddings
    config.write_text(config.read_text() + "embeddings:\n  enabled: false\n")
    db = tmp_path / "runs.db"
    first = agentos("run", "--db", str(db), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert agent_requests(engine) == 3
    second = agentos("run", "--db", str(db), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert agent_requests(engine) == 3, "the re-run asked the engine"
    conn = sqlite3.connect(db)
    runs = [r for (r,) in conn.execute("select id from runs order by started_at")]
    seeds = []
    for run_id in runs:
        rows = conn.execute(
            "select cache_hit, response from llm_calls where run_id = ? order by job_id",
            (run_id,),
        ).fetchall()
        seeds.append([answer_text(json.loads(response)) for _, response in rows])
        assert {hit for hit, _ in rows} == ({0} if run_id == runs[0] else {1})
    assert seeds[0] == seeds[1], "a re-run through the cache returns the same sequence"

    stats = json.loads(agentos("cache", "stats", "--json", "--db", str(db), cwd=tmp_path).stdout)
    assert stats["entries"] == 3 and stats["hits"] == 3
    assert agentos("cache", "prune", "--db", str(db), cwd=tmp_path).stdout.startswith("removed 0")
    cleared = agentos("cache", "clear", "--db", str(db), cwd=tmp_path)
    assert cleared.stdout.startswith("removed 3")
    bad = agentos("cache", "prune", "--older-than", "soon", "--db", str(db), cwd=tmp_path)
    assert bad.returncode == 2 and "--older-than" in bad.stderr


def test_agent_can_opt_out_of_the_cache(tmp_path: Path, engine: LoopbackEngine) -> None:
    (tmp_path / "agents.yaml").write_text(AGENTS + "    cache: false\n")
    write_config(tmp_path, engine.url)
    db = tmp_path / "runs.db"
    for _ in range(2):
        assert agentos("run", "--db", str(db), cwd=tmp_path).returncode == 0
    assert agent_requests(engine) == 6
    conn = sqlite3.connect(db)
    assert conn.execute(
        "select count(*) from llm_calls where cache_hit = 1 and kind = 'chat'"
    ).fetchone() == (0,)


def test_a_database_from_a_newer_agentos_is_refused_untouched(tmp_path: Path) -> None:
    from agentos.store import Store

    db = tmp_path / "new.db"
    with Store(db):
        pass
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("insert into _agentos_migrations (name, applied_at) values ('m999_future', 0)")
    conn.close()
    before = db.read_bytes()
    for command in (["runs"], ["replay", "abc"], ["export"], ["audit", "abc"]):
        result = agentos(*command, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "newer" in result.stderr or "upgrade agentos" in result.stderr
    assert db.read_bytes() == before
