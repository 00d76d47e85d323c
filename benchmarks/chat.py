"""The chat benchmark: agents' chat jobs through every client, against the engine's ceiling.

    python benchmarks/chat.py [--rounds 3] [--jobs 5000] [--peer-jobs 2000]
                              [--run-jobs 10000] [--run-100k] [--run-chat]
                              [--skip-peers] [--skip-run] [--quick] [--engine-workers 1]
    python benchmarks/chat.py --setup       # only make the peers' venv

Every job is what a prompt agent sends (``agents/prompt.py``): a chat request of a system
and a user message, temperature 0.7, ``max_tokens`` 16, attempt k asking for sample k
(sent as ``seed``). A loopback test engine (``python -m agentos.testing.engine``, a child
process) plays a GPU server: 64 slots, each request holding one for 20 ms + 0.2 ms per
prompt, at most 64 prompts per ``/v1/completions`` request, its chat template (ChatML) at
``GET /props`` like llama-server. One request per job can therefore do at best
64 / 20.2 ms = 3,168 jobs/s; prompt lists can do more (64 requests of 64 prompts at once).

Clients, each with at most 64 requests in flight and every job submitted at the start
(a job's latency is submit → answer, so it includes its wait in the client's queue):

- **ceiling**: the leanest client this file can hold, raw asyncio protocol code speaking
  HTTP/1.1 on 64 keep-alive connections, one chat request per job. What this machine can
  do against this engine with one request per job, since the engine (Python too) shares
  the two cores with the client.
- **router-chat**: agentos's ``Router`` in this process, the engine's handle with prompt
  batching off: chat requests, 64 in flight.
- **router-batch**: the same with prompt batching on, ``max_batch_size`` 64 and the chat
  template from ``/props``: the router may render chat jobs into completions prompts and
  batch them (where this router version does that).
- **agentos-run**: the whole runtime, ``agentos run agents.yaml --once`` as a
  subprocess: one single-shot prompt agent of length N (``--run-jobs``) and concurrency
  256 (four batches' worth of attempts in flight) against the engine configured as an
  ``openai`` engine with ``max_requests`` 64 (everything else default:
  recording, cache and background embeddings on). Jobs/s is successes over the run's own
  wall time (``runs`` table, started → finished, so interpreter start-up is left out);
  CPU per job is the whole process's (start-up included), peak RSS its ``ru_maxrss``.
  With 256 attempts in flight and the engine taking prompt lists, the runtime batches
  them, four requests of 64 prompts at a time (at best 256 prompts per 32.8 ms, 7,800
  jobs/s: the runtime is the limit, which is what this row measures; with only 64
  attempts in flight one batch at a time could do at best 1,951). ``--run-chat`` adds
  **agentos-run-chat**, the same with ``batch_chat: false`` (64 chat requests in
  flight). ``--run-100k`` adds one run of 100,000 jobs after the rounds: its peak RSS
  against the median of the N-job runs, and its jobs/s ("flat": ≥ 0.9 of theirs).
- **httpx**: ``httpx.AsyncClient`` and an ``asyncio.Semaphore(64)``, in a subprocess.
- **openai**: the ``openai`` SDK's ``AsyncOpenAI`` and a semaphore of 64, in a subprocess
  of the peers' venv.
- **litellm**: LiteLLM's ``Router`` with one OpenAI-compatible deployment (its
  ``acompletion``), in a subprocess of the peers' venv.

The peers' venv (``benchmarks/.venv-peers``, with ``litellm`` and ``openai``; neither is
a dependency of agentos) is made by ``--setup``, or on first use. Clients in a subprocess
measure themselves after a warm-up (their import time is not counted) and print their
figures as JSON. CPU per job is the client process's CPU time (user + system) over the
measured jobs; the engine's CPU per job is shown too, so that one can see it is not the
limit.

Rounds are interleaved: every round runs every client once, in the listed order on odd
rounds and in reverse on even ones, so that drift favours nobody. Tables go to stderr;
the last line of stdout is one JSON object with min/median/max of every figure, the
ratios of medians, and the targets of issue 10 as met/not met (never asserted).
Everything runs on 127.0.0.1 and every part has a time limit.

This file is also the subprocess clients' program (``--peer NAME``): that mode imports
nothing of agentos, so that it runs in the peers' venv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODEL = "test-model"
PER_REQUEST_MS = 20.0
PER_PROMPT_MS = 0.2
SLOTS = 64
MAX_BATCH = 64
CONCURRENCY = 64
RUN_CONCURRENCY = 256
"""Attempts the ``agentos run`` agent keeps in flight (its ``life_cycle.concurrency``)."""
SYSTEM = "You answer with one word."
PARAMS: dict[str, Any] = {"temperature": 0.7, "max_tokens": 16}

PEERS_VENV = Path(__file__).resolve().parent / ".venv-peers"
PEER_PACKAGES = ("litellm", "openai")
IN_PROCESS = ("ceiling", "router-chat", "router-batch")
PEERS = ("httpx", "openai", "litellm")
CLIENTS = (*IN_PROCESS, "agentos-run", "agentos-run-chat", *PEERS)
"""Every client, in the order of odd rounds (even rounds run them in reverse)."""

TARGET_ROUTER_TO_CEILING = 0.7
TARGET_ROUTER_TO_BEST_OTHER = 2.0
TARGET_RUN_JOBS_PER_S = 1500.0
TARGET_RUN_CPU_MS_PER_JOB = 0.7
TARGET_RUN_RSS_GROWTH = 0.10
TARGET_RUN_FLAT = 0.9
"""``agentos run`` is "flat" at 100,000 jobs when its jobs/s is ≥ this share of N=10,000."""
RUN_TARGET_N = 10_000


# -- what one client did in one round -----------------------------------------------------


@dataclass
class Sample:
    """One client's measured jobs in one round."""

    client: str
    round: int
    jobs: int
    failed: int
    elapsed_s: float
    cpu_s: float
    latencies_s: list[float] = field(default_factory=list, repr=False)
    requests: int | None = None
    """Requests the jobs took, where the client can tell (jobs per request shows batching)."""
    engine_cpu_s: float | None = None
    rss_mb: float | None = None
    process_s: float | None = None
    embedded: int | None = None
    """Answers the background embedder embedded before ``agentos run`` exited."""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu_s / self.jobs * 1000 if self.jobs else math.nan

    @property
    def engine_cpu_ms_per_job(self) -> float | None:
        if self.engine_cpu_s is None or not self.jobs:
            return None
        return self.engine_cpu_s / self.jobs * 1000

    @property
    def jobs_per_request(self) -> float | None:
        return self.jobs / self.requests if self.requests else None

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000

    def figures(self) -> dict[str, float | None]:
        return {
            "jobs_per_s": self.jobs_per_s,
            "cpu_ms_per_job": self.cpu_ms_per_job,
            "p50_ms": self.p(0.5),
            "p99_ms": self.p(0.99),
            "engine_cpu_ms_per_job": self.engine_cpu_ms_per_job,
            "jobs_per_request": self.jobs_per_request,
            "peak_rss_mb": self.rss_mb,
            "process_s": self.process_s,
            "embedded_per_job": self.embedded / self.jobs if self.embedded is not None else None,
        }


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]): a value that was actually observed."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def messages(tag: str, i: int) -> list[dict[str, str]]:
    """Job ``i``'s conversation: a prompt agent's system message and prompt."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{tag} question {i}: reply with one word."},
    ]


def chat_body(tag: str, i: int) -> dict[str, Any]:
    """The chat request a client sends for job ``i`` (sample i, sent as the seed)."""
    return {"model": MODEL, "messages": messages(tag, i), **PARAMS, "seed": i}


async def gated(
    n: int, call: Callable[[int], Awaitable[object]], concurrency: int = CONCURRENCY
) -> tuple[float, float, list[float], int]:
    """Submit ``n`` jobs at once, at most ``concurrency`` in ``call`` at a time; returns
    wall time, CPU time of this process, each job's submit → answer latency, failures."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            try:
                await call(i)
            except Exception as exc:
                failed += 1
                if failed == 1:
                    print(f"  first failed job: {type(exc).__name__}: {exc}", file=sys.stderr)
                return
        latencies.append(time.perf_counter() - started)

    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started, time.process_time() - cpu, latencies, failed


# -- the ceiling: raw asyncio, HTTP/1.1 keep-alive -------------------------------------------


class _LeanConnection(asyncio.Protocol):
    """One keep-alive connection that sends one request and reads one answer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("an answer without content-length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end > 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the engine closed the connection"))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def run_ceiling(url: str, n: int, tag: str) -> Sample:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    connections: list[_LeanConnection] = []
    for _ in range(CONCURRENCY):
        _transport, protocol = await loop.create_connection(_LeanConnection, host, port)
        connections.append(protocol)
    prefix = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()

    async def ask(connection: _LeanConnection, i: int) -> str:
        body = json.dumps(chat_body(tag, i)).encode()
        status, answer = await connection.post(b"%s%d\r\n\r\n%s" % (prefix, len(body), body))
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
        return str(json.loads(answer)["choices"][0]["message"]["content"])

    idle = list(connections)

    async def call(i: int) -> None:
        connection = idle.pop()  # the gate lets at most one job per connection in
        try:
            await ask(connection, i)
        finally:
            idle.append(connection)

    await gated(CONCURRENCY, lambda i: call(-1 - i))  # warm-up
    try:
        elapsed, cpu, latencies, failed = await gated(n, call)
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
    return Sample("ceiling", 0, len(latencies), failed, elapsed, cpu, latencies, requests=n)


# -- agentos's router, in this process ------------------------------------------------------


async def run_router(url: str, n: int, tag: str, *, batching: bool) -> Sample:
    import dataclasses

    from agentos.router.client import EngineClient
    from agentos.router.jobs import InferenceRequest
    from agentos.router.router import EngineHandle, Router

    client = EngineClient("loopback", url, timeout=120, max_connections=CONCURRENCY + 2)
    try:
        info = await client.detect([MODEL])
        names = {f.name for f in dataclasses.fields(EngineHandle) if f.init}
        knobs: dict[str, Any] = {"max_requests": CONCURRENCY, "max_batch_size": MAX_BATCH}
        if "prompt_batching" in names:
            knobs["prompt_batching"] = batching and info.prompt_batching
        handle = EngineHandle(name="loopback", client=client, info=info, **knobs)
        if batching and hasattr(handle, "chat_template"):
            from agentos.router.chat_template import from_props

            props = await client.props()
            handle.chat_template = from_props(props, "loopback /props") if props else None

        def request(label: str, i: int) -> InferenceRequest:
            return InferenceRequest(
                kind="chat", model=MODEL, messages=messages(label, i), params=dict(PARAMS), sample=i
            )

        async with Router([handle], recorder=None) as router:
            await gated(CONCURRENCY, lambda i: router.submit(request("warm-up", i)), n)
            before = router.snapshot()["requests"]
            elapsed, cpu, latencies, failed = await gated(
                n, lambda i: router.submit(request(tag, i)), n
            )
            requests = router.snapshot()["requests"] - before
    finally:
        await client.aclose()
    name = "router-batch" if batching else "router-chat"
    return Sample(name, 0, len(latencies), failed, elapsed, cpu, latencies, requests=requests)


# -- the whole runtime: agentos run, a subprocess ---------------------------------------------

AGENTS_YAML = """\
agents:
  - name: chat-bench
    system: {system}
    prompt: 'Reply with one word.'
    temperature: {temperature}
    max_tokens: {max_tokens}
    life_cycle: {{type: single-shot, length: {jobs}, concurrency: {concurrency}}}
"""
CONFIG_YAML = """\
engines:
  - name: loopback
    type: openai
    base_url: {url}
    models: [{model}]
    max_requests: {concurrency}
    max_batch_size: {max_batch}
    batch_chat: {batch_chat}
"""


def run_agentos(url: str, n: int, folder: Path, tag: str, *, batch_chat: bool = True) -> Sample:
    """One ``agentos run --once`` of N jobs on a fresh database; its CPU time and peak RSS
    come from ``os.wait4`` on it. ``batch_chat`` False sends the agent's chat jobs as chat
    requests (config ``batch_chat: false``) instead of batched completions prompts."""
    work = folder / tag
    work.mkdir(parents=True)
    agents, config, db = work / "agents.yaml", work / "config.yaml", work / "run.db"
    agents.write_text(
        AGENTS_YAML.format(
            system=json.dumps(SYSTEM),
            jobs=n,
            concurrency=RUN_CONCURRENCY,
            temperature=PARAMS["temperature"],
            max_tokens=PARAMS["max_tokens"],
        )
    )
    config.write_text(
        CONFIG_YAML.format(
            url=url,
            model=MODEL,
            concurrency=CONCURRENCY,
            max_batch=MAX_BATCH,
            batch_chat=str(batch_chat).lower(),
        )
    )
    command = [sys.executable, "-m", "agentos", "run", str(agents), "--once"]
    command += ["--db", str(db), "--config", str(config), "--plain"]
    env = {**os.environ, "AGENTOS_HOME": str(work / "home")}
    env.pop("AGENTOS_DB", None)
    timeout = 60 + n * 0.02
    status, process_s, usage = run_child(command, env, timeout, work / "run.log")
    if status != 0:
        tail = (work / "run.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"agentos run exited {status}: {' | '.join(tail)}")
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT sum(successes), sum(attempts), min(started_at), max(finished_at) FROM runs"
        ).fetchone()
        requests = conn.execute(
            "SELECT count(DISTINCT coalesce(batch_id, id)) FROM llm_calls "
            "WHERE kind != 'embeddings' AND NOT cache_hit"
        ).fetchone()[0]
        embedded = conn.execute(
            "SELECT count(*) FROM llm_calls WHERE kind = 'embeddings' AND status = 'ok'"
        ).fetchone()[0]
    if row is None or row[0] is None or row[3] is None:
        raise RuntimeError(f"no finished run in {db}")
    successes, attempts, elapsed = int(row[0]), int(row[1]), float(row[3] - row[2])
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(
        "agentos-run" if batch_chat else "agentos-run-chat",
        0,
        successes,
        attempts - successes,
        elapsed,
        cpu,
        requests=int(requests) or None,
        embedded=int(embedded),
        rss_mb=usage.ru_maxrss / 1024,
        process_s=process_s,
    )


def run_child(
    command: list[str], env: dict[str, str], timeout: float, log: Path
) -> tuple[int, float, resource.struct_rusage]:
    """Run a child to its end (killed after ``timeout``); its exit status, wall time and
    own resource usage (``os.wait4``: CPU time, peak RSS)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        process.kill()

    timer = threading.Timer(timeout, kill)
    started = time.perf_counter()
    timer.start()
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():
        raise TimeoutError(f"{command[2:4]} took over {timeout:.0f} s")
    return process.returncode, time.perf_counter() - started, usage


# -- the other clients, each in a subprocess ---------------------------------------------------


def peer_python(kind: str) -> Path:
    if kind == "httpx":
        return Path(sys.executable)  # httpx is a dependency of agentos
    return PEERS_VENV / "bin" / "python"


def run_peer(kind: str, url: str, n: int, tag: str, folder: Path) -> Sample:
    python = peer_python(kind)
    if not python.exists():
        raise RuntimeError(f"no {python}: run `python benchmarks/chat.py --setup` first")
    command = [str(python), str(Path(__file__).resolve()), "--peer", kind, "--url", url]
    command += ["--jobs", str(n), "--tag", tag]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1"}
    log = folder / f"{kind}-{tag}.log"
    status, _wall, _usage = run_child(command, env, 120 + n * 0.1, log)
    lines = log.read_text(errors="replace").strip().splitlines()
    if status != 0 or not lines:
        raise RuntimeError(f"{kind} exited {status}: {' | '.join(lines[-3:])}")
    figures = json.loads(lines[-1])
    return Sample(
        kind,
        0,
        figures["jobs"],
        figures["failed"],
        figures["elapsed_s"],
        figures["cpu_s"],
        figures["latencies_s"],
        requests=figures["jobs"] + figures["failed"],
    )


async def peer_main(kind: str, url: str, n: int, tag: str) -> dict[str, Any]:
    """The subprocess side: build the client, warm up, measure, return the figures."""
    ask: Callable[[int, str], Awaitable[str]]
    closers: list[Callable[[], Awaitable[object]]] = []
    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        http = httpx.AsyncClient(base_url=url, limits=limits, timeout=120)
        closers.append(http.aclose)

        async def ask_httpx(i: int, label: str) -> str:
            answer = await http.post("/v1/chat/completions", json=chat_body(label, i))
            answer.raise_for_status()
            return str(answer.json()["choices"][0]["message"]["content"])

        ask = ask_httpx
    elif kind == "openai":
        from openai import AsyncOpenAI

        sdk = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        closers.append(sdk.close)

        async def ask_openai(i: int, label: str) -> str:
            answer = await sdk.chat.completions.create(
                model=MODEL,
                messages=messages(label, i),  # type: ignore[arg-type]
                temperature=PARAMS["temperature"],
                max_tokens=PARAMS["max_tokens"],
                seed=i,
            )
            return str(answer.choices[0].message.content)

        ask = ask_openai
    elif kind == "litellm":
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        deployment = {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": url + "/v1",
                "api_key": "unused",
            },
        }
        lite = litellm.Router(model_list=[deployment], num_retries=0, timeout=120)

        async def ask_litellm(i: int, label: str) -> str:
            answer = await lite.acompletion(
                model=MODEL,
                messages=messages(label, i),
                temperature=PARAMS["temperature"],
                max_tokens=PARAMS["max_tokens"],
                seed=i,
            )
            return str(answer.choices[0].message.content)

        ask = ask_litellm
    else:
        raise SystemExit(f"unknown peer {kind!r}")
    await gated(CONCURRENCY, lambda i: ask(i, "warm-up"))
    elapsed, cpu, latencies, failed = await gated(n, lambda i: ask(i, tag))
    for close in closers:
        await close()
    return {
        "jobs": len(latencies),
        "failed": failed,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "latencies_s": latencies,
    }


def setup_peers(timeout: float = 900) -> None:
    """Make the peers' venv: ``python -m venv`` and ``pip install litellm openai``."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"setup: creating {PEERS_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=120)
    print(f"setup: pip install {' '.join(PEER_PACKAGES)} (into the peers' venv)", file=sys.stderr)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
        check=True,
        timeout=timeout,
    )


def peers_ready() -> bool:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        return False
    check = "import litellm, openai"
    result = subprocess.run([str(python), "-c", check], capture_output=True, timeout=120)
    return result.returncode == 0


# -- the engine ------------------------------------------------------------------------------


@contextlib.contextmanager
def loopback_engine(workers: int) -> Iterator[tuple[str, int]]:
    """The loopback engine in a child process; yields its URL and pid."""
    command = [sys.executable, "-m", "agentos.testing.engine", "--port", "0"]
    command += ["--per-request-ms", str(PER_REQUEST_MS), "--per-prompt-ms", str(PER_PROMPT_MS)]
    command += ["--slots", str(SLOTS), "--max-batch", str(MAX_BATCH), "--model", MODEL]
    command += ["--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the loopback engine did not start: {line!r}")
        yield line.removeprefix("listening on "), process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) of ``pid`` and its worker children, from ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if one == pid:
                return None
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    big_run: Sample | None = None
    errors: list[str] = field(default_factory=list)

    def of(self, client: str) -> list[Sample]:
        return [s for s in self.samples if s.client == client]

    def median(self, client: str, figure: str = "jobs_per_s") -> float | None:
        values = [v for s in self.of(client) if (v := s.figures()[figure]) is not None]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else None


async def measure(
    client: str, url: str, args: argparse.Namespace, tag: str, folder: Path
) -> Sample:
    if client == "ceiling":
        async with asyncio.timeout(60 + args.jobs * 0.05):
            return await run_ceiling(url, args.jobs, tag)
    if client in ("router-chat", "router-batch"):
        async with asyncio.timeout(60 + args.jobs * 0.05):
            return await run_router(url, args.jobs, tag, batching=client == "router-batch")
    if client in ("agentos-run", "agentos-run-chat"):
        batch_chat = client == "agentos-run"
        return await asyncio.to_thread(
            functools.partial(run_agentos, batch_chat=batch_chat), url, args.run_jobs, folder, tag
        )
    return await asyncio.to_thread(run_peer, client, url, args.peer_jobs, tag, folder)


async def run(args: argparse.Namespace, results: Results) -> None:
    clients = [c for c in CLIENTS if not (args.skip_peers and c in ("openai", "litellm"))]
    if args.skip_run:
        clients.remove("agentos-run")
    if args.skip_run or not args.run_chat:
        clients.remove("agentos-run-chat")
    with (
        tempfile.TemporaryDirectory(prefix="agentos-chat-bench-") as tmp,
        loopback_engine(args.engine_workers) as (url, engine_pid),
    ):
        folder = Path(tmp)
        for round_ in range(1, args.rounds + 1):
            order = clients if round_ % 2 else clients[::-1]
            for client in order:
                print(f"round {round_}: {client} ...", file=sys.stderr, flush=True)
                engine_before = process_cpu_s(engine_pid)
                try:
                    sample = await measure(client, url, args, f"r{round_}-{client}", folder)
                except TimeoutError:
                    results.errors.append(f"round {round_} {client}: time limit reached")
                    continue
                except Exception as exc:
                    results.errors.append(f"round {round_} {client}: {type(exc).__name__}: {exc}")
                    continue
                engine_after = process_cpu_s(engine_pid)
                if engine_before is not None and engine_after is not None:
                    sample.engine_cpu_s = engine_after - engine_before
                sample.round = round_
                results.samples.append(sample)
                print("  " + row_of(sample), file=sys.stderr, flush=True)
        if args.run_100k:
            print(f"agentos-run with {args.big_run_jobs} jobs ...", file=sys.stderr, flush=True)
            engine_before = process_cpu_s(engine_pid)
            try:
                results.big_run = big = await asyncio.to_thread(
                    run_agentos, url, args.big_run_jobs, folder, "big-run"
                )
            except Exception as exc:
                results.errors.append(f"agentos-run {args.big_run_jobs}: {exc}")
            else:
                engine_after = process_cpu_s(engine_pid)
                if engine_before is not None and engine_after is not None:
                    big.engine_cpu_s = engine_after - engine_before


# -- reporting -------------------------------------------------------------------------------

COLUMNS = ("jobs", "jobs/s", "cpu ms/job", "p50 ms", "p99 ms", "eng ms/job", "jobs/req", "RSS MB")


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def row_of(s: Sample, name: str | None = None) -> str:
    cells = [
        str(s.jobs),
        _cell(s.jobs_per_s),
        _cell(s.cpu_ms_per_job, 3),
        _cell(s.p(0.5)),
        _cell(s.p(0.99)),
        _cell(s.engine_cpu_ms_per_job, 3),
        _cell(s.jobs_per_request, 2),
        _cell(s.rss_mb),
    ]
    return f"{name or s.client:<16}" + "".join(f"{c:>12}" for c in cells)


def spread(values: list[float]) -> dict[str, float] | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return None
    return {"min": min(clean), "median": statistics.median(clean), "max": max(clean)}


def summary(results: Results, args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    clients: dict[str, Any] = {}
    for client in CLIENTS:
        samples = results.of(client)
        if not samples:
            continue
        figures: dict[str, Any] = {
            "jobs": samples[0].jobs + samples[0].failed,
            "rounds": len(samples),
            "failed": sum(s.failed for s in samples),
        }
        for name in samples[0].figures():
            values = [s.figures()[name] for s in samples]
            figures[name] = spread([v for v in values if v is not None])
        clients[client] = figures

    def med(client: str) -> float | None:
        return results.median(client)

    ceiling = med("ceiling")
    routers = {c: med(c) for c in ("router-chat", "router-batch") if med(c) is not None}
    router_name = max(routers, key=lambda c: routers[c] or 0.0) if routers else None
    router = routers.get(router_name) if router_name else None
    others = {c: med(c) for c in PEERS if med(c) is not None}
    best_other_name = max(others, key=lambda c: others[c] or 0.0) if others else None
    best_other = others.get(best_other_name) if best_other_name else None
    run_rate = med("agentos-run")
    run_cpu = results.median("agentos-run", "cpu_ms_per_job")
    run_rss = results.median("agentos-run", "peak_rss_mb")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    best_one_per_job = SLOTS / ((PER_REQUEST_MS + PER_PROMPT_MS) / 1000)
    best_batched = SLOTS * MAX_BATCH / ((PER_REQUEST_MS + PER_PROMPT_MS * MAX_BATCH) / 1000)
    ratios = {
        "ceiling_to_best_one_request_per_job": ratio(ceiling, best_one_per_job),
        "router_chat_to_ceiling": ratio(med("router-chat"), ceiling),
        "router_batch_to_ceiling": ratio(med("router-batch"), ceiling),
        "router_to_ceiling": ratio(router, ceiling),
        "router_to_best_other": ratio(router, best_other),
        "run_to_ceiling": ratio(run_rate, ceiling),
        "run_to_router": ratio(run_rate, router),
        **{f"router_to_{c}": ratio(router, v) for c, v in others.items()},
        **{f"{c}_to_ceiling": ratio(v, ceiling) for c, v in others.items()},
    }
    big = results.big_run
    rss_ratio = ratio(big.rss_mb, run_rss) if big else None
    rss_growth = rss_ratio - 1 if rss_ratio is not None else None
    flat = ratio(big.jobs_per_s, run_rate) if big else None

    def target(value: float | None, goal: float, at_least: bool, **extra: Any) -> dict[str, Any]:
        met = None if value is None else (value >= goal if at_least else value < goal)
        return {"value": value, "target": goal, "at_least": at_least, "met": met, **extra}

    targets = {
        "router_to_ceiling": target(
            ratio(router, ceiling), TARGET_ROUTER_TO_CEILING, True, router=router_name
        ),
        "router_to_best_other": target(
            ratio(router, best_other),
            TARGET_ROUTER_TO_BEST_OTHER,
            True,
            router=router_name,
            best_other=best_other_name,
        ),
        "run_jobs_per_s": target(run_rate, TARGET_RUN_JOBS_PER_S, True, n=args.run_jobs),
        "run_cpu_ms_per_job": target(
            run_cpu, TARGET_RUN_CPU_MS_PER_JOB + 1e-12, False, n=args.run_jobs
        ),
        "run_rss_growth": target(
            rss_growth, TARGET_RUN_RSS_GROWTH, False, n=(args.run_jobs, args.big_run_jobs)
        ),
        "run_flat": target(
            flat,
            TARGET_RUN_FLAT,
            True,
            n=(args.run_jobs, args.big_run_jobs),
            # the embedder works while the run lasts and stops when it exits, so a longer
            # run embeds a larger share of its answers: CPU per job is not like for like
            embedded_per_job=(
                results.median("agentos-run", "embedded_per_job"),
                big.embedded / big.jobs if big and big.embedded is not None else None,
            ),
        ),
    }
    if args.run_jobs != RUN_TARGET_N:
        for name in ("run_jobs_per_s", "run_cpu_ms_per_job"):
            targets[name]["note"] = f"the target is for N={RUN_TARGET_N}"
    return {
        "engine": {
            "per_request_ms": PER_REQUEST_MS,
            "per_prompt_ms": PER_PROMPT_MS,
            "slots": SLOTS,
            "max_batch": MAX_BATCH,
            "workers": args.engine_workers,
        },
        "best_one_request_per_job_jobs_per_s": best_one_per_job,
        "best_batched_jobs_per_s": best_batched,
        "concurrency": CONCURRENCY,
        "rounds": args.rounds,
        "jobs": args.jobs,
        "peer_jobs": args.peer_jobs,
        "run_jobs": args.run_jobs,
        "clients": clients,
        "agentos_run_big": (
            {"jobs": big.jobs, "failed": big.failed, **big.figures()} if big else None
        ),
        "router": router_name,
        "best_other_client": best_other_name,
        "ratios": ratios,
        "targets": targets,
        "errors": results.errors,
        "elapsed_s": elapsed,
    }


def print_tables(results: Results, report: dict[str, Any]) -> None:
    out = sys.stderr
    engine = report["engine"]
    print(
        f"\nChat jobs: loopback engine {engine['per_request_ms']:g} ms/request + "
        f"{engine['per_prompt_ms']:g} ms/prompt, {engine['slots']} slots, batches ≤ "
        f"{engine['max_batch']}; {CONCURRENCY} in flight; best with one request per job "
        f"{report['best_one_request_per_job_jobs_per_s']:.0f} jobs/s",
        file=out,
    )
    print(f"{'medians':<16}" + "".join(f"{c:>12}" for c in COLUMNS), file=out)
    for client in CLIENTS:
        figures = report["clients"].get(client)
        if figures is None:
            continue

        def m(name: str, figures: dict[str, Any] = figures) -> float | None:
            value = figures.get(name)
            return value["median"] if isinstance(value, dict) else None

        cells = [
            str(figures["jobs"]),
            _cell(m("jobs_per_s")),
            _cell(m("cpu_ms_per_job"), 3),
            _cell(m("p50_ms")),
            _cell(m("p99_ms")),
            _cell(m("engine_cpu_ms_per_job"), 3),
            _cell(m("jobs_per_request"), 2),
            _cell(m("peak_rss_mb")),
        ]
        print(f"{client:<16}" + "".join(f"{c:>12}" for c in cells), file=out)
    if results.big_run is not None:
        print(row_of(results.big_run, "agentos-run big"), file=out)
    print("ratios of medians: " + _ratios_line(report["ratios"]), file=out)
    for name, t in report["targets"].items():
        value = t["value"]
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        shown = "-" if value is None else f"{value:.3f}"
        sign = "≥" if t["at_least"] else "<"
        print(f"target {name}: {shown} ({sign} {t['target']:g}): {state}", file=out)
    for error in report["errors"]:
        print(f"error: {error}", file=out)


def _ratios_line(ratios: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in ratios.items() if v is not None)


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (≥ 1)")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs of the ceiling and routers")
    parser.add_argument(
        "--peer-jobs", type=int, default=2000, help="jobs of httpx, openai and litellm"
    )
    parser.add_argument("--run-jobs", type=int, default=RUN_TARGET_N, help="N of agentos run")
    parser.add_argument(
        "--run-100k",
        action="store_true",
        help="also one agentos run of 100,000 jobs after the rounds (RSS growth, flatness)",
    )
    parser.add_argument("--big-run-jobs", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--skip-peers", action="store_true", help="skip openai and litellm")
    parser.add_argument("--skip-run", action="store_true", help="skip agentos run")
    parser.add_argument(
        "--run-chat",
        action="store_true",
        help="also agentos run with batch_chat: false (chat requests, not prompt lists)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small numbers (1,000 jobs, 300 peer jobs, agentos run of 2,000) for a look",
    )
    parser.add_argument(
        "--engine-workers", type=int, default=1, help="engine processes (the slots split)"
    )
    parser.add_argument("--setup", action="store_true", help="make the peers' venv and exit")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="jobs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        defaults = {"jobs": 5000, "peer_jobs": 2000, "run_jobs": RUN_TARGET_N}
        for name, quick in (("jobs", 1000), ("peer_jobs", 300), ("run_jobs", 2000)):
            if getattr(args, name) == defaults[name]:
                setattr(args, name, quick)
    for name in ("rounds", "jobs", "peer_jobs", "run_jobs", "big_run_jobs", "engine_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer:
        figures = asyncio.run(peer_main(args.peer, args.url, args.jobs, args.tag))
        print(json.dumps(figures), flush=True)
        return 0
    if args.setup:
        setup_peers()
        return 0
    # SIGTERM unwinds like Ctrl-C, so that the engine child is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    results = Results()
    if not args.skip_peers and not peers_ready():
        try:
            setup_peers()
        except (subprocess.SubprocessError, OSError) as exc:
            results.errors.append(f"setup of the peers' venv failed ({exc}); peers skipped")
            args.skip_peers = True
    asyncio.run(run(args, results))
    report = summary(results, args, time.monotonic() - started)
    print_tables(results, report)
    print(json.dumps(_json_value(report), sort_keys=True), flush=True)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
