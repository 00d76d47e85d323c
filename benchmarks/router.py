"""The router benchmark: throughput against the theoretical best, overhead, a real model.

    python benchmarks/router.py [--jobs 5000] [--plain-jobs N] [--skip-model] [--model-jobs 40]

Three parts, each printed as a table; the last line of stdout is one JSON object with
every figure (progress goes to stderr):

Every job is what a prompt agent sends: a chat request (system + user message, the
agent's temperature and ``max_tokens``, attempt k asking for sample k).

1. **Batching.** A loopback test engine with a GPU-like cost model (20 ms per request +
   2 ms per prompt, 2 slots, at most 64 prompts per request) that tells its chat template
   (``GET /props``, like llama-server) serves N agent chat jobs through (a) agentos's
   router, which renders them with the template and batches them as completions prompts,
   (b) a plain asyncio + httpx client sending one chat request per job, 2 in flight, and
   (c) the theoretical best for the cost model, computed exactly. Every job is submitted
   at the start, so a job's latency (submit → answer) includes its wait in whichever
   queue holds it.
2. **Overhead.** Against a zero-cost engine, one chat job at a time, rotating between a
   direct call with aiohttp (the client the router itself uses, so the difference is the
   router's own work), the bare router (batch window 0, no recorder, no cache), and the
   router with recording and cache as ``agentos run`` has them (every call written to
   SQLite by the store's writer, every job looked up in and written to the response
   cache): the overheads are the differences of the latency percentiles.
3. **Real model.** The bundled model on the local engine (as ``agentos`` starts it), a few
   short chat jobs through the router and through a plain client at the engine's
   ``max_requests``, in the order router, plain, plain, router (half the jobs each time),
   so that the model warming up or the machine drifting favours neither. ``--skip-model``
   skips it.

The loopback engines run in a child process (``python -m agentos.testing.engine``), not in
the benchmark's own process: the engine answers on its cost model's clock, but its
answers can only leave when its event loop gets to run, and in one process (one GIL) that
loop would wait for the router's work, charging router time to the engine. ``--engine
thread`` runs it in a thread instead, to see that difference. Everything is on
127.0.0.1, every part has a time limit, and the benchmark reports the targets (a/c ≥ 0.9,
overhead p50 < 0.1 ms bare and < 0.3 ms with recording and cache) without asserting them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from agentos.router.cache import ResponseCache
from agentos.router.chat_template import from_props
from agentos.router.client import EngineClient
from agentos.router.jobs import InferenceRequest
from agentos.router.recording import StoreCallRecorder
from agentos.router.router import EngineHandle, Router
from agentos.store import Store
from agentos.testing.engine import CostModel, LoopbackEngine

MODEL = "test-model"
GPU_LIKE = CostModel(per_request_ms=20, per_prompt_ms=2, slots=2, max_batch=64)
ZERO_COST = CostModel(per_request_ms=0, per_prompt_ms=0, slots=64, max_batch=64)
TARGET_RATIO_TO_BEST = 0.9
TARGET_OVERHEAD_P50_MS = 0.1
TARGET_RECORDED_OVERHEAD_P50_MS = 0.3
WINDOW_FIELDS = ("batch_window_s", "batch_window")
"""Names the engine handle may give its batch window (the first one it has is set)."""


@dataclass
class RunResult:
    """One way of serving a set of jobs: how long it took and what each job waited."""

    jobs: int
    elapsed_s: float
    latencies_s: list[float]
    requests: int
    failed: int = 0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def jobs_per_request(self) -> float:
        return self.jobs / self.requests if self.requests else 0.0

    @classmethod
    def merge(cls, parts: list[RunResult]) -> RunResult:
        """Several runs as one: their jobs, time, latencies and requests added up."""
        return cls(
            jobs=sum(r.jobs for r in parts),
            elapsed_s=sum(r.elapsed_s for r in parts),
            latencies_s=[x for r in parts for x in r.latencies_s],
            requests=sum(r.requests for r in parts),
            failed=sum(r.failed for r in parts),
        )

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000


@dataclass
class Figures:
    """Everything measured, in the JSON line's names; None where a part did not run."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]): a value that was actually observed."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def best_schedule(cost: CostModel, jobs: int) -> RunResult:
    """The theoretical best for ``cost``: every job present at time 0, batches as full as
    allowed, every slot busy until the end.

    A slot serving n prompts needs at least ``per_request·ceil(n/max_batch) +
    per_prompt·n``, which never decreases with n, so the shortest makespan splits the
    prompts as evenly as possible over the slots and fills each slot's batches (the one
    partial batch of a slot goes last). This is at most the makespan of ceil(N/max_batch)
    full batches spread over the slots, and equal to it when the split leaves no extra
    partial batch.
    """
    slots, batch = max(1, cost.slots), max(1, cost.max_batch)
    latencies: list[float] = []
    requests = 0
    makespan = 0.0
    for slot in range(slots):
        n = jobs // slots + (1 if slot < jobs % slots else 0)
        clock = 0.0
        while n > 0:
            size = min(batch, n)
            clock += (cost.per_request_ms + cost.per_prompt_ms * size) / 1000
            latencies.extend([clock] * size)
            requests += 1
            n -= size
        makespan = max(makespan, clock)
    return RunResult(jobs=jobs, elapsed_s=makespan, latencies_s=latencies, requests=requests)


def agent_request(tag: str, i: int, max_tokens: int = 8, model: str = MODEL) -> InferenceRequest:
    """Attempt ``i`` of a prompt agent: its chat request, as ``agents/prompt.py`` makes it."""
    return InferenceRequest(
        kind="chat",
        model=model,
        messages=[
            {"role": "system", "content": "You answer with one word."},
            {"role": "user", "content": f"{tag} {i}: reply with one word."},
        ],
        params={"max_tokens": max_tokens, "temperature": 0.7},
        sample=i,
    )


async def with_chat_template(handle: EngineHandle, knobs: dict[str, Any]) -> None:
    """Give the handle the engine's chat template from ``GET /props``, as the runtime does
    (where this router version has the field)."""
    if not hasattr(handle, "chat_template"):
        knobs["chat_template"] = None
        return
    props = await handle.client.props()
    handle.chat_template = from_props(props, "loopback /props") if props else None
    knobs["chat_template"] = handle.chat_template.source if handle.chat_template else None


def build_handle(
    client: EngineClient, info: Any, *, max_requests: int, max_batch_size: int, window: float | None
) -> tuple[EngineHandle, dict[str, Any]]:
    """An engine handle with prompt batching on and the given batch window (None: the
    router's default), setting only the knobs this version of the router has; returns
    the handle and the knobs that were set."""
    names = {f.name for f in dataclasses.fields(EngineHandle) if f.init}
    knobs: dict[str, Any] = {"max_requests": max_requests, "max_batch_size": max_batch_size}
    if "prompt_batching" in names:
        knobs["prompt_batching"] = True
    window_name = next((n for n in WINDOW_FIELDS if n in names), None)
    if window is not None and window_name is not None:
        knobs[window_name] = window
    handle = EngineHandle(name=client.name, client=client, info=info, **knobs)
    if window_name is not None:
        knobs.setdefault(window_name, getattr(handle, window_name))
    knobs["router_batches_prompts"] = "prompt_batching" in names
    return handle, knobs


def _note_default_window(router: Router, knobs: dict[str, Any]) -> None:
    """Replace a window left to the router's default (None) by that default's value."""
    for name in WINDOW_FIELDS:
        if name in knobs and knobs[name] is None:
            knobs[name] = getattr(getattr(router, "settings", None), name, None)


@contextlib.asynccontextmanager
async def loopback_engine(cost: CostModel, mode: str) -> AsyncIterator[str]:
    """A loopback engine with ``cost``, in a child process (default) or a thread; yields
    its base URL and stops it on the way out, whatever happens."""
    if mode == "thread":
        engine = LoopbackEngine(cost=cost, models=(MODEL,), record_requests=False)
        with engine.run_in_thread():
            yield engine.url
        return
    args = [
        *("--per-request-ms", str(cost.per_request_ms), "--per-prompt-ms", str(cost.per_prompt_ms)),
        *("--slots", str(cost.slots), "--max-batch", str(cost.max_batch), "--model", MODEL),
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "agentos.testing.engine", "--port", "0", *args),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the loopback engine did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def through_router(router: Router, requests: list[InferenceRequest]) -> RunResult:
    """Submit every request at once; latency is submit → answer of each job."""
    before = router.snapshot()["requests"]
    latencies: list[float] = []
    failed = 0

    async def one(request: InferenceRequest) -> None:
        nonlocal failed
        submitted = time.perf_counter()
        try:
            await router.submit(request, priority="user")
        except Exception as exc:  # a failed job is counted, never retried here
            failed += 1
            if failed == 1:
                print(f"  first failed job: {exc}", file=sys.stderr)
            return
        latencies.append(time.perf_counter() - submitted)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for request in requests:
            group.create_task(one(request))
    elapsed = time.perf_counter() - started
    requests_made = router.snapshot()["requests"] - before
    return RunResult(len(latencies), elapsed, latencies, requests_made, failed)


async def plain_client(url: str, requests: list[InferenceRequest], concurrency: int) -> RunResult:
    """The baseline: one request per job, ``concurrency`` in flight, every job queued at
    the start in the client itself (so latency counts from the start, as for the router)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        await _post_chat(http, requests[0], warm_up=True)
        pending = iter(requests)
        started = time.perf_counter()

        async def worker() -> None:
            for request in pending:  # one iterator shared by all workers
                await _post_chat(http, request)
                latencies.append(time.perf_counter() - started)

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        elapsed = time.perf_counter() - started
    return RunResult(len(latencies), elapsed, latencies, requests=len(latencies))


def _chat_body(request: InferenceRequest, *, warm_up: bool = False) -> dict[str, Any]:
    body = {"model": request.model, "messages": request.messages, **request.params}
    if request.params.get("temperature"):
        body["seed"] = request.sample
    if warm_up:
        body["messages"] = [{"role": "user", "content": "warm-up"}]
    return body


async def _post_chat(
    http: httpx.AsyncClient, request: InferenceRequest, *, warm_up: bool = False
) -> str:
    response = await http.post("/v1/chat/completions", json=_chat_body(request, warm_up=warm_up))
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


async def part_batching(args: argparse.Namespace, figures: Figures) -> list[str]:
    cost = GPU_LIKE
    best = best_schedule(cost, args.jobs)
    async with loopback_engine(cost, args.engine) as url:
        client = EngineClient("loopback", url, timeout=120, max_connections=cost.slots + 2)
        try:
            info = await client.detect([MODEL])
            handle, knobs = build_handle(
                client, info, max_requests=cost.slots, max_batch_size=cost.max_batch, window=None
            )
            await with_chat_template(handle, knobs)
            async with Router([handle], recorder=None) as router:
                _note_default_window(router, knobs)
                warm = [agent_request("warm-up", i) for i in range(cost.max_batch)]
                await through_router(router, warm)
                print(f"  router: {args.jobs} jobs", file=sys.stderr)
                jobs = [agent_request("job", i) for i in range(args.jobs)]
                async with asyncio.timeout(30 + 10 * best.elapsed_s):
                    routed = await through_router(router, jobs)
        finally:
            await client.aclose()
        plain_n = args.plain_jobs if args.plain_jobs is not None else args.jobs
        print(f"  plain client: {plain_n} jobs", file=sys.stderr)
        plain_jobs = [agent_request("plain", i) for i in range(plain_n)]
        serial_s = plain_n * (cost.per_request_ms + cost.per_prompt_ms) / 1000 / cost.slots
        async with asyncio.timeout(30 + 5 * serial_s):
            plain = await plain_client(url, plain_jobs, concurrency=cost.slots)
    figures.values.update(
        jobs=args.jobs,
        jobs_per_s=routed.jobs_per_s,
        ratio_to_best=routed.jobs_per_s / best.jobs_per_s,
        ratio_to_plain=routed.jobs_per_s / plain.jobs_per_s if plain.jobs_per_s else None,
        jobs_per_request=routed.jobs_per_request,
        p50_ms=routed.p(0.5),
        p99_ms=routed.p(0.99),
        failed_jobs=routed.failed,
        plain_jobs=plain_n,
        plain_jobs_per_s=plain.jobs_per_s,
        plain_p50_ms=plain.p(0.5),
        plain_p99_ms=plain.p(0.99),
        best_jobs_per_s=best.jobs_per_s,
        best_jobs_per_request=best.jobs_per_request,
        best_p50_ms=best.p(0.5),
        best_p99_ms=best.p(0.99),
        router_settings=knobs,
    )
    rows = [
        ("(a) agentos router", routed),
        (f"(b) plain httpx, {cost.slots} in flight", plain),
        ("(c) theoretical best", best),
    ]
    title = (
        f"1. Batching agents' chat jobs: loopback engine {cost.per_request_ms:g} ms/request + "
        f"{cost.per_prompt_ms:g} ms/prompt, {cost.slots} slots, batches ≤ {cost.max_batch}"
    )
    lines = [title, _row("", "jobs", "s", "jobs/s", "jobs/req", "p50 ms", "p99 ms")]
    for name, r in rows:
        lines.append(
            _row(
                name,
                r.jobs,
                f"{r.elapsed_s:.2f}",
                f"{r.jobs_per_s:.1f}",
                f"{r.jobs_per_request:.2f}",
                f"{r.p(0.5):.1f}",
                f"{r.p(0.99):.1f}",
            )
        )
    ratio_best = figures.values["ratio_to_best"]
    ratio_plain = figures.values["ratio_to_plain"]
    lines.append(
        f"a/c = {ratio_best:.3f} (target ≥ {TARGET_RATIO_TO_BEST}: "
        f"{_met(ratio_best >= TARGET_RATIO_TO_BEST)})   a/b = {ratio_plain:.2f}"
        + (f"   failed jobs: {routed.failed}" if routed.failed else "")
    )
    if not knobs["router_batches_prompts"]:
        lines.append("note: this router version has no prompt batching (one prompt per request)")
    return lines


async def part_overhead(args: argparse.Namespace, figures: Figures) -> list[str]:
    samples, warmup = args.overhead_samples, args.overhead_warmup
    ways = ("direct", "router", "recorded")
    times: dict[str, list[float]] = {way: [] for way in ways}
    async with loopback_engine(ZERO_COST, args.engine) as url:
        client = EngineClient("zero-cost", url, timeout=30, max_connections=4)
        recorded_client = EngineClient("zero-cost", url, timeout=30, max_connections=4)
        try:
            info = await client.detect([MODEL])
            handle, knobs = build_handle(client, info, max_requests=2, max_batch_size=64, window=0)
            recorded_handle, _ = build_handle(
                recorded_client, info, max_requests=2, max_batch_size=64, window=0
            )
            with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "b.db") as store:
                async with (
                    Router([handle], recorder=None) as router,
                    Router(
                        [recorded_handle],
                        StoreCallRecorder(store),
                        cache=ResponseCache(store),
                    ) as recorded,
                    aiohttp.ClientSession(url) as http,
                    asyncio.timeout(60 + samples * 0.1),
                ):

                    async def direct(request: InferenceRequest) -> None:
                        async with http.post(
                            "/v1/chat/completions", json=_chat_body(request)
                        ) as response:
                            response.raise_for_status()
                            await response.json()

                    calls = {
                        "direct": direct,
                        "router": lambda r: router.submit(r, use_cache=False),
                        "recorded": lambda r: recorded.submit(r, process="bench"),
                    }
                    for i in range(warmup + samples):
                        request = agent_request("seq", i)
                        for k in range(len(ways)):  # rotate, so drift hits every way alike
                            way = ways[(i + k) % len(ways)]
                            t0 = time.perf_counter()
                            await calls[way](request)
                            if i >= warmup:
                                times[way].append(time.perf_counter() - t0)
        finally:
            await client.aclose()
            await recorded_client.aclose()
    ms = {
        way: (percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000)
        for way, values in times.items()
    }
    bare = (ms["router"][0] - ms["direct"][0], ms["router"][1] - ms["direct"][1])
    rec = (ms["recorded"][0] - ms["direct"][0], ms["recorded"][1] - ms["direct"][1])
    figures.values.update(
        overhead_p50_ms=bare[0],
        overhead_p99_ms=bare[1],
        overhead_recorded_p50_ms=rec[0],
        overhead_recorded_p99_ms=rec[1],
        router_seq_p50_ms=ms["router"][0],
        router_seq_p99_ms=ms["router"][1],
        recorded_seq_p50_ms=ms["recorded"][0],
        recorded_seq_p99_ms=ms["recorded"][1],
        direct_p50_ms=ms["direct"][0],
        direct_p99_ms=ms["direct"][1],
        overhead_samples=samples,
        overhead_router_settings=knobs,
    )
    lines = [
        f"2. Router overhead: zero-cost engine, {samples} sequential chat jobs each way "
        f"after {warmup} warm-up, batch window 0",
        _row("", "p50 ms", "p99 ms"),
        _row("direct aiohttp", f"{ms['direct'][0]:.3f}", f"{ms['direct'][1]:.3f}"),
        _row("router", f"{ms['router'][0]:.3f}", f"{ms['router'][1]:.3f}"),
        _row("router + recording + cache", f"{ms['recorded'][0]:.3f}", f"{ms['recorded'][1]:.3f}"),
        _row("overhead, bare", f"{bare[0]:.3f}", f"{bare[1]:.3f}"),
        _row("overhead, recording + cache", f"{rec[0]:.3f}", f"{rec[1]:.3f}"),
        f"overhead p50 = {bare[0]:.3f} ms bare (target < {TARGET_OVERHEAD_P50_MS}: "
        f"{_met(bare[0] < TARGET_OVERHEAD_P50_MS)}), {rec[0]:.3f} ms with recording and cache "
        f"(target < {TARGET_RECORDED_OVERHEAD_P50_MS}: "
        f"{_met(rec[0] < TARGET_RECORDED_OVERHEAD_P50_MS)})",
    ]
    return lines


async def part_model(args: argparse.Namespace, figures: Figures) -> list[str]:
    from agentos.router.engines import open_local_engine
    from agentos.router.local_server import choose_server
    from agentos.spec.config import LocalEngineConfig

    n = args.model_jobs
    server = choose_server("auto")
    print(f"  starting the local engine ({server})", file=sys.stderr)
    async with asyncio.timeout(args.model_timeout):
        async with open_local_engine(LocalEngineConfig(type="local")) as handle:
            if not handle.healthy:
                raise RuntimeError(f"the local engine is unhealthy: {handle.info.detail}")
            model = handle.info.models[0]

            def requests(tag: str) -> list[InferenceRequest]:
                return [agent_request(tag, i, model=model) for i in range(n)]

            routed_parts: list[RunResult] = []
            plain_parts: list[RunResult] = []
            async with Router([handle], recorder=None) as router:
                await through_router(router, requests("warm-up")[: handle.max_requests])
                for round_, via_router in enumerate((True, False, False, True)):
                    half = requests(f"model job {round_}")[round_ % 2 :: 2]
                    print(
                        f"  {'router' if via_router else 'plain client'}: {len(half)} jobs",
                        file=sys.stderr,
                    )
                    if via_router:
                        routed_parts.append(await through_router(router, half))
                    else:
                        plain_parts.append(
                            await plain_client(
                                handle.client.base_url, half, concurrency=handle.max_requests
                            )
                        )
    routed, plain = RunResult.merge(routed_parts), RunResult.merge(plain_parts)
    ratio = routed.jobs_per_s / plain.jobs_per_s if plain.jobs_per_s else None
    figures.values.update(
        model_server=server,
        model_jobs=n,
        model_jobs_per_s=routed.jobs_per_s,
        model_jobs_per_request=routed.jobs_per_request,
        model_p50_ms=routed.p(0.5),
        model_p99_ms=routed.p(0.99),
        model_failed_jobs=routed.failed,
        model_plain_jobs_per_s=plain.jobs_per_s,
        model_plain_p50_ms=plain.p(0.5),
        model_plain_p99_ms=plain.p(0.99),
        model_ratio_to_plain=ratio,
        model_max_requests=handle.max_requests,
    )
    lines = [
        f"3. Real model: bundled model on the local engine ({server}), {n} chat jobs "
        f"of ≤ 8 tokens, {handle.max_requests} requests in flight",
        _row("", "jobs", "s", "jobs/s", "jobs/req", "p50 ms", "p99 ms"),
    ]
    for name, r in (("agentos router", routed), ("plain httpx", plain)):
        lines.append(
            _row(
                name,
                r.jobs,
                f"{r.elapsed_s:.2f}",
                f"{r.jobs_per_s:.2f}",
                f"{r.jobs_per_request:.2f}",
                f"{r.p(0.5):.0f}",
                f"{r.p(0.99):.0f}",
            )
        )
    lines.append(f"router / plain = {ratio:.3f}" if ratio is not None else "no plain figure")
    return lines


def _row(name: str, *cells: object) -> str:
    return f"  {name:<34}" + "".join(f"{c!s:>11}" for c in cells)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


@contextlib.contextmanager
def _part(name: str, figures: Figures) -> Iterator[None]:
    """Run a part; a failure or time-out is reported and the next part still runs."""
    try:
        yield
    except TimeoutError:
        figures.errors.append(f"{name}: time limit reached")
    except Exception as exc:
        figures.errors.append(f"{name}: {type(exc).__name__}: {exc}")


async def run(args: argparse.Namespace) -> Figures:
    figures = Figures()
    parts: list[tuple[str, Callable[[argparse.Namespace, Figures], Any]]] = [
        ("batching", part_batching),
        ("overhead", part_overhead),
    ]
    if not args.skip_model:
        parts.append(("model", part_model))
    for name, part in parts:
        print(f"{name} ...", file=sys.stderr)
        with _part(name, figures):
            lines = await part(args, figures)
            print("\n".join(lines) + "\n", flush=True)
    targets = figures.values
    if "ratio_to_best" in targets:
        targets["target_ratio_to_best_met"] = targets["ratio_to_best"] >= TARGET_RATIO_TO_BEST
    if "overhead_p50_ms" in targets:
        targets["target_overhead_p50_met"] = targets["overhead_p50_ms"] < TARGET_OVERHEAD_P50_MS
        targets["target_recorded_overhead_p50_met"] = (
            targets["overhead_recorded_p50_ms"] < TARGET_RECORDED_OVERHEAD_P50_MS
        )
    return figures


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs through the router (a)")
    parser.add_argument(
        "--plain-jobs", type=int, default=None, help="jobs for the plain client (b); default --jobs"
    )
    parser.add_argument("--overhead-samples", type=int, default=2000, help="jobs each way (2)")
    parser.add_argument("--overhead-warmup", type=int, default=200, help="unmeasured jobs (2)")
    parser.add_argument("--skip-model", action="store_true", help="skip the real model (3)")
    parser.add_argument("--model-jobs", type=int, default=40, help="jobs on the real model (3)")
    parser.add_argument(
        "--model-timeout", type=float, default=600, help="time limit of part 3 in seconds"
    )
    parser.add_argument(
        "--engine",
        choices=("process", "thread"),
        default="process",
        help="where the loopback engines run (default: a child process)",
    )
    args = parser.parse_args(argv)
    for name in ("jobs", "overhead_samples", "model_jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.plain_jobs is not None and args.plain_jobs < 1:
        parser.error("--plain-jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    figures = asyncio.run(run(args))
    for error in figures.errors:
        print(f"error: {error}")
    result = {k: _json_value(v) for k, v in figures.values.items()}
    result["errors"] = figures.errors
    result["engine_mode"] = args.engine
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 1 if figures.errors else 0


if __name__ == "__main__":
    sys.exit(main())
