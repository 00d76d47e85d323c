"""Reads answered by the driver itself, for a driver that is not a node of its cluster.

With Ray Client (``ray.init("ray://HOST:PORT")``, ``agentos run --cluster ray://…``) the
driver runs on the user's machine and every actor on the cluster, so no node has the
driver's database file and the :class:`~agentos.cluster.reads.StoreReader` actor has
nothing to read. Then the requests travel to the driver instead:

- a run's :class:`~agentos.cluster.reads.RemoteDatabase` (and ``RemoteVectorStore``)
  calls a :class:`ReadRelay` actor exactly as it calls a StoreReader: same methods, same
  answers (:class:`~agentos.cluster.reads.Rows`, vector hits), same errors;
- the relay, an async actor next to the record queue, keeps each request and lets its
  call wait;
- the driver's :class:`DriverReads` thread long-polls the relay with ``exchange``: one
  call carries the answers to the requests it took last time (each returns the call
  waiting for it) and brings back every request that arrived meanwhile, however many.
  So the driver makes one round trip per batch of reads, in both directions. It answers
  a batch from read-only connections to its own file (a plain
  :class:`~agentos.cluster.reads.StoreReader`, not an actor), on a few threads when the
  batch holds more than one request.

Invariants, as for the StoreReader:

- **Reads see what the driver has committed.** A run flushes before reading what it just
  wrote (``task.py``, ``todo.py``, ``tools/cache.py``); the flush returns only once the
  driver committed its ops, and the driver answers the read afterwards from a fresh read
  transaction of the WAL file. So read-your-writes holds as on one machine.
- **Read-only.** The driver's read connections are ``mode=ro`` + ``query_only``.
- **No silent hang.** When the driver stops answering (``DriverReads.stop``, its thread
  failing) it closes the relay: every waiting and later read raises a StoreError saying
  why; a relay that is gone (the driver's Ray connection lost) is a StoreError too.

Which path a drain takes (:class:`~agentos.cluster.records.RecordDrain`, ``reads=``):
the driver answers when it is a Ray client (:func:`client_mode`: the driver is never a
node then, even when the file happens to be reachable from the head, as on a test
machine), when the StoreReader on "the driver's node" sees another file, or when asked
(``reads="driver"``, for tests on a local cluster). Otherwise the StoreReader answers:
it is faster (one actor call, no hop to the driver; figures in docs/cluster.md §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from agentos.cluster.reads import READ_THREADS, Rows, StoreReader
from agentos.errors import AgentosError, StoreError
from agentos.memory.types import VectorHit, VectorSpace

POLL_S = 0.2
"""How long one ``exchange`` waits for a request before the driver's thread asks again (and
looks whether it was told to stop)."""


def client_mode() -> bool:
    """Whether this process is connected to its cluster through Ray Client (``ray://``):
    then it is no node of the cluster, and no node holds its files."""
    from ray.util.client import ray as client

    return bool(client.is_connected())


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read waiting in the relay: which StoreReader method, with what."""

    number: int
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ReadAnswer:
    """The driver's answer to request ``number``: its value, or the error to raise."""

    number: int
    value: Any = None
    error: AgentosError | None = None


ANSWERED = frozenset({"execute", "vector_spaces", "vector_query"})
"""The StoreReader methods a relayed request may name."""


class ReadRelay:
    """Read requests of runs on their way to the driver, and the driver's answers back.

    An async actor: each read call waits (without holding up the others) until the driver
    answers it; ``exchange`` (the driver) waits for requests without holding up reads. Its
    read methods are the StoreReader's, so a ``RemoteDatabase`` cannot tell them apart.
    """

    def __init__(self) -> None:
        self._requests: list[ReadRequest] = []
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next = 1
        self._arrived = asyncio.Event()
        self._closed: str | None = None
        self.counters = {"reads": 0, "batches": 0, "largest_batch": 0}

    async def _relay(self, method: str, *args: Any) -> Any:
        if self._closed is not None:
            raise StoreError(self._closed)
        number = self._next
        self._next += 1
        self.counters["reads"] += 1
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        self._requests.append(ReadRequest(number, method, args))
        self._arrived.set()
        try:
            return await answer
        finally:
            self._waiting.pop(number, None)

    async def execute(self, sql: str, params: Any = ()) -> Rows:
        rows: Rows = await self._relay("execute", sql, params)
        return rows

    async def vector_spaces(self, model: str | None = None) -> list[VectorSpace]:
        spaces: list[VectorSpace] = await self._relay("vector_spaces", model)
        return spaces

    async def vector_query(
        self, model: str, vector: list[float], limit: int, agent: str | None
    ) -> list[VectorHit]:
        hits: list[VectorHit] = await self._relay("vector_query", model, vector, limit, agent)
        return hits

    async def exchange(self, answers: list[ReadAnswer], timeout_s: float) -> list[ReadRequest]:
        """Deliver ``answers`` (each returns, or raises in, the read waiting for it), then
        every request that arrived, waiting up to ``timeout_s`` for one."""
        self._deliver(answers)
        if not self._requests and self._closed is None:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            except TimeoutError:
                return []
        requests, self._requests = self._requests, []
        self.counters["batches"] += 1 if requests else 0
        self.counters["largest_batch"] = max(self.counters["largest_batch"], len(requests))
        return requests

    def _deliver(self, answers: list[ReadAnswer]) -> None:
        for one in answers:
            waiting = self._waiting.get(one.number)
            if waiting is None or waiting.done():
                continue  # its caller is gone (cancelled)
            if one.error is not None:
                waiting.set_exception(one.error)
            else:
                waiting.set_result(one.value)

    def close(self, message: str) -> None:
        """The driver answers no more: every waiting and later read raises StoreError."""
        if self._closed is None:
            self._closed = message
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(StoreError(message))
        self._requests = []
        self._arrived.set()

    def stats(self) -> dict[str, Any]:
        """Reads asked, batches taken by the driver and the largest one, reads waiting."""
        return {**self.counters, "waiting": len(self._waiting), "closed": self._closed}


ReadRelayActor: Any = ray.remote(num_cpus=0)(ReadRelay)
"""``ReadRelay`` as an async Ray actor class; the drain starts one next to its queue."""


class DriverReads:
    """The driver's side of the relay: long-polls it and answers from the driver's file.

    One thread exchanges answers for requests; a batch of several requests is answered on
    :data:`~agentos.cluster.reads.READ_THREADS` threads (a vector search does not hold up
    a state read), each through its own read-only connection, a single one in the thread
    itself. ``start()`` / ``stop()``; :attr:`failure` says why it stopped on its own.
    """

    def __init__(self, db_path: str | Path, relay: Any, *, threads: int = READ_THREADS) -> None:
        self.path = Path(db_path)
        self.relay = relay
        self.reader = StoreReader(self.path)
        self.answered = 0
        self.failure: str | None = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="driver-reads")
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="driver-reads", daemon=True)

    def start(self) -> DriverReads:
        self._thread.start()
        return self

    def _loop(self) -> None:
        answers: list[ReadAnswer] = []
        try:
            while not self._stop.is_set():
                requests = ray.get(self.relay.exchange.remote(answers, POLL_S))
                if len(requests) == 1:
                    answers = [self._answer(requests[0])]
                else:
                    answers = list(self._pool.map(self._answer, requests))
            ray.get(self.relay.exchange.remote(answers, 0.0))  # the last answers
        except BaseException as exc:
            if self._stop.is_set():
                return
            self.failure = (
                f"the driver stopped answering reads of {self.path} from other nodes: "
                f"{type(exc).__name__}: {exc}"
            )
            self.relay.close.remote(self.failure)  # not awaited: the relay may be gone

    def _answer(self, request: ReadRequest) -> ReadAnswer:
        try:
            if request.method not in ANSWERED:
                raise StoreError(f"the driver answers no read '{request.method}'")
            answer = ReadAnswer(request.number, getattr(self.reader, request.method)(*request.args))
        except AgentosError as exc:
            answer = ReadAnswer(request.number, error=exc)
        except Exception as exc:  # a reader bug must not leave the run waiting forever
            answer = ReadAnswer(
                request.number,
                error=StoreError(
                    f"the driver could not answer a read of {self.path}: "
                    f"{type(exc).__name__}: {exc}"
                ),
            )
        with self._count:
            self.answered += 1
        return answer

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop answering: the reads still waiting, and any later one, raise StoreError."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=True)
        if not self._thread.is_alive():
            self.reader.close()
        message = f"reads of {self.path}: the driver has stopped answering (its run ended)"
        with contextlib.suppress(ray.exceptions.RayError):  # a relay gone has no one waiting
            ray.get(self.relay.close.remote(message), timeout=timeout_s)
