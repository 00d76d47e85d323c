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

HTTP/1.1 is spoken with ``h11`` over asyncio streams: keep-alive, Content-Length bodies,
JSON in and out, no streaming. ``GET /health`` and ``GET /v1/models`` never see faults.

This is a testing utility inside the package; nothing uses it unless a test, the
benchmark or a user's config points at it. ``python -m agentos.testing.engine --help``
runs it as a standalone process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import http
import json
import random
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h11

from agentos.testing.answers import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    InvalidRequest,
    build_response,
    error_body,
    parse_request,
)

INFERENCE_PATHS = (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH)
MAX_BODY_BYTES = 32 * 1024 * 1024
_READ_CHUNK = 65536
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


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


_CLOSE = object()
"""Returned by a handler that has already dealt with the connection (drop, hang)."""


class _SlotPool:
    """FIFO slots whose number is read from the cost model at every acquire and release.

    Slots keep the cost model's clock, not the event loop's: a request that waited for a
    slot starts its hold when its predecessor's hold ideally ended (or when it arrived, if
    later), not when the predecessor's timer actually fired. Timer lateness (about a
    millisecond per wake-up) therefore never accumulates along a queue, and a busy engine
    finishes when the cost model says it should.
    """

    def __init__(self, engine: LoopbackEngine) -> None:
        self._engine = engine
        self._waiters: collections.deque[tuple[float, asyncio.Future[float]]] = collections.deque()

    def _limit(self) -> int:
        return max(1, self._engine.cost.slots)

    async def acquire(self) -> float:
        """Wait for a slot; returns the loop time at which its hold starts (≤ now)."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        if not self._waiters and self._engine.stats.in_flight < self._limit():
            self._take()
            return arrived
        entry = (arrived, loop.create_future())
        self._waiters.append(entry)
        self._engine.stats.queued += 1
        try:
            return await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(loop.time())  # handed a slot just as it was cancelled
            else:
                self._waiters.remove(entry)
            raise
        finally:
            self._engine.stats.queued -= 1

    def release(self, ideal_end: float) -> None:
        """Give a slot back; ``ideal_end`` is when the cost model says its hold ended."""
        self._engine.stats.in_flight -= 1
        while self._waiters and self._engine.stats.in_flight < self._limit():
            arrived, waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(max(arrived, ideal_end))

    def _take(self) -> None:
        stats = self._engine.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)


class LoopbackEngine:
    """An OpenAI-compatible server on loopback for tests and the benchmark.

    Use ``async with LoopbackEngine(...) as engine`` in async tests, or
    ``with engine.run_in_thread():`` in synchronous ones (the server then runs its own
    event loop in a daemon thread). ``cost`` and ``faults`` are plain attributes, read on
    every request.
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
    ) -> None:
        self.host = host
        self.port = port
        self.models = tuple(models)
        self.embedding_dim = embedding_dim
        self.cost = cost if cost is not None else CostModel()
        self.faults = faults if faults is not None else Faults()
        self.record_requests = record_requests
        self.stats = EngineCounters()
        self._slots = _SlotPool(self)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
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
        handler = functools.partial(self._serve_connection, self._generation)
        self._server = await asyncio.start_server(
            handler, self.host, self.port, backlog=_LISTEN_BACKLOG, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close every connection and wait until they are gone."""
        tasks = list(self._connections)
        server = self._server
        self._close_everything()
        if server is not None:
            await server.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)

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

    async def _close_async(self) -> None:
        self._close_everything()

    def _close_everything(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._generation += 1
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()

    async def _serve_connection(
        self, generation: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if generation != self._generation or task is None:
            writer.transport.abort()  # accepted just before a kill()
            return
        self._connections[task] = writer
        self.stats.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await self._receive_request(conn, reader)
                if received is None:
                    break
                request, body = received
                reply = await self._dispatch(request, body, reader, writer)
                if reply is _CLOSE or not isinstance(reply, _Reply):
                    break
                self.stats.by_status[reply.status] = self.stats.by_status.get(reply.status, 0) + 1
                await self._send(conn, writer, reply)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (asyncio.CancelledError, ConnectionError, OSError, h11.ProtocolError):
            pass  # killed, stopped, or a client that went away or spoke garbage
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _receive_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        """The next request and its body, or None when the client closed between requests."""
        request: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_CHUNK))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("request body too large")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, b"".join(chunks)
            else:
                return None

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: _Reply
    ) -> None:
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(reply.body))),
            *reply.headers,
        ]
        reason = http.HTTPStatus(reply.status).phrase.encode()
        data = conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
        data = (data or b"") + (conn.send(h11.Data(data=reply.body)) or b"")
        writer.write(data + (conn.send(h11.EndOfMessage()) or b""))
        await writer.drain()

    async def _dispatch(
        self,
        request: h11.Request,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> _Reply | object:
        path = request.target.decode("latin-1").split("?", 1)[0]
        method = request.method.decode("latin-1")
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        if path in INFERENCE_PATHS:
            if method != "POST":
                return _error(405, f"{path} takes POST", "method_not_allowed")
            return await self._inference(path, body, reader, writer)
        if method != "GET":
            return _error(405, f"{path} takes GET", "method_not_allowed")
        if path == "/health":
            return _Reply(200, b'{"status":"ok"}')
        if path == "/v1/models":
            models = [
                {"id": m, "object": "model", "created": 0, "owned_by": "agentos-testing"}
                for m in self.models
            ]
            return _Reply(200, json.dumps({"object": "list", "data": models}).encode())
        return _error(404, f"no route for {method} {path}", "not_found")

    async def _inference(
        self, path: str, raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Reply | object:
        stats = self.stats
        stats.requests += 1
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not valid JSON", "invalid_json")
        if self.record_requests:
            stats.recorded.append((path, body))
        try:
            parsed = parse_request(
                path, body, models=self.models, max_batch=max(1, self.cost.max_batch)
            )
        except InvalidRequest as refused:
            return _error(refused.status, refused.message, refused.code)
        stats.prompts += parsed.n_prompts
        stats.max_prompts_per_request = max(stats.max_prompts_per_request, parsed.n_prompts)

        faults = self.faults
        fault = self._choose_fault()
        if fault == "broken_json" and path == EMBEDDINGS_PATH:
            fault = None  # embeddings have no content to garble
        if fault is not None:
            stats.errors_injected[fault] = stats.errors_injected.get(fault, 0) + 1
        if fault in ("fail_first", "error", "hang", "drop") and faults.delay_ms > 0:
            await asyncio.sleep(faults.delay_ms / 1000)
        if fault in ("fail_first", "error"):
            return self._injected_error(faults)
        if fault == "hang":
            while await reader.read(_READ_CHUNK):
                pass  # answer never; return once the client gives up and closes
            return _CLOSE
        if fault == "drop":
            writer.close()
            return _CLOSE

        loop = asyncio.get_running_loop()
        cost = self.cost
        hold_ms = cost.per_request_ms + cost.per_prompt_ms * parsed.n_prompts + faults.delay_ms
        deadline = await self._slots.acquire() + hold_ms / 1000
        try:
            answer = build_response(
                parsed, embedding_dim=self.embedding_dim, broken_json=fault == "broken_json"
            )
            data = json.dumps(answer).encode()
            if fault == "malformed":
                data = data[: len(data) // 2]  # a proper prefix of a JSON object never parses
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
        finally:
            self._slots.release(min(deadline, loop.time()))
        return _Reply(200, data)

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

    def _injected_error(self, faults: Faults) -> _Reply:
        status = faults.error_status
        headers = []
        if status in (429, 503) and faults.retry_after is not None:
            headers.append(("retry-after", _format_seconds(faults.retry_after)))
        kind = "rate_limit_error" if status == 429 else "server_error"
        message = f"injected fault: HTTP {status}"
        return _Reply(status, error_body(message, code="injected_fault", kind=kind), headers)


def _error(status: int, message: str, code: str) -> _Reply:
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    return _Reply(status, error_body(message, code=code, kind=kind))


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


async def _serve_until_signalled(engine: LoopbackEngine) -> int:
    try:
        await engine.start()
    except OSError as exc:
        print(f"cannot listen on {engine.host}:{engine.port}: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {engine.url}", flush=True)
    stop = asyncio.Event()
    async with _signals_stop(stop):
        await stop.wait()
    await engine.stop()
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine until SIGINT or SIGTERM; exit status 0 on a clean stop."""
    args = build_parser().parse_args(argv)
    engine = LoopbackEngine(
        host=args.host,
        port=args.port,
        models=args.models or ("test-model",),
        embedding_dim=args.embedding_dim,
        cost=CostModel(**{name: getattr(args, name) for name in _COST_HELP}),
        faults=Faults(**{name: getattr(args, name) for name in _FAULT_HELP}),
        record_requests=False,
    )
    return asyncio.run(_serve_until_signalled(engine))


if __name__ == "__main__":
    sys.exit(main())
