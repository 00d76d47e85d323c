"""The loopback test engine: an OpenAI-compatible HTTP server that behaves like its cost model.

Router tests and the benchmark need an engine whose speed, capacity and failures are known
exactly, so that a scheduling result can be compared with the theoretical best and every
retry path can be driven on purpose. This server provides that, on 127.0.0.1 only:

- **Cost model.** An inference request waits (FIFO) for one of ``slots`` slots, then holds
  it for ``per_request_ms + per_prompt_ms * prompts + delay_ms`` and nothing more: the
  answer is built inside that time and the wait is measured against a deadline, so the
  server's own overhead does not add up.
- **Answers** are deterministic (see ``agentos.testing.answers``).
- **Faults** (``Faults``) are read on every request, so a test can change them mid-run.
  ``fail_first`` fails the next N requests; then one ``random.Random(seed)`` draw per
  inference request picks at most one fault, the rates being consecutive slices of [0, 1)
  in the order error, hang, drop, malformed, broken_json (their sum should stay ≤ 1).
  Errors, hangs and drops happen after ``delay_ms`` and do not take a slot; malformed
  and broken-JSON answers go through the cost model like good ones.
- ``kill()`` drops the listener and every connection at once, like an engine process
  dying mid-batch; ``start()`` brings it back on the same port.
- ``GET /props`` answers like llama-server's: the ChatML chat template
  (``answers.CHATML_TEMPLATE``), its special tokens, the number of slots and the model, so
  that clients which read a model's chat template from llama-server find one here too.

HTTP/1.1 is spoken by a small parser of its own on an ``asyncio.Protocol`` (keep-alive,
pipelining, Content-Length and chunked request bodies, ``Expect: 100-continue``; JSON in
and out, no streaming), not by h11 and asyncio streams: the engine stands in for a GPU
server in throughput benchmarks on small machines, where a request must cost it tens of
microseconds, not hundreds. A request that is answered at once (a free slot, a zero-cost
model) is served inside ``data_received`` without a task; slots wake their waiters and
holds end through loop callbacks. ``GET /health``, ``GET /v1/models`` and ``GET /props``
never see faults. Anything that is not HTTP/1.x closes the connection without an answer.

``python -m agentos.testing.engine --help`` runs it as a standalone process; there
``--workers N`` serves one port from N processes (``SO_REUSEPORT``), the slots split
between them (see ``main``).

This is a testing utility inside the package; nothing uses it unless a test, the
benchmark or a user's config points at it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentos.testing.answers import (
    CHAT_PATH,
    CHATML_EOS,
    CHATML_TEMPLATE,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    InferenceRequest,
    InvalidRequest,
    build_response,
    error_body,
    parse_request,
)

INFERENCE_PATHS = (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH)
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
"""Longest request line plus headers; a longer head closes the connection."""
_LISTEN_BACKLOG = 4096  # hundreds of clients connect at once in the benchmark

FaultKind = Literal["fail_first", "error", "hang", "drop", "malformed", "broken_json"]


@dataclass
class CostModel:
    """How long the engine takes; read on every request, so it may change at run time."""

    per_request_ms: float = 0.0
    """Fixed cost of every inference request."""
    per_prompt_ms: float = 0.0
    """Added per prompt in the request (a chat request is one prompt)."""
    slots: int = 4
    """Requests processed at once; more wait their turn, first come first served."""
    max_batch: int = 64
    """Prompts per ``/v1/completions`` request; more are refused with HTTP 400."""


@dataclass
class Faults:
    """Failures to inject; read on every request, so tests change them mid-run."""

    error_rate: float = 0.0
    """Fraction of requests answered with ``error_status``."""
    error_status: int = 500
    """The status of injected errors (429 for rate limiting, 503 for overload, …)."""
    retry_after: float | None = None
    """Sent as the ``Retry-After`` header (seconds) with injected 429 and 503 answers."""
    fail_first: int = 0
    """The next N requests fail with ``error_status``, before any random fault."""
    hang_rate: float = 0.0
    """Fraction of requests never answered (the client times out)."""
    delay_ms: float = 0.0
    """Extra latency on every request (inside the slot for served requests)."""
    drop_rate: float = 0.0
    """Fraction of requests whose connection is closed without an answer."""
    malformed_rate: float = 0.0
    """Fraction answered 200 with a body that is not valid JSON."""
    broken_json_rate: float = 0.0
    """Fraction whose answer content is fenced, prose-wrapped JSON with a trailing comma."""
    seed: int = 0
    """Seed of the ``random.Random`` that picks faults; changing it restarts the sequence."""


@dataclass
class EngineCounters:
    """What the engine saw. Mutated only on the engine's event loop; safe to read anywhere."""

    requests: int = 0
    """Inference requests received (POSTs to the three inference paths), faults included."""
    prompts: int = 0
    """Prompts in valid inference requests (completions prompts, embeddings inputs, chats)."""
    connections: int = 0
    """TCP connections accepted (fewer than requests when clients keep connections alive)."""
    by_path: dict[str, int] = field(default_factory=dict)
    """Requests per path, every path and method included."""
    by_status: dict[int, int] = field(default_factory=dict)
    """Answers sent per HTTP status."""
    in_flight: int = 0
    """Requests holding a slot now."""
    max_in_flight: int = 0
    """Most requests that held slots at the same time; never above ``CostModel.slots``."""
    queued: int = 0
    """Requests waiting for a slot now."""
    max_prompts_per_request: int = 0
    """Largest number of prompts seen in one valid request."""
    errors_injected: dict[str, int] = field(default_factory=dict)
    """Injected faults per kind: fail_first, error, hang, drop, malformed, broken_json."""
    recorded: list[tuple[str, Any]] = field(default_factory=list)
    """(path, parsed JSON body) of every inference request, when ``record_requests``."""


class _BadRequest(Exception):
    """Bytes that are not an HTTP/1.x request: the connection is closed, unanswered."""


@dataclass
class _Head:
    """A parsed request line and headers, kept while the body is still arriving."""

    method: str
    target: str
    body_start: int
    length: int
    chunked: bool
    close: bool
    expect_continue: bool
    authorization: str = ""


@dataclass(eq=False)
class _Waiter:
    arrived: float
    grant: Callable[[float], None]


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class _SlotPool:
    """FIFO slots whose number is read from the cost model at every acquire and release.

    Slots keep the cost model's clock, not the event loop's: a request that waited for a
    slot starts its hold when its predecessor's hold ideally ended (or when it arrived, if
    later), not when the predecessor's timer actually fired. Timer lateness (about a
    millisecond per wake-up) therefore never accumulates along a queue, and a busy engine
    finishes when the cost model says it should.

    Grants are callbacks: a free slot is granted at once, inside ``acquire``; a waiter is
    granted through ``loop.call_soon`` (never from inside ``release``, so a long queue of
    zero-cost requests does not recurse).
    """

    def __init__(self, engine: LoopbackEngine) -> None:
        self._engine = engine
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def _limit(self) -> int:
        return max(1, self._engine.cost.slots)

    def acquire(self, waiter: _Waiter) -> None:
        """Call ``waiter.grant(start)`` once a slot is taken (``start``: the loop time at
        which its hold starts, ≤ now; ``waiter.arrived`` when a slot is free at once)."""
        if not self._waiters and self._engine.stats.in_flight < self._limit():
            self._take()
            waiter.grant(waiter.arrived)
            return
        self._waiters.append(waiter)
        self._engine.stats.queued += 1

    def cancel(self, waiter: _Waiter) -> bool:
        """Forget a waiter that has not been granted a slot; False if it had been."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        self._engine.stats.queued -= 1
        return True

    def release(self, loop: asyncio.AbstractEventLoop, ideal_end: float) -> None:
        """Give a slot back; ``ideal_end`` is when the cost model says its hold ended."""
        stats = self._engine.stats
        stats.in_flight -= 1
        while self._waiters and stats.in_flight < self._limit():
            waiter = self._waiters.popleft()
            stats.queued -= 1
            self._take()
            loop.call_soon(waiter.grant, max(waiter.arrived, ideal_end))

    def _take(self) -> None:
        stats = self._engine.stats
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one after another (pipelined ones wait in
    the buffer) and hands each to the engine; ``respond`` answers the current one."""

    def __init__(self, engine: LoopbackEngine, generation: int) -> None:
        self.engine = engine
        self.generation = generation
        self.loop = engine._running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: _Head | None = None
        self.authorization = ""
        """The Authorization header of the request being served."""
        self.continued = False
        self.busy = False
        self.close_after = False
        self.hanging = False
        self.eof = False
        self.closed = False
        self.serving = False
        self.ticket: _Waiter | None = None
        """The slot this connection waits for or holds (None when neither)."""
        self.holding = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.generation != self.engine._generation:
            self.closed = True
            transport.abort()  # accepted just before a kill()
            return
        self.engine._connections.add(self)
        self.engine.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        if self.closed or self.hanging:
            return  # a hung request reads and ignores whatever else comes
        self.buffer += data
        if not self.busy:
            self._serve_buffered()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy or self.hanging:
            self._close()
        return True  # keep the write side open for the answer of a request in progress

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.engine._connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            if self.holding:
                self.holding = False
                self.engine._slots.release(self.loop, min(self.deadline, self.loop.time()))
            else:
                self.engine._slots.cancel(ticket)
        if not self.engine._connections:
            self.engine._all_closed()

    # -- requests and answers ----------------------------------------------------------

    def respond(self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer the current request, then go on with the next one in the buffer."""
        if self.closed or self.transport is None:
            return
        stats = self.engine.stats
        stats.by_status[status] = stats.by_status.get(status, 0) + 1
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        if self.close_after:
            extra += "connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        if self.close_after:
            self._close()
            return
        self.busy = False
        if self.eof and not self.buffer:
            self._close()
        elif not self.serving:
            self._serve_buffered()

    def drop(self) -> None:
        """Close without an answer (what was written before still goes out)."""
        self._close()

    def hang(self) -> None:
        """Never answer; read and ignore until the client gives up and closes."""
        self.hanging = True
        self.buffer.clear()
        if self.eof:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _serve_buffered(self) -> None:
        self.serving = True
        try:
            while not self.busy and not self.closed and not self.hanging:
                try:
                    request = self._next_request()
                except _BadRequest:
                    self.closed = True
                    if self.transport is not None:
                        self.transport.close()
                    return
                if request is None:
                    if self.eof:
                        self._close()
                    return
                method, target, body = request
                self.busy = True
                self.engine._handle(self, method, target, body)
        finally:
            self.serving = False

    def _next_request(self) -> tuple[str, str, bytes] | None:
        """The next complete request in the buffer, or None while it is still arriving."""
        buffer = self.buffer
        head = self.head
        if head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise _BadRequest("request head too long")
                return None
            head = self.head = _parse_head(bytes(buffer[:end]), end + 4)
            self.close_after = head.close
            self.continued = False
        if head.chunked:
            dechunked = _dechunk(buffer, head.body_start)
            if dechunked is None:
                self._maybe_continue(head)
                return None
            body, consumed = dechunked
        else:
            consumed = head.body_start + head.length
            if len(buffer) < consumed:
                self._maybe_continue(head)
                return None
            body = bytes(buffer[head.body_start : consumed])
        del buffer[:consumed]
        self.head = None
        self.authorization = head.authorization
        return head.method, head.target, body

    def _maybe_continue(self, head: _Head) -> None:
        if head.expect_continue and not self.continued and self.transport is not None:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- the cost model ----------------------------------------------------------------

    def wait_for_slot(self, grant: Callable[[float], None]) -> None:
        """Queue for a slot; ``grant(start)`` runs once this request holds one."""

        def granted(start: float) -> None:
            if self.closed:  # handed a slot just as the client went away
                self.engine._slots.release(self.loop, self.loop.time())
                return
            self.holding = True
            grant(start)

        self.holding = False
        self.ticket = _Waiter(self.loop.time(), granted)
        self.engine._slots.acquire(self.ticket)

    def hold_until(self, deadline: float, status: int, body: bytes) -> None:
        """Keep the slot until ``deadline`` (loop time), then answer and release it."""
        self.deadline = deadline
        if deadline > self.loop.time():
            self.timer = self.loop.call_at(deadline, self._finish, status, body)
        else:
            self._finish(status, body)

    def _finish(self, status: int, body: bytes) -> None:
        self.timer = None
        if self.ticket is not None:
            self.ticket = None
            self.holding = False
            self.engine._slots.release(self.loop, min(self.deadline, self.loop.time()))
        self.respond(status, body)


def _parse_head(raw: bytes, body_start: int) -> _Head:
    try:
        text = raw.decode("latin-1")
        request_line, *lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise _BadRequest("not an HTTP request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not method.isalpha() or not target:
        raise _BadRequest("not HTTP/1.x")
    length = 0
    chunked = False
    close = version == "HTTP/1.0"
    expect_continue = False
    authorization = ""
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest("malformed header line")
        name = name.lower()
        value = value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise _BadRequest("bad content-length")
            length = int(value)
            if length > MAX_BODY_BYTES:
                raise _BadRequest("request body too large")
        elif name == "transfer-encoding":
            if value.lower() != "chunked":
                raise _BadRequest("unsupported transfer-encoding")
            chunked = True
        elif name == "connection":
            tokens = {t.strip() for t in value.lower().split(",")}
            if "close" in tokens:
                close = True
            elif "keep-alive" in tokens:
                close = False
        elif name == "expect":
            expect_continue = value.lower() == "100-continue"
        elif name == "authorization":
            authorization = value
    return _Head(
        method, target, body_start, length, chunked, close, expect_continue, authorization
    )


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``start``: (body, end offset), or None while incomplete."""
    parts: list[bytes] = []
    size_total = 0
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            if len(buffer) - at > 1024:
                raise _BadRequest("chunk size line too long")
            return None
        try:
            size = int(bytes(buffer[at:line_end]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        at = line_end + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    return None
                if line_end == at:
                    return b"".join(parts), at + 2
                at = line_end + 2
        size_total += size
        if size < 0 or size_total > MAX_BODY_BYTES:
            raise _BadRequest("request body too large")
        if len(buffer) < at + size + 2:
            return None
        if buffer[at + size : at + size + 2] != b"\r\n":
            raise _BadRequest("chunk without CRLF")
        parts.append(bytes(buffer[at : at + size]))
        at += size + 2


class LoopbackEngine:
    """An OpenAI-compatible server on loopback for tests and the benchmark.

    Use ``async with LoopbackEngine(...) as engine`` in async tests, or
    ``with engine.run_in_thread():`` in synchronous ones (the server then runs its own
    event loop in a daemon thread). ``cost`` and ``faults`` are plain attributes, read on
    every request. ``reuse_port`` listens with ``SO_REUSEPORT``, so that several engine
    processes can share one port; ``total_slots`` is what ``/props`` reports as the
    engine's slots when they are shared that way (default: ``cost.slots``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("test-model",),
        embedding_dim: int = 16,
        cost: CostModel | None = None,
        faults: Faults | None = None,
        record_requests: bool = True,
        reuse_port: bool = False,
        total_slots: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.api_key = api_key
        """When set, every request but ``/health`` must send ``Authorization: Bearer KEY``."""
        self.port = port
        self.models = tuple(models)
        self.embedding_dim = embedding_dim
        self.cost = cost if cost is not None else CostModel()
        self.faults = faults if faults is not None else Faults()
        self.record_requests = record_requests
        self.reuse_port = reuse_port
        self.total_slots = total_slots
        self.stats = EngineCounters()
        self._slots = _SlotPool(self)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._connections: set[_Connection] = set()
        self._closed_waiters: list[asyncio.Future[None]] = []
        self._fail_first_done = 0
        self._rng_seed = self.faults.seed
        self._rng = random.Random(self._rng_seed)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``; the port is known once ``start()`` has run."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen on ``host:port`` (a free port the first time when port is 0, the same
        port on every later start)."""
        if self._server is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._generation += 1
        generation = self._generation
        self._server = await self._loop.create_server(
            lambda: _Connection(self, generation),
            self.host,
            self.port,
            backlog=_LISTEN_BACKLOG,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close every connection and wait until they are gone."""
        server = self._server
        self._close_everything()
        if server is not None:
            await server.wait_closed()
        if self._connections:
            waiter = asyncio.get_running_loop().create_future()
            self._closed_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await waiter

    async def __aenter__(self) -> LoopbackEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def kill(self) -> None:
        """Abruptly close the listener and every open connection, mid-request or not.

        Callable from the engine's loop or, in ``run_in_thread`` mode, from any thread.
        """
        loop = self._loop
        if loop is None or self._server is None:
            return
        if _running_loop() is loop or not loop.is_running():
            self._close_everything()
        else:
            asyncio.run_coroutine_threadsafe(self._close_async(), loop).result(timeout=30)

    def revive(self) -> None:
        """``start()`` again after ``kill()``, from outside the loop (``run_in_thread``)."""
        if self._loop is None:
            raise RuntimeError("revive() needs an engine started by run_in_thread()")
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=30)

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[LoopbackEngine]:
        """Run the engine on its own event loop in a daemon thread for the block."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="loopback-engine", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
                loop.close()

    def reset_stats(self) -> None:
        """Start counting afresh (requests in flight or waiting stay counted)."""
        self.stats = EngineCounters(in_flight=self.stats.in_flight, queued=self.stats.queued)

    def props(self) -> dict[str, Any]:
        """What ``GET /props`` answers: llama-server's fields for the chat template."""
        return {
            "chat_template": CHATML_TEMPLATE,
            "bos_token": "",
            "eos_token": CHATML_EOS,
            "total_slots": self.total_slots if self.total_slots is not None else self.cost.slots,
            "model_path": self.models[0] if self.models else "",
            "build_info": "agentos loopback test engine",
        }

    async def _close_async(self) -> None:
        self._close_everything()

    def _close_everything(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._generation += 1
        for connection in list(self._connections):
            connection.closed = True
            if connection.transport is not None:
                connection.transport.abort()

    def _all_closed(self) -> None:
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # -- request handling (on the engine's loop, from the connections) ------------------

    def _handle(self, conn: _Connection, method: str, target: str, body: bytes) -> None:
        path = target.split("?", 1)[0]
        by_path = self.stats.by_path
        by_path[path] = by_path.get(path, 0) + 1
        wanted = f"Bearer {self.api_key}"
        if self.api_key is not None and path != "/health" and conn.authorization != wanted:
            conn.respond(*_error(401, "a valid API key is required", "invalid_api_key"))
            return
        if path in INFERENCE_PATHS:
            if method != "POST":
                conn.respond(*_error(405, f"{path} takes POST", "method_not_allowed"))
                return
            try:
                self._inference(conn, path, body)
            except Exception as exc:  # a bug in answer building must not kill the server
                conn.respond(*_error(500, f"the loopback engine failed: {exc!r}", "engine_bug"))
            return
        if method != "GET":
            conn.respond(*_error(405, f"{path} takes GET", "method_not_allowed"))
        elif path == "/health":
            conn.respond(200, b'{"status":"ok"}')
        elif path == "/v1/models":
            models = [
                {"id": m, "object": "model", "created": 0, "owned_by": "agentos-testing"}
                for m in self.models
            ]
            conn.respond(200, json.dumps({"object": "list", "data": models}).encode())
        elif path == "/props":
            conn.respond(200, json.dumps(self.props()).encode())
        else:
            conn.respond(*_error(404, f"no route for {method} {path}", "not_found"))

    def _inference(self, conn: _Connection, path: str, raw: bytes) -> None:
        stats = self.stats
        stats.requests += 1
        try:
            body = json.loads(raw)
        except ValueError:
            conn.respond(*_error(400, "the request body is not valid JSON", "invalid_json"))
            return
        if self.record_requests:
            stats.recorded.append((path, body))
        try:
            parsed = parse_request(
                path, body, models=self.models, max_batch=max(1, self.cost.max_batch)
            )
        except InvalidRequest as refused:
            conn.respond(*_error(refused.status, refused.message, refused.code))
            return
        stats.prompts += parsed.n_prompts
        if parsed.n_prompts > stats.max_prompts_per_request:
            stats.max_prompts_per_request = parsed.n_prompts

        faults = self.faults
        fault = self._choose_fault()
        if fault == "broken_json" and path == EMBEDDINGS_PATH:
            fault = None  # embeddings have no content to garble
        if fault is None or fault in ("malformed", "broken_json"):
            cost = self.cost
            hold_ms = cost.per_request_ms + cost.per_prompt_ms * parsed.n_prompts
            hold_s = (hold_ms + faults.delay_ms) / 1000
            if fault is not None:
                stats.errors_injected[fault] = stats.errors_injected.get(fault, 0) + 1
            conn.wait_for_slot(lambda start: self._serve(conn, parsed, fault, start + hold_s))
            return
        stats.errors_injected[fault] = stats.errors_injected.get(fault, 0) + 1
        if faults.delay_ms > 0:
            conn.timer = conn.loop.call_later(
                faults.delay_ms / 1000, self._fail, conn, fault, faults
            )
        else:
            self._fail(conn, fault, faults)

    def _serve(
        self, conn: _Connection, parsed: InferenceRequest, fault: str | None, deadline: float
    ) -> None:
        """Build the answer inside the slot, then hold the slot until ``deadline``."""
        try:
            answer = build_response(
                parsed, embedding_dim=self.embedding_dim, broken_json=fault == "broken_json"
            )
            data = json.dumps(answer).encode()
        except Exception as exc:
            status, data = _error(500, f"the loopback engine failed: {exc!r}", "engine_bug")
            conn.hold_until(deadline, status, data)
            return
        if fault == "malformed":
            data = data[: len(data) // 2]  # a proper prefix of a JSON object never parses
        conn.hold_until(deadline, 200, data)

    def _fail(self, conn: _Connection, fault: FaultKind, faults: Faults) -> None:
        conn.timer = None
        if fault == "hang":
            conn.hang()
        elif fault == "drop":
            conn.drop()
        else:
            conn.respond(*self._injected_error(faults))

    def _choose_fault(self) -> FaultKind | None:
        faults = self.faults
        if self._fail_first_done < faults.fail_first:
            self._fail_first_done += 1
            return "fail_first"
        if faults.seed != self._rng_seed:
            self._rng_seed = faults.seed
            self._rng = random.Random(faults.seed)
        draw = self._rng.random()
        slices: tuple[tuple[FaultKind, float], ...] = (
            ("error", faults.error_rate),
            ("hang", faults.hang_rate),
            ("drop", faults.drop_rate),
            ("malformed", faults.malformed_rate),
            ("broken_json", faults.broken_json_rate),
        )
        for kind, rate in slices:
            if draw < rate:
                return kind
            draw -= max(0.0, rate)
        return None

    def _injected_error(self, faults: Faults) -> tuple[int, bytes, list[tuple[str, str]]]:
        status = faults.error_status
        headers = []
        if status in (429, 503) and faults.retry_after is not None:
            headers.append(("retry-after", _format_seconds(faults.retry_after)))
        kind = "rate_limit_error" if status == 429 else "server_error"
        message = f"injected fault: HTTP {status}"
        return status, error_body(message, code="injected_fault", kind=kind), headers


def _error(status: int, message: str, code: str) -> tuple[int, bytes]:
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    return status, error_body(message, code=code, kind=kind)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.asynccontextmanager
async def _signals_stop(stop: asyncio.Event) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


_COST_HELP = {
    "per_request_ms": "fixed cost of every inference request, in ms",
    "per_prompt_ms": "cost added per prompt in a request, in ms",
    "slots": "requests processed at once; more wait in FIFO order",
    "max_batch": "most prompts per /v1/completions request; more get HTTP 400",
}
_FAULT_HELP = {
    "error_rate": "fraction of requests answered with --error-status",
    "error_status": "HTTP status of injected errors",
    "retry_after": "Retry-After seconds sent with injected 429/503 answers",
    "fail_first": "the first N requests fail with --error-status",
    "hang_rate": "fraction of requests never answered",
    "delay_ms": "extra latency on every request, in ms",
    "drop_rate": "fraction of requests whose connection is closed without an answer",
    "malformed_rate": "fraction answered 200 with a body that is not valid JSON",
    "broken_json_rate": "fraction whose content is fenced JSON with prose and a trailing comma",
    "seed": "seed of the random fault choices (runs are reproducible)",
}


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options: one per ``CostModel`` and ``Faults`` field, same names."""
    parser = argparse.ArgumentParser(
        prog="python -m agentos.testing.engine",
        description="OpenAI-compatible loopback test engine with a cost model and faults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="a model to serve; repeat for several (default test-model)",
    )
    parser.add_argument("--embedding-dim", type=int, default=16, help="embedding vector length")
    parser.add_argument(
        "--api-key", default=None, help="answer 401 unless requests send this bearer key"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port together (SO_REUSEPORT); the slots are split "
        "between them, so that all of them together hold --slots; faults and counters "
        "are per process",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--total-slots", type=int, default=None, help=argparse.SUPPRESS)
    for title, defaults, helps in (
        ("cost model", CostModel(), _COST_HELP),
        ("faults", Faults(), _FAULT_HELP),
    ):
        group = parser.add_argument_group(title)
        for name, text in helps.items():
            default = getattr(defaults, name)
            group.add_argument(
                "--" + name.replace("_", "-"),
                type=float if default is None else type(default),
                default=default,
                help=text,
            )
    return parser


def split_slots(slots: int, workers: int) -> list[int]:
    """``slots`` shared out over ``workers`` as evenly as possible (the first ones get the
    remainder); the shares add up to ``slots``, so the cost model stays what it says."""
    return [slots // workers + (1 if i < slots % workers else 0) for i in range(workers)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine until SIGINT or SIGTERM; exit status 0 on a clean stop.

    With ``--workers N`` (N > 1) this process serves ``split_slots(slots, N)[0]`` slots
    and starts N − 1 worker processes with the other shares, all listening on one port
    with ``SO_REUSEPORT``: the kernel spreads new connections over them (by a hash of the
    client's address and port, so a few dozen connections are split only roughly evenly,
    and a worker with more connections than slots queues while another has slots free).
    The slots are split, never replicated, so the engine as a whole never serves more
    requests at once than ``--slots``; ``/props`` reports the total. Faults, their seeds
    and the counters are each worker's own. Stopping this process stops the workers.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > max(1, args.slots):
        parser.error("--workers cannot exceed --slots (every worker needs a slot)")
    shares = split_slots(args.slots, args.workers)
    engine = LoopbackEngine(
        host=args.host,
        port=args.port,
        models=args.models or ("test-model",),
        embedding_dim=args.embedding_dim,
        cost=CostModel(**{name: getattr(args, name) for name in _COST_HELP} | {"slots": shares[0]}),
        faults=Faults(**{name: getattr(args, name) for name in _FAULT_HELP}),
        record_requests=False,
        reuse_port=args.reuse_port or args.workers > 1,
        total_slots=args.total_slots if args.total_slots is not None else args.slots,
        api_key=args.api_key,
    )
    return asyncio.run(_serve_until_signalled(engine, arguments, shares))


async def _serve_until_signalled(
    engine: LoopbackEngine, arguments: list[str], shares: list[int]
) -> int:
    try:
        await engine.start()
    except OSError as exc:
        print(f"cannot listen on {engine.host}:{engine.port}: {exc}", file=sys.stderr)
        return 2
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for share in shares[1:]:
            workers.append(_start_worker(engine, arguments, share, sum(shares)))
        for worker in workers:
            if not await _worker_listening(worker):
                print("a worker process did not start", file=sys.stderr)
                return 2
        print(f"listening on {engine.url}", flush=True)
        stop = asyncio.Event()
        async with _signals_stop(stop):
            await stop.wait()
    finally:
        await engine.stop()
        for worker in workers:
            _stop_worker(worker)
    return 0


def _start_worker(
    engine: LoopbackEngine, arguments: list[str], slots: int, total: int
) -> subprocess.Popen[bytes]:
    overrides = ["--port", str(engine.port), "--workers", "1", "--slots", str(slots)]
    overrides += ["--reuse-port", "--total-slots", str(total)]
    command = [sys.executable, "-m", "agentos.testing.engine", *arguments, *overrides]
    return subprocess.Popen(command, stdout=subprocess.PIPE, env=os.environ.copy())


async def _worker_listening(worker: subprocess.Popen[bytes]) -> bool:
    assert worker.stdout is not None
    line = await asyncio.to_thread(worker.stdout.readline)
    return line.startswith(b"listening on ")


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    if worker.stdout is not None:
        worker.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
