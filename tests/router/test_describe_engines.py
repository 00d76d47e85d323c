"""describe_engines: what ``agentos engines`` lists of each engine, and its ``--probe``
report, for a healthy loopback engine and one whose port nobody listens on."""

from __future__ import annotations

import socket

from agentos.router.engines import describe_engines, open_engines
from agentos.spec import Config
from agentos.testing.engine import LoopbackEngine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(engine: LoopbackEngine) -> Config:
    return Config.model_validate(
        {
            "engines": [
                {"type": "openai", "name": "loop", "base_url": engine.url, "max_requests": 3},
                {
                    "type": "openai",
                    "name": "gone",
                    "base_url": f"http://127.0.0.1:{free_port()}",
                    "timeout": 2,
                },
            ]
        }
    )


async def test_rows_name_each_engine_its_models_capabilities_limits_and_health() -> None:
    async with LoopbackEngine() as engine, open_engines(config(engine)) as handles:
        loop, gone = await describe_engines(handles)

    assert (loop["name"], loop["type"], loop["endpoint"]) == ("loop", "openai", engine.url)
    assert loop["models"] == ["test-model"]
    assert {"chat", "completions", "embeddings"} <= set(loop["capabilities"])
    assert loop["healthy"] is True and loop["max_requests"] == 3
    assert gone["name"] == "gone" and gone["healthy"] is False and gone["detail"]
    assert "probe" not in loop and "probe" not in gone


async def test_probe_reports_a_healthy_engine_and_skips_an_unhealthy_one() -> None:
    async with LoopbackEngine() as engine, open_engines(config(engine)) as handles:
        loop, gone = await describe_engines(handles, probe=True)

    report = loop["probe"]
    assert report["engine"] == "loop"
    assert report["points"] and all(p["errors"] == 0 for p in report["points"])
    assert report["suggested_max_batch_size"] >= 1 and report["suggested_max_requests"] >= 1
    assert gone["probe"] is None
