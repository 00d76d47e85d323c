"""The serve benchmark: clients through ``agentos serve``, straight to the engine, and
through LiteLLM's proxy, with the same client program.

    python benchmarks/serve.py [--rounds 3] [--clients 8] [--in-flight 16] [--seconds 5]
                               [--latency-requests 1000] [--batch-window-ms MS] [--slots 4]
                               [--skip-litellm] [--quick] [--work-dir DIR]
    python benchmarks/serve.py --setup      # only add litellm[proxy] to the peers' venv

Three targets, each measured with one client program (this file with ``--client``, a
subprocess of agentos's interpreter) whose only difference is the base URL it is given:

- **direct**: client → loopback test engine.
- **serve**: client → ``python -m agentos serve`` (a subprocess) → engine.
- **litellm**: client → LiteLLM's proxy (``litellm --config proxy.yaml``, a subprocess of
  the peers' venv ``benchmarks/.venv-peers``, with ``litellm[proxy]``) → engine.

The client is aiohttp: the leanest real HTTP/1.1 client at hand that speaks to all three
servers as they answer (uvicorn's and the engine's own HTTP, keep-alive, chunked or not),
with one keep-alive connection per request in flight, so that every target pays the same
client cost; the openai SDK (httpx) costs several times more CPU per request, which on two
cores would be taken from the servers. Every job is what an ``llm`` or SDK user sends: a
``POST /v1/completions`` with one string prompt (a different one per job, so that no
response cache answers it), ``max_tokens`` 16, temperature 0.7.

Two engines run as child processes (``python -m agentos.testing.engine``):

- ``latency-model``: a zero-cost engine (64 slots, no cost), for **added latency**: for
  each of serve and litellm, one client process sends one request at a time, alternating
  between that target and direct request by request (so that drift favours neither),
  after a warm-up; p50 and p99 of each, and added p50 = target p50 − direct p50 of the
  same pair. (In pairs, so that each target's figure does not depend on how slow the
  others are: in one rotation over all three, LiteLLM's 15–20 ms requests left serve and
  the engine idle between serve's requests.) The router's batch window adds wait by
  design, so agentos serves this model the way a latency-sensitive user
  would configure it: the engine's ``batch_window_ms: 0`` (nothing waits for a batch to
  fill).
- ``test-model``: a batching-cost engine like a GPU server: 4 slots, each request holding
  one for 20 ms + 0.2 ms per prompt, prompt lists of up to 64 on ``/v1/completions``. One
  request per job can do at best 4 / 20.2 ms = 198 jobs/s; prompt lists up to
  4 × 64 / 32.8 ms = 7,805. For **throughput**, ``--clients`` client processes (default 8)
  each keep ``--in-flight`` requests (default 16) going for ``--seconds``, all starting
  at one instant after every one has warmed up; jobs/s is every answer of every client
  over the time from that instant to the last answer. (Not the answers inside a fixed
  window: LiteLLM's proxy answers 128 concurrent requests in waves seconds apart, so a
  window would count one wave or two.) agentos serves this engine as
  ``max_requests: 4, max_batch_size: 64`` with the router's default batch window, so
  that concurrent clients' completions are batched into prompt lists; LiteLLM and the
  direct clients send one request per job.

Targets (issue 13), reported as met / not met, never asserted: serve's added p50 < 1 ms,
and serve's throughput ≥ 3× direct's. Rounds are interleaved: every round measures the
latencies, then every target's throughput, in the order direct, serve, litellm on odd
rounds and in reverse on even ones. Tables go to stderr; the last line of stdout is one
JSON object with min/median/max of every figure over the rounds, the ratios of medians
and the targets. "srv ms/job" is the server process's CPU time per job (serve or the
proxy, from ``/proc``), "eng ms/job" the engine's, "jobs/req" serve's completion calls
per engine request (from its store). Everything runs on 127.0.0.1, every
part has a time limit, and every child process is stopped on the way out (Ctrl-C and
SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import select
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat import PEERS_VENV, percentile, process_cpu_s, setup_peers, spread

HOST = "127.0.0.1"
MODEL = "test-model"
LATENCY_MODEL = "latency-model"
PER_REQUEST_MS = 20.0
PER_PROMPT_MS = 0.2
SLOTS = 4
MAX_BATCH = 64
PARAMS: dict[str, Any] = {"max_tokens": 16, "temperature": 0.7}

TARGETS = ("direct", "serve", "litellm")
"""In the order of odd rounds (even rounds measure throughput in reverse)."""
TARGET_ADDED_P50_MS = 1.0
TARGET_SERVE_TO_DIRECT = 3.0

PROXY_PACKAGES = ("litellm[proxy]",)
PROXY_IMPORTS = "import litellm, fastapi, uvicorn, backoff, orjson, apscheduler"
START_TIMEOUT_S = {"serve": 60.0, "litellm": 180.0}


# -- the client program (``--client``): imports nothing of agentos -------------------------


def completion_body(model: str, tag: str, client: int, i: int) -> bytes:
    prompt = f"{tag} client {client} job {i}: reply with one word."
    return json.dumps({"model": model, "prompt": prompt, **PARAMS}).encode()


async def complete(session: Any, url: str, body: bytes) -> str:
    """One completion; its text, or an exception that says what went wrong."""
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as answer:
        data = await answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status} from {url}: {data[:200]!r}")
    text = json.loads(data)["choices"][0]["text"]
    if not isinstance(text, str):
        raise RuntimeError(f"{url} answered a completion without text: {data[:200]!r}")
    return text


async def client_latency(urls: list[str], n: int, warmup: int, tag: str) -> dict[str, Any]:
    """One request at a time, rotating over ``urls`` (round k starts at URL k mod len:
    with two, they alternate); every URL has its own session with one keep-alive
    connection."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout)
        for _ in urls
    ]
    endpoints = [url + "/v1/completions" for url in urls]
    latencies: list[list[float]] = [[] for _ in urls]
    failed = [0 for _ in urls]
    errors: list[str] = []
    try:
        for i in range(warmup + n):
            for shift in range(len(urls)):
                k = (i + shift) % len(urls)
                body = completion_body(LATENCY_MODEL, tag, 0, i)
                started = time.perf_counter()
                try:
                    await complete(sessions[k], endpoints[k], body)
                except Exception as exc:
                    failed[k] += 1
                    if failed[k] == 1:
                        errors.append(f"{urls[k]}: {type(exc).__name__}: {exc}")
                    continue
                if i >= warmup:
                    latencies[k].append(time.perf_counter() - started)
    finally:
        for session in sessions:
            await session.close()
    return {"latencies_s": latencies, "failed": failed, "errors": errors}


async def client_throughput(
    url: str, seconds: float, in_flight: int, tag: str, index: int
) -> dict[str, Any]:
    """Warm up ``in_flight`` connections, say ``ready``, wait for ``go <time>`` on stdin,
    then from that instant of ``CLOCK_MONOTONIC`` (which every process shares) keep
    ``in_flight`` requests going for ``seconds``, and wait for the last ones' answers.
    Every answer counts; ``last_s`` is when the last one came."""
    import aiohttp

    endpoint = url + "/v1/completions"
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        await asyncio.gather(
            *(
                complete(session, endpoint, completion_body(MODEL, "warm-up", index, i))
                for i in range(in_flight)
            )
        )
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        word, _, at = line.partition(" ")
        if word != "go":
            raise SystemExit(f"expected 'go <monotonic time>' on stdin, got {line!r}")
        numbers = itertools.count()
        latencies: list[float] = []
        errors: list[str] = []
        last = 0.0
        gc.collect()
        started = float(at)
        sending_until = started + seconds
        await asyncio.sleep(max(0.0, started - time.monotonic()))
        cpu = time.process_time()

        async def worker() -> None:
            nonlocal last
            while time.monotonic() < sending_until:
                body = completion_body(MODEL, tag, index, next(numbers))
                sent = time.perf_counter()
                try:
                    await complete(session, endpoint, body)
                except Exception as exc:  # one failure stops this worker: no busy loop
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                latencies.append(time.perf_counter() - sent)
                last = time.monotonic()

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        cpu = time.process_time() - cpu
    return {
        "jobs": len(latencies),
        "failed": len(errors),
        "last_s": last,
        "cpu_s": cpu,
        "latencies_s": latencies,
        "errors": errors[:3],
    }


def client_main(args: argparse.Namespace) -> int:
    if args.client == "latency":
        figures = asyncio.run(
            client_latency(args.url, args.latency_requests, args.latency_warmup, args.tag)
        )
    else:
        figures = asyncio.run(
            client_throughput(args.url[0], args.seconds, args.in_flight, args.tag, args.index)
        )
    print(json.dumps(figures), flush=True)
    return 0


# -- child processes: engines, agentos serve, LiteLLM's proxy ------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def engine(
    model: str, per_request_ms: float, per_prompt_ms: float, slots: int
) -> Iterator[tuple[str, int]]:
    """A loopback test engine in a child process; yields its URL and pid."""
    command = [sys.executable, "-m", "agentos.testing.engine", "--host", HOST, "--port", "0"]
    command += ["--per-request-ms", str(per_request_ms), "--per-prompt-ms", str(per_prompt_ms)]
    command += ["--slots", str(slots), "--max-batch", str(MAX_BATCH), "--model", model]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode().strip() if ready else "(nothing in 30 s)"
        if not line.startswith("listening on "):
            raise RuntimeError(f"the loopback engine for {model} did not start: {line!r}")
        yield line.removeprefix("listening on "), process.pid
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def server(
    name: str, command: list[str], health: str, log: Path, env: dict[str, str]
) -> Iterator[int]:
    """A server in a child process, its output in ``log``; yields its pid once ``health``
    answers 200 (within ``START_TIMEOUT_S[name]``)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S[name]
        while not _answers(health):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                state = (
                    f"exited {process.returncode}"
                    if process.returncode is not None
                    else f"did not answer {health} within {START_TIMEOUT_S[name]:.0f} s"
                )
                raise RuntimeError(f"{name} {state}: {' | '.join(tail) or '(no output)'}")
            time.sleep(0.1)
        yield process.pid
    finally:
        stop(process)


SERVE_CONFIG = """\
engines:
  - name: latency
    type: openai
    base_url: {latency_url}/v1
    models: [{latency_model}]
    max_requests: 8
    max_batch_size: {max_batch}
    batch_window_ms: 0
  - name: gpu
    type: openai
    base_url: {url}/v1
    models: [{model}]
    max_requests: {slots}
    max_batch_size: {max_batch}
{window}"""

PROXY_CONFIG = """\
model_list:
  - model_name: {latency_model}
    litellm_params: {{model: openai/{latency_model}, api_base: "{latency_url}/v1", api_key: unused}}
  - model_name: {model}
    litellm_params: {{model: openai/{model}, api_base: "{url}/v1", api_key: unused}}
litellm_settings:
  num_retries: 0
  request_timeout: 60
general_settings:
  # loopback only, and no key check: the proxy's least work per request, as agentos's
  dangerously_permit_weak_or_unset_master_key: true
"""


def serve_command(port: int, config: Path, db: Path) -> list[str]:
    command = [sys.executable, "-m", "agentos", "serve", "--host", HOST, "--port", str(port)]
    return [*command, "--config", str(config), "--db", str(db)]


def proxy_command(port: int, config: Path) -> list[str]:
    litellm = PEERS_VENV / "bin" / "litellm"
    return [str(litellm), "--config", str(config), "--host", HOST, "--port", str(port)]


def setup_proxy(timeout: float = 900) -> None:
    """The peers' venv (``chat.py``'s) with ``litellm[proxy]`` added."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        setup_peers(timeout)
    print(f"setup: pip install {' '.join(PROXY_PACKAGES)} (into the peers' venv)", file=sys.stderr)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *PROXY_PACKAGES],
        check=True,
        timeout=timeout,
    )


def proxy_ready() -> bool:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists() or not (PEERS_VENV / "bin" / "litellm").exists():
        return False
    result = subprocess.run([str(python), "-c", PROXY_IMPORTS], capture_output=True, timeout=120)
    return result.returncode == 0


# -- the benchmark --------------------------------------------------------------------------


@dataclass
class Latency:
    """One round's sequential requests to one target, alternating with direct ones."""

    round: int
    target: str
    latencies_s: dict[str, list[float]]
    """``direct`` and ``target``: each request's latency."""
    failed: dict[str, int]

    def p(self, target: str, q: float) -> float:
        return percentile(self.latencies_s.get(target, []), q) * 1000


@dataclass
class Throughput:
    """One target's throughput part in one round, summed over the clients."""

    target: str
    round: int
    jobs: int
    failed: int
    seconds: float
    """From the common start to the last answer of any client."""
    client_cpu_s: float
    latencies_s: list[float] = field(default_factory=list, repr=False)
    server_cpu_s: float | None = None
    engine_cpu_s: float | None = None
    window: tuple[float, float] = (0.0, 0.0)
    """Start and last answer in wall-clock time, to find serve's calls in its store."""
    calls: int = 0
    """serve's completion calls that started in the window (from its store)."""
    requests: int | None = None
    """Engine requests that carried those calls (distinct batches)."""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    def per_job_ms(self, cpu_s: float | None) -> float | None:
        return cpu_s / self.jobs * 1000 if cpu_s is not None and self.jobs else None

    def figures(self) -> dict[str, float | None]:
        return {
            "jobs_per_s": self.jobs_per_s,
            "elapsed_s": self.seconds,
            "p50_ms": percentile(self.latencies_s, 0.5) * 1000,
            "p99_ms": percentile(self.latencies_s, 0.99) * 1000,
            "client_cpu_ms_per_job": self.per_job_ms(self.client_cpu_s),
            "server_cpu_ms_per_job": self.per_job_ms(self.server_cpu_s),
            "engine_cpu_ms_per_job": self.per_job_ms(self.engine_cpu_s),
            "jobs_per_request": self.jobs_per_request,
        }

    @property
    def jobs_per_request(self) -> float | None:
        return self.calls / self.requests if self.requests else None


@dataclass
class Results:
    latency: list[Latency] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    serve_embedded: int | None = None

    def of(self, target: str) -> list[Throughput]:
        return [t for t in self.throughput if t.target == target]


@dataclass
class Bench:
    """What the rounds run against: every target's URL for each model, and the pids whose
    CPU time is read around each part."""

    latency_urls: dict[str, str]
    throughput_urls: dict[str, str]
    server_pids: dict[str, int]
    engine_pid: int
    serve_db: Path | None = None


def _client_command(args: argparse.Namespace, mode: str, urls: list[str], tag: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--client", mode, "--tag", tag]
    for url in urls:
        command += ["--url", url]
    command += ["--latency-requests", str(args.latency_requests)]
    command += ["--latency-warmup", str(args.latency_warmup)]
    command += ["--seconds", str(args.seconds), "--in-flight", str(args.in_flight)]
    return command


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def measure_latency(
    args: argparse.Namespace, bench: Bench, target: str, round_: int
) -> Latency:
    """``target`` and direct, one request at a time, alternating. In pairs rather than all
    targets in one rotation: a slow target's requests (LiteLLM's take 15–20 ms) would leave
    the others idle between theirs, and waking up a process that has been idle costs each
    hop more on a VM, which is not what added latency means."""
    targets = ["direct", target]
    urls = [bench.latency_urls[t] for t in targets]
    command = _client_command(args, "latency", urls, f"r{round_}-latency-{target}")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    limit = 60 + (args.latency_requests + args.latency_warmup) * len(urls) * 0.05
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    finally:
        await _kill(process)
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the latency client exited {process.returncode}: {' | '.join(tail)}")
    figures = json.loads(out.decode().strip().splitlines()[-1])
    for error in figures["errors"]:
        print(f"  latency client: first failure at {error}", file=sys.stderr)
    return Latency(
        round_,
        target,
        dict(zip(targets, figures["latencies_s"], strict=True)),
        dict(zip(targets, figures["failed"], strict=True)),
    )


async def measure_throughput(
    args: argparse.Namespace, bench: Bench, target: str, round_: int
) -> Throughput:
    url = bench.throughput_urls[target]
    processes: list[asyncio.subprocess.Process] = []
    try:
        for index in range(args.clients):
            command = _client_command(args, "throughput", [url], f"r{round_}-{target}")
            processes.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    "--index",
                    str(index),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60 + args.clients * 5)
            if line.strip() != b"ready":
                err = b""
                if process.stderr is not None:
                    err = await asyncio.wait_for(process.stderr.read(), 10)
                tail = err.decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"a {target} client did not warm up: {' | '.join(tail)}")
        server_pid = bench.server_pids.get(target)
        start_at = time.monotonic() + 0.2  # every client has read its go line by then
        wall_start = time.time() + (start_at - time.monotonic())
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go %r\n" % start_at)
        await asyncio.gather(*(p.stdin.drain() for p in processes if p.stdin is not None))
        # the server's and the engine's CPU time from the start to the last answer (/proc)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        server_before = process_cpu_s(server_pid) if server_pid else None
        engine_before = process_cpu_s(bench.engine_pid)
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in processes)), args.seconds + 90
        )
        server_after = process_cpu_s(server_pid) if server_pid else None
        engine_after = process_cpu_s(bench.engine_pid)
    finally:
        for process in processes:
            await _kill(process)
    sample = Throughput(target, round_, 0, 0, args.seconds, 0.0)
    last = start_at
    for process, (out, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"a {target} client exited {process.returncode}: {' | '.join(tail)}")
        figures = json.loads(out.decode().strip().splitlines()[-1])
        sample.jobs += figures["jobs"]
        sample.failed += figures["failed"]
        last = max(last, figures["last_s"])
        sample.client_cpu_s += figures["cpu_s"]
        sample.latencies_s += figures["latencies_s"]
        for error in figures["errors"][:1]:
            print(f"  {target} client: {error}", file=sys.stderr)
    sample.seconds = last - start_at
    sample.window = (wall_start, wall_start + sample.seconds)
    if server_before is not None and server_after is not None:
        sample.server_cpu_s = server_after - server_before
    if engine_before is not None and engine_after is not None:
        sample.engine_cpu_s = engine_after - engine_before
    return sample


async def rounds(args: argparse.Namespace, bench: Bench, results: Results) -> None:
    targets = [t for t in TARGETS if t in bench.throughput_urls]
    for round_ in range(1, args.rounds + 1):
        hops = [t for t in targets if t != "direct"]
        for target in hops if round_ % 2 else hops[::-1]:
            print(f"round {round_}: latency, {target} and direct ...", file=sys.stderr, flush=True)
            try:
                latency = await measure_latency(args, bench, target, round_)
            except Exception as exc:
                results.errors.append(
                    f"round {round_} {target} latency: {type(exc).__name__}: {exc}"
                )
                continue
            results.latency.append(latency)
            for name in latency.latencies_s:
                print("  " + latency_row(latency, name), file=sys.stderr, flush=True)
        for target in targets if round_ % 2 else targets[::-1]:
            print(f"round {round_}: {target} throughput ...", file=sys.stderr, flush=True)
            try:
                sample = await measure_throughput(args, bench, target, round_)
            except Exception as exc:
                results.errors.append(f"round {round_} {target}: {type(exc).__name__}: {exc}")
                continue
            results.throughput.append(sample)
            print("  " + throughput_row(sample), file=sys.stderr, flush=True)


def run(args: argparse.Namespace, results: Results) -> None:
    """Start the engines and the servers, run the rounds, stop everything."""
    env = {**os.environ, "NO_PROXY": HOST, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with contextlib.ExitStack() as stack:
        if args.work_dir is not None:
            folder = args.work_dir
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentos-serve-")))
        latency_url, _ = stack.enter_context(engine(LATENCY_MODEL, 0, 0, 64))
        url, engine_pid = stack.enter_context(
            engine(MODEL, PER_REQUEST_MS, PER_PROMPT_MS, args.slots)
        )
        bench = Bench({"direct": latency_url}, {"direct": url}, {}, engine_pid)
        formats = {
            "latency_url": latency_url,
            "latency_model": LATENCY_MODEL,
            "url": url,
            "model": MODEL,
            "slots": args.slots,
            "max_batch": MAX_BATCH,
            "window": (
                f"    batch_window_ms: {args.batch_window_ms}\n"
                if args.batch_window_ms is not None
                else ""
            ),
        }
        starts: list[tuple[str, list[str], str, dict[str, str]]] = []
        config = folder / "config.yaml"
        config.write_text(SERVE_CONFIG.format(**formats))
        port = free_port()
        serve_env = {**env, "AGENTOS_HOME": str(folder / "home")}
        serve_env.pop("AGENTOS_DB", None)
        db = folder / "serve.db"
        for stale in (db, db.with_name("serve.db-wal"), db.with_name("serve.db-shm")):
            stale.unlink(missing_ok=True)
        command = serve_command(port, config, db)
        starts.append(("serve", command, f"http://{HOST}:{port}", serve_env))
        if not args.skip_litellm:
            proxy = folder / "proxy.yaml"
            proxy.write_text(PROXY_CONFIG.format(**formats))
            port = free_port()
            starts.append(("litellm", proxy_command(port, proxy), f"http://{HOST}:{port}", env))
        for name, command, base, child_env in starts:
            health = base + ("/health" if name == "serve" else "/health/liveliness")
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            try:
                pid = stack.enter_context(
                    server(name, command, health, folder / f"{name}.log", child_env)
                )
            except (RuntimeError, OSError) as exc:
                results.errors.append(f"{name} did not start: {exc}")
                continue
            bench.latency_urls[name] = bench.throughput_urls[name] = base
            bench.server_pids[name] = pid
            if name == "serve":
                bench.serve_db = db
        asyncio.run(rounds(args, bench, results))
        if bench.serve_db is not None:
            try:
                results.serve_embedded = count_batches(bench.serve_db, results.of("serve"))
            except sqlite3.Error as exc:
                results.errors.append(f"reading serve's store {bench.serve_db}: {exc}")


def count_batches(db: Path, samples: list[Throughput]) -> int:
    """Each serve sample's completion calls and the engine requests (batches) that carried
    them, from serve's store: the calls that started inside the sample's window. The store's
    writer commits in the background, so this waits until the count stops growing. Returns
    the texts serve's background embedder embedded over the whole benchmark."""
    query = (
        "SELECT count(*), count(DISTINCT coalesce(batch_id, id)) FROM llm_calls "
        "WHERE model = ? AND kind != 'embeddings' AND NOT cache_hit "
        "AND started_at >= ? AND started_at < ?"
    )
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        total, deadline = -1, time.monotonic() + 10
        while time.monotonic() < deadline:
            now = conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
            if now == total:
                break
            total = now
            time.sleep(0.5)
        for sample in samples:
            calls, requests = conn.execute(query, (MODEL, *sample.window)).fetchone()
            sample.calls, sample.requests = int(calls), int(requests)
        embedded = conn.execute(
            "SELECT count(*) FROM llm_calls WHERE kind = 'embeddings' AND status = 'ok'"
        ).fetchone()[0]
    return int(embedded)


# -- reporting -------------------------------------------------------------------------------


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


LATENCY_COLUMNS = ("requests", "failed", "p50 ms", "p99 ms", "direct p50", "added p50")
THROUGHPUT_COLUMNS = (
    "jobs",
    "jobs/s",
    "p50 ms",
    "p99 ms",
    "cli ms/job",
    "srv ms/job",
    "eng ms/job",
    "jobs/req",
)


def latency_row(latency: Latency, target: str) -> str:
    cells = [
        str(len(latency.latencies_s[target])),
        str(latency.failed[target]),
        _cell(latency.p(target, 0.5), 3),
        _cell(latency.p(target, 0.99), 3),
    ]
    return f"{target:<10}" + "".join(f"{c:>12}" for c in cells)


def throughput_row(sample: Throughput) -> str:
    f = sample.figures()
    cells = [
        str(sample.jobs),
        _cell(f["jobs_per_s"], 1),
        _cell(f["p50_ms"], 1),
        _cell(f["p99_ms"], 1),
        _cell(f["client_cpu_ms_per_job"], 3),
        _cell(f["server_cpu_ms_per_job"], 3),
        _cell(f["engine_cpu_ms_per_job"], 3),
        _cell(f["jobs_per_request"], 2),
    ]
    return f"{sample.target:<10}" + "".join(f"{c:>12}" for c in cells)


def _median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def summary(results: Results, args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    def pairs_of(target: str) -> list[Latency]:
        return [r for r in results.latency if r.target == target]

    def latency_figures(pairs: list[Latency], name: str) -> dict[str, Any]:
        return {
            "requests": len(pairs[0].latencies_s[name]),
            "rounds": len(pairs),
            "failed": sum(r.failed[name] for r in pairs),
            "p50_ms": spread([r.p(name, 0.5) for r in pairs]),
            "p99_ms": spread([r.p(name, 0.99) for r in pairs]),
        }

    latency: dict[str, Any] = {}
    hops = [t for t in TARGETS if t != "direct" and pairs_of(t)]
    if hops:
        paired_with = "serve" if "serve" in hops else hops[0]
        latency["direct"] = {
            **latency_figures(pairs_of(paired_with), "direct"),
            "paired_with": paired_with,
        }
    for target in hops:
        pairs = pairs_of(target)
        latency[target] = latency_figures(pairs, target)
        latency[target]["direct_p50_ms"] = spread([r.p("direct", 0.5) for r in pairs])
        for q, name in ((0.5, "added_p50_ms"), (0.99, "added_p99_ms")):
            latency[target][name] = spread([r.p(target, q) - r.p("direct", q) for r in pairs])

    throughput: dict[str, Any] = {}
    for target in TARGETS:
        samples = results.of(target)
        if not samples:
            continue
        figures: dict[str, Any] = {
            "rounds": len(samples),
            "jobs": sum(s.jobs for s in samples),
            "failed": sum(s.failed for s in samples),
        }
        for name in samples[0].figures():
            values = [s.figures()[name] for s in samples]
            figures[name] = spread([v for v in values if v is not None])
        throughput[target] = figures

    def rate(target: str) -> float | None:
        return _median([s.jobs_per_s for s in results.of(target)])

    def added(target: str) -> float | None:
        value = latency.get(target, {}).get("added_p50_ms")
        return value["median"] if value else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    serve_to_direct = ratio(rate("serve"), rate("direct"))
    ratios = {
        "serve_to_direct": serve_to_direct,
        "serve_to_litellm": ratio(rate("serve"), rate("litellm")),
        "litellm_to_direct": ratio(rate("litellm"), rate("direct")),
    }

    def judged(value: float | None, goal: float, at_least: bool) -> dict[str, Any]:
        met = None if value is None else (value >= goal if at_least else value < goal)
        return {"value": value, "target": goal, "at_least": at_least, "met": met}

    one_per_job = args.slots / ((PER_REQUEST_MS + PER_PROMPT_MS) / 1000)
    batched = args.slots * MAX_BATCH / ((PER_REQUEST_MS + PER_PROMPT_MS * MAX_BATCH) / 1000)
    return {
        "engine": {
            "per_request_ms": PER_REQUEST_MS,
            "per_prompt_ms": PER_PROMPT_MS,
            "slots": args.slots,
            "max_batch": MAX_BATCH,
        },
        "best_one_request_per_job_jobs_per_s": one_per_job,
        "best_batched_jobs_per_s": batched,
        "clients": args.clients,
        "in_flight_per_client": args.in_flight,
        "seconds": args.seconds,
        "latency_requests": args.latency_requests,
        "rounds": args.rounds,
        "latency": latency,
        "throughput": throughput,
        "added_p50_ms": {t: added(t) for t in ("serve", "litellm") if t in latency},
        "ratios": ratios,
        "serve_embedded": results.serve_embedded,
        "targets": {
            "serve_added_p50_ms": judged(added("serve"), TARGET_ADDED_P50_MS, False),
            "serve_to_direct": judged(serve_to_direct, TARGET_SERVE_TO_DIRECT, True),
        },
        "errors": results.errors,
        "elapsed_s": elapsed,
    }


def print_tables(report: dict[str, Any]) -> None:
    out = sys.stderr

    def m(figures: dict[str, Any], name: str) -> float | None:
        value = figures.get(name)
        return value["median"] if isinstance(value, dict) else None

    print(
        f"\nAdded latency: zero-cost engine, {report['latency_requests']} sequential "
        "completions per target and round, alternating with as many direct ones; "
        "serve's batch window 0",
        file=out,
    )
    print(f"{'medians':<10}" + "".join(f"{c:>12}" for c in LATENCY_COLUMNS), file=out)
    for name, figures in report["latency"].items():
        cells = [
            str(figures["requests"]),
            str(figures["failed"]),
            _cell(m(figures, "p50_ms"), 3),
            _cell(m(figures, "p99_ms"), 3),
            _cell(m(figures, "direct_p50_ms"), 3),
            _cell(m(figures, "added_p50_ms"), 3),
        ]
        print(f"{name:<10}" + "".join(f"{c:>12}" for c in cells), file=out)
    engine_ = report["engine"]
    print(
        f"\nThroughput: {report['clients']} clients × {report['in_flight_per_client']} in "
        f"flight, sending for {report['seconds']:g} s; engine "
        f"{engine_['per_request_ms']:g} ms/request + {engine_['per_prompt_ms']:g} ms/prompt, "
        f"{engine_['slots']} slots, batches ≤ "
        f"{engine_['max_batch']}; best with one request per job "
        f"{report['best_one_request_per_job_jobs_per_s']:.0f} jobs/s",
        file=out,
    )
    print(f"{'medians':<10}" + "".join(f"{c:>12}" for c in THROUGHPUT_COLUMNS), file=out)
    for name, figures in report["throughput"].items():
        cells = [
            str(figures["jobs"]),
            _cell(m(figures, "jobs_per_s"), 1),
            _cell(m(figures, "p50_ms"), 1),
            _cell(m(figures, "p99_ms"), 1),
            _cell(m(figures, "client_cpu_ms_per_job"), 3),
            _cell(m(figures, "server_cpu_ms_per_job"), 3),
            _cell(m(figures, "engine_cpu_ms_per_job"), 3),
            _cell(m(figures, "jobs_per_request"), 2),
        ]
        print(f"{name:<10}" + "".join(f"{c:>12}" for c in cells), file=out)
    shown = {k: v for k, v in report["ratios"].items() if v is not None}
    print("ratios of medians: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items()), file=out)
    for name, t in report["targets"].items():
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        sign = "≥" if t["at_least"] else "<"
        print(f"target {name}: {value} ({sign} {t['target']:g}): {state}", file=out)
    for error in report["errors"]:
        print(f"error: {error}", file=out)


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
    parser.add_argument("--clients", type=int, default=8, help="client processes (throughput)")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight per client")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput window per part")
    parser.add_argument(
        "--latency-requests", type=int, default=1000, help="sequential requests per target"
    )
    parser.add_argument("--latency-warmup", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=SLOTS, help="the batching engine's slots")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        help="serve's batch window for the batching engine (default: the router's, 50 ms)",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="no LiteLLM proxy row")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small numbers (1 s windows, 200 latency requests) for a look",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the configs, serve's database and the servers' logs here (default: a "
        "temporary folder, removed at the end)",
    )
    parser.add_argument("--setup", action="store_true", help="make the proxy's venv and exit")
    parser.add_argument("--client", choices=("latency", "throughput"), help=argparse.SUPPRESS)
    parser.add_argument("--url", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="jobs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        defaults = {"seconds": 5.0, "latency_requests": 1000, "latency_warmup": 100}
        for name, quick in (("seconds", 1.0), ("latency_requests", 200), ("latency_warmup", 20)):
            if getattr(args, name) == defaults[name]:
                setattr(args, name, quick)
    for name in ("rounds", "clients", "in_flight", "latency_requests", "slots"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency_warmup < 0:
        parser.error("--latency-warmup must be at least 0")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if args.client and not args.url:
        parser.error("--client needs --url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args)
    if args.setup:
        setup_proxy()
        return 0
    # SIGTERM unwinds like Ctrl-C, so that every child process is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    results = Results()
    if not args.skip_litellm and not proxy_ready():
        try:
            setup_proxy()
        except (subprocess.SubprocessError, OSError) as exc:
            results.errors.append(f"setup of the proxy's venv failed ({exc}); litellm skipped")
            args.skip_litellm = True
    try:
        run(args, results)
    except KeyboardInterrupt:
        print("interrupted; every child process is stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:  # an engine that did not start, a full disk
        results.errors.append(f"{type(exc).__name__}: {exc}")
    report = summary(results, args, time.monotonic() - started)
    print_tables(report)
    print(json.dumps(_json_value(report), sort_keys=True), flush=True)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
