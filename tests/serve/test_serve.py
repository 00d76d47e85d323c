"""``agentos serve`` as a process: where it may listen, how it stops, what it records."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from agentos.errors import SpecError
from agentos.serve.clients import Clients
from agentos.serve.errors import ApiError
from agentos.serve.service import check_exposure
from agentos.spec.config import Config, load_config
from agentos.testing.engine import LoopbackEngine
from tests.cli_process import run_agentos
from tests.serve.conftest import engine_config

KEY = "k" * 24


def test_listening_beyond_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("engines: []\n")
    result = run_agentos(
        "serve", "--host", "0.0.0.0", "--config", "config.yaml", "--port", "0", cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join((result.stdout + result.stderr).split())
    assert "0.0.0.0 is not a loopback address" in message
    assert "serve.keys" in message
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.db"))


def test_exposure_rules() -> None:
    keyed = Config.model_validate({"serve": {"keys": [{"name": "a", "key": KEY}]}})
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(host, Config())
    for host in ("0.0.0.0", "192.168.1.4", "::", "example.org"):
        with pytest.raises(SpecError, match="not a loopback address"):
            check_exposure(host, Config())
        check_exposure(host, keyed)


def test_bad_keys_in_config_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"serve": {"keys": [{"name": "a", "key": "short"}]}}))
    with pytest.raises(SpecError) as short:
        load_config(cfg)
    assert "serve.keys[0].key" in short.value.message or "serve → keys" in short.value.message
    assert "at least 16 characters" in short.value.message
    assert "short" not in short.value.message.replace("shorter", "")
    cfg.write_text(
        yaml.safe_dump(
            {"serve": {"keys": [{"name": "a", "key": KEY}, {"name": "a", "key": KEY + "x"}]}}
        )
    )
    with pytest.raises(SpecError, match="client names must be unique; repeated: a"):
        load_config(cfg)
    cfg.write_text(
        yaml.safe_dump({"serve": {"keys": [{"name": "a", "key": KEY}, {"name": "b", "key": KEY}]}})
    )
    with pytest.raises(SpecError, match="same key"):
        load_config(cfg)


def test_client_keys_and_priority_ceiling() -> None:
    config = Config.model_validate(
        {
            "serve": {
                "keys": [
                    {"name": "batch-jobs", "key": KEY, "priority": "background"},
                    {"name": "editor", "key": KEY + "e"},
                ]
            }
        }
    ).serve
    clients = Clients(config)
    batch = clients.identify(f"Bearer {KEY}", None, None)
    assert batch.process == "client[batch-jobs]"
    assert clients.priority(batch, None, None) == "background"
    with pytest.raises(ApiError) as raised:
        clients.priority(batch, "user", None)
    assert raised.value.status == 403
    with pytest.raises(ApiError) as raised:
        clients.priority(batch, None, "system")
    assert raised.value.status == 403
    editor = clients.identify(f"bearer {KEY}e", "ignored", None)
    assert editor.process == "client[editor]"
    assert clients.priority(editor, "Background", None) == "background"
    assert clients.priority(editor, None, None) == "user"
    with pytest.raises(ApiError) as raised:
        clients.priority(editor, "urgent", None)
    assert raised.value.status == 400
    for header in (None, "Bearer nope-nope-nope-nope", KEY, f"Basic {KEY}"):
        with pytest.raises(ApiError) as raised:
            clients.identify(header, None, None)
        assert raised.value.status == 401
        assert KEY not in raised.value.message


def test_clients_without_keys_are_named_by_header_or_user_agent() -> None:
    clients = Clients(Config().serve)
    assert clients.identify(None, "notebook 1", None).process == "client[notebook-1]"
    assert clients.identify(None, None, "OpenAI/Python 1.55.0").process == "client[OpenAI]"
    assert clients.identify(None, None, None).process == "client[anonymous]"


def test_calls_are_recorded_with_their_client_and_never_the_key(serve, engine) -> None:
    served = serve(
        {"engines": [engine_config(engine)], "serve": {"keys": [{"name": "nb", "key": KEY}]}}
    )
    answer = httpx.post(
        served.v1 + "/completions",
        json={"model": "test-model", "prompt": "hello", "max_tokens": 4},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 200, answer.text
    assert served.stop() == 0
    with sqlite3.connect(served.db) as conn:
        rows = conn.execute("SELECT process, run_id, kind FROM llm_calls").fetchall()
    assert rows == [("client[nb]", None, "completions")]
    assert KEY.encode() not in served.db.read_bytes()
    assert KEY not in served.output()


def _post_later(url: str, out: dict[str, httpx.Response]) -> threading.Thread:
    def post() -> None:
        out["answer"] = httpx.post(
            url, json={"model": "test-model", "prompt": "slow", "max_tokens": 4}, timeout=60
        )

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _wait_in_flight(engine: LoopbackEngine) -> None:
    deadline = time.monotonic() + 20
    while engine.stats.in_flight + engine.stats.queued == 0:
        assert time.monotonic() < deadline, "the request never reached the engine"
        time.sleep(0.02)


def test_sigterm_lets_requests_in_flight_finish(serve, engine) -> None:
    engine.faults.delay_ms = 1500
    served = serve({"engines": [engine_config(engine)], "serve": {"shutdown_s": 20}})
    out: dict[str, httpx.Response] = {}
    thread = _post_later(served.v1 + "/completions", out)
    _wait_in_flight(engine)
    served.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert out["answer"].status_code == 200, out["answer"].text
    assert served.process.wait(30) == 0
    assert "stopping: 1 request(s)" in served.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url + "/health")


def test_requests_still_waiting_after_the_grace_get_503_with_the_reason(serve, engine) -> None:
    engine.faults.delay_ms = 8000
    served = serve({"engines": [engine_config(engine)], "serve": {"shutdown_s": 0.5}})
    out: dict[str, httpx.Response] = {}
    thread = _post_later(served.v1 + "/completions", out)
    _wait_in_flight(engine)
    started = time.monotonic()
    served.process.send_signal(signal.SIGINT)
    thread.join(30)
    answer = out["answer"]
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "shutting_down"
    assert "stopped before the answer came" in error["message"]
    assert "0.5 s had passed" in error["message"]
    assert served.process.wait(30) == 0
    assert time.monotonic() - started < 8, "the shutdown waited for the engine"
