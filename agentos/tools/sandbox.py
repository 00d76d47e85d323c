"""Worker processes for sync user tools, so that a call past its timeout can be killed.

A sync function cannot be stopped from outside its thread: run in a worker thread, a call
past its ``tool_timeout`` was recorded as timed out but went on running, and
``agentos run`` could not exit until it returned (``asyncio.run`` waits for the default
executor's threads). So a sync user tool runs in a worker process instead: at the
timeout (or on cancellation, Ctrl-C included) the process is killed and the call is
recorded as timed out at once; the next call gets a fresh process.

How a call goes:

- The worker is a fresh ``python -c`` process (never a ``fork``: the runtime has threads
  and open SQLite connections a fork would copy mid-use; and not ``multiprocessing``'s
  spawn, which imports the runtime's ``__main__`` again, the whole CLI or a user's script
  without a main guard) with the runtime's ``sys.path``, talking over a socket pair. It
  loads ``package.module:function`` itself, from the agents file's folder like the
  runtime does (:func:`agentos.agents.loading.load_callable`), and caches it. Only the
  target, the folder and the JSON arguments cross the socket, so the function needs no
  pickling.
- Starting a worker (a Python start-up, about 0.1-0.3 s) is done by
  :meth:`ToolProcessPool.warm` *before* the call's timeout starts (one idle worker per
  call about to begin, so concurrent calls are not timed on start-ups either); a call
  then takes an idle worker. A worker is reused by later calls (module state lives on
  between calls, as it did in-process) until a call times out, is cancelled or breaks
  its socket. The user's module is imported twice: by the runtime (for the tool's
  schema) and by the worker.
- POSIX only (``pass_fds``, ``start_new_session``): on Windows a sync user tool fails
  to start a worker.
- The return value is turned into JSON inside the worker (what is not JSON becomes its
  ``str``, as in-process); a :class:`~agentos.tools.types.ToolError` comes back as one
  (message and ``transient``); any other exception as its type name and message.
- Calls run in at most ``MAX_PROCESSES`` workers at once per event loop (what the default
  thread pool allowed before); more wait, within their timeout.
- Workers run in a session of their own, so Ctrl-C at the terminal reaches only the
  runtime, which decides (and kills them); they exit when the runtime's end of the socket
  closes or, on Linux, with the runtime itself (a runtime killed with ``kill -9`` leaves
  no worker behind, even one in the middle of a call), and the ones still alive at exit
  are killed by an ``atexit`` hook.

Cost: a call to a warm worker adds a socket round trip (no thread: the loop watches the
socket), well under a millisecond (``tests/tools/test_sandbox.py`` measures it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MAX_PROCESSES = min(32, (os.cpu_count() or 1) + 4)
"""Sync user-tool calls running at once per event loop (the default thread pool's size)."""

KEEP_IDLE = 4
"""Idle workers kept for later calls; more are stopped when their call ends."""

_PATH_VARIABLE = "AGENTOS_TOOL_WORKER_PATH"

_BOOT = (
    "import json, os, sys; "
    f"sys.path[:] = json.loads(os.environ.pop('{_PATH_VARIABLE}')); "
    "from agentos.tools.sandbox import _main; _main(int(sys.argv[1]), int(sys.argv[2]))"
)
"""What a worker runs: the runtime's ``sys.path`` (so it finds agentos and what the
runtime finds), then :func:`_main` on the inherited socket."""


class ToolProcessError(Exception):
    """A sync user tool raised something other than a ToolError in its worker; carries the
    exception's type name, so the call is recorded as it would have been in-process."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message


@dataclass(frozen=True)
class _Request:
    target: str
    base_dir: str | None
    arguments: dict[str, Any]


class ToolProcess:
    """One worker process and the runtime's end of its socket. The socket is read when the
    event loop says it is readable, so no thread waits on a worker."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env={**os.environ, _PATH_VARIABLE: json.dumps(sys.path)},
                start_new_session=True,
            )
        self.conn = Connection(ours.detach())
        self.broken = False
        _LIVE.add(self)

    async def ready(self) -> None:
        """Wait for the worker's "ready" (it has started and imported what it needs)."""
        await self._reply()

    async def call(self, request: _Request) -> tuple[Any, ...]:
        self.conn.send(request)
        return await self._reply()

    async def _reply(self) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        try:
            loop.add_reader(fd, _set_once, readable)
        except NotImplementedError:  # an event loop without add_reader (Windows)
            return await asyncio.to_thread(self._receive)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        return self._receive()

    def _receive(self) -> tuple[Any, ...]:
        try:
            reply: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            self.broken = True
            try:
                code: int | None = self.process.wait(1)
            except subprocess.TimeoutExpired:
                code = None
            raise ToolProcessError(
                "WorkerExit",
                f"the tool's worker process ended (exit code {code})"
                if code is not None
                else "the tool's worker process stopped answering",
            ) from None
        return reply

    def kill(self) -> None:
        """Kill the worker (a call in it is abandoned) and close its socket."""
        self.broken = True
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.conn.close()
        _LIVE.discard(self)

    close = kill


class ToolProcessPool:
    """Idle workers, shared by every sync user tool of the process."""

    def __init__(self) -> None:
        self._idle: list[ToolProcess] = []
        self._wanted = 0
        """Calls warmed and not yet begun: each has an idle worker waiting for it."""
        # the idle list and _wanted: one pool serves every event loop of the process (tests
        # and threads each run their own)
        self._lock = threading.Lock()
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._limits = weakref.WeakKeyDictionary()

    async def warm(self) -> None:
        """Make sure a worker is idle for the call about to be made (starting one if
        needed, outside that call's timeout): one per call warmed and not yet made, so
        concurrent calls do not start workers inside their timeouts."""
        with self._lock:
            self._wanted += 1
            if len(self._idle) >= self._wanted:
                return
        try:
            started = await _started()
        except BaseException:
            with self._lock:
                self._wanted = max(0, self._wanted - 1)
            raise
        self._give_back(started)

    async def call(self, target: str, base_dir: Path | None, arguments: dict[str, Any]) -> Any:
        """``target(**arguments)`` in a worker; its JSON result. Raises ToolError or
        ToolProcessError for a failed call; a cancelled call (a timeout) kills the worker."""
        loop = asyncio.get_running_loop()
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(MAX_PROCESSES)
        request = _Request(target, str(base_dir) if base_dir is not None else None, arguments)
        with self._lock:
            self._wanted = max(0, self._wanted - 1)
        async with limit:
            worker = self._take() or await _started()
            try:
                reply = await worker.call(request)
            except BaseException:
                worker.kill()
                raise
            self._give_back(worker)
        return _outcome(reply)

    def close(self) -> None:
        """Stop every idle worker (busy ones are killed by their call's cancellation)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def _take(self) -> ToolProcess | None:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if not worker.broken and worker.process.poll() is None:
                    return worker
                worker.close()
        return None

    def _give_back(self, worker: ToolProcess) -> None:
        if worker.broken:
            worker.close()
            return
        with self._lock:
            if len(self._idle) < max(KEEP_IDLE, self._wanted):
                self._idle.append(worker)
                return
        worker.close()


async def _started() -> ToolProcess:
    worker = ToolProcess()
    try:
        await worker.ready()
    except ToolProcessError as exc:
        worker.kill()
        raise ToolProcessError("WorkerStart", f"could not start a worker process: {exc}") from None
    except BaseException:
        worker.kill()
        raise
    return worker


def _outcome(reply: tuple[Any, ...]) -> Any:
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "tool_error":
        from agentos.tools.types import ToolError

        raise ToolError(reply[1], transient=reply[2])
    raise ToolProcessError(reply[1], reply[2])


POOL = ToolProcessPool()
"""The process's workers."""

_LIVE: weakref.WeakSet[ToolProcess] = weakref.WeakSet()


@atexit.register
def _kill_workers() -> None:
    POOL.close()
    for worker in list(_LIVE):
        worker.kill()


# -- inside the worker -------------------------------------------------------------------


def _main(fd: int, runtime_pid: int) -> None:
    """A worker's entry point (see ``_BOOT``): serve the socket ``fd``. On Linux the
    worker is killed with the runtime (``PR_SET_PDEATHSIG``), even in the middle of a
    call; elsewhere it ends when the call in progress returns and finds the socket
    closed."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != runtime_pid:  # the runtime died before the line above
        return
    _serve(Connection(fd))


_PR_SET_PDEATHSIG = 1


def _serve(conn: Connection) -> None:
    """The worker's loop: one request at a time until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from agentos.agents.loading import load_callable

    functions: dict[tuple[str, str | None], Any] = {}
    conn.send(("ready",))
    while True:
        try:
            request: _Request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            key = (request.target, request.base_dir)
            if key not in functions:
                functions[key] = load_callable(request.target, request.base_dir, key="tools")
            value = functions[key](**request.arguments)
            reply: tuple[Any, ...] = (
                "ok",
                json.loads(json.dumps(value, ensure_ascii=False, default=str)),
            )
        except BaseException as exc:  # every failure, SystemExit too, is the call's result
            reply = _failure(exc)
        conn.send(reply)


def _failure(exc: BaseException) -> tuple[Any, ...]:
    types = sys.modules.get("agentos.tools.types")  # imported if the tool raised one
    if types is not None and isinstance(exc, types.ToolError):
        return ("tool_error", exc.message, exc.transient)
    message = getattr(exc, "message", None) or str(exc)
    return ("error", type(exc).__name__, message)


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
