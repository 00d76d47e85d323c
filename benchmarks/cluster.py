"""The cluster benchmark: the same jobs through ``agentos run`` on one machine and on a
two-node Ray cluster, and what Ray adds per run (issue 15).

    python benchmarks/cluster.py [--jobs 10000] [--rounds 1] [--cpu-runs 8]
                                 [--cpu-ms 1000] [--skip-burst] [--skip-cpu] [--quick]

Everything runs on this machine: a loopback test engine (``agentos.testing.engine`` in a
child process, the cost model of ``benchmarks/chat.py``: 64 slots, 20 ms per request +
0.2 ms per prompt, at most 64 prompts per request) stands in for a GPU server, and a
local Ray cluster of two nodes (``ray.cluster_utils.Cluster``, 1 CPU each, its own temp
dir, shut down at the end; never ``ray stop``) for the cluster. Each figure is one
``agentos run ... --once`` subprocess on a copy of the same prepared SQLite file, without
``--cluster`` (**one machine**) and with ``--cluster <the head's address>``
(**cluster**), side by side in every round (one machine first on odd rounds, the cluster
first on even ones, so that drift favours neither).

Parts:

1. **runs**: N runs of one job each, the shape whose per-run cost the issue's target is
   about: a sink ``questions`` holds N items (put there once, before the rounds, by a
   task agent), and a prompt agent reading it (``perpetual``, ``overlap: allow``,
   ``concurrency`` 256) makes one run per item, each one chat job (a system and a user
   message, temperature 0.7, ``max_tokens`` 16), claimed, recorded and acknowledged as
   any sink reader's run. **Overhead per run = (cluster wall − one-machine wall) / runs**,
   target < 2 ms; wall is the runs' own (``runs`` table, first start → last finish, so
   interpreter start-up and connecting to Ray are left out; the process's whole wall
   time is shown too).
2. **burst** (``--skip-burst`` leaves it out): one run of N jobs (a single-shot prompt
   agent of length N, concurrency 256), ``benchmarks/chat.py``'s ``agentos-run`` row:
   what the cluster adds per model call when runs are few.
3. **cpu** (``--skip-cpu`` leaves it out): a CPU-bound task agent with ``resources:
   {num_cpus: 1}``, K runs (one per sink item) of the same pure-Python work (about
   ``--cpu-ms`` of one core each, calibrated here before the rounds), on the cluster's
   head node alone (1 CPU) and then on both nodes (1 CPU each; the worker node is added
   for it). Scaling = wall on one node / wall on two (ideal 2.0 on this 2-core machine,
   target ≥ 1.6 = 80 % of ideal); the one-machine run (threads in one process, one GIL)
   is shown beside them.

CPU per run is the CPU time (user + system) of every process of the run: ``agentos run``
itself (``os.wait4``, start-up included) plus, on the cluster, every Ray process this
benchmark started (GCS, raylets, their workers and actors, read from ``/proc`` every
0.2 s while the run goes, so a worker that exits counts up to its last sample). The
engine's CPU is shown apart (the same work in both). Tables go to stderr; the last line
of stdout is one JSON object with every figure (min/median/max over rounds) and the
targets as met/not met (never asserted). ``--quick``: 1,000 jobs, 4 CPU runs of 500 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat import (
    CONCURRENCY,
    MAX_BATCH,
    MODEL,
    PARAMS,
    SYSTEM,
    loopback_engine,
    process_cpu_s,
    run_child,
    spread,
)

RUN_CONCURRENCY = 256
"""Runs (or attempts, for the burst) in flight at once, as ``benchmarks/chat.py``."""
TARGET_OVERHEAD_MS_PER_RUN = 2.0
TARGET_CPU_SCALING = 1.6
"""Two 1-CPU nodes against one: 80 % of the ideal 2.0."""
TASKS_FILE = Path(__file__).resolve().parent / "cluster_bench_tasks.py"
SAMPLE_EVERY_S = 0.2
TICKS = os.sysconf("SC_CLK_TCK")

AGENTS_YAML = """\
agents:
  - name: feeder
    kind: task
    run: cluster_bench_tasks:feed
    args: {{n: {jobs}, prefix: q}}
    output_sink: questions

  - name: asker
    input_sink: questions
    system: {system}
    prompt: '{{{{ i }}}}: reply with one word.'
    temperature: {temperature}
    max_tokens: {max_tokens}
    life_cycle: {{type: perpetual, overlap: allow, concurrency: {concurrency}}}

  - name: burst
    system: {system}
    prompt: 'Reply with one word.'
    temperature: {temperature}
    max_tokens: {max_tokens}
    life_cycle: {{type: single-shot, length: {jobs}, concurrency: {concurrency}}}

  - name: cpu-feeder
    kind: task
    run: cluster_bench_tasks:feed
    args: {{n: {cpu_runs}, prefix: c}}
    output_sink: cpu-items

  - name: crunch
    kind: task
    run: cluster_bench_tasks:crunch
    args: {{turns: {turns}}}
    input_sink: cpu-items
    resources: {{num_cpus: 1}}
    life_cycle: {{type: perpetual, overlap: allow, concurrency: {cpu_runs}}}
"""
CONFIG_YAML = """\
engines:
  - name: loopback
    type: openai
    base_url: {url}
    models: [{model}]
    max_requests: {concurrency}
    max_batch_size: {max_batch}
"""


# -- what one agentos run did ---------------------------------------------------------------


@dataclass
class Sample:
    """One ``agentos run --once`` of one part, on one machine or on the cluster."""

    part: str
    where: str
    """``one machine``, ``cluster``, or for cpu ``1 node`` / ``2 nodes``."""
    round: int
    runs: int
    jobs: int
    failed: int
    wall_s: float
    """The runs' own wall time: first start → last finish in the ``runs`` table."""
    process_s: float
    driver_cpu_s: float
    ray_cpu_s: float
    engine_cpu_s: float | None
    nodes: dict[str, int] = field(default_factory=dict)
    """Runs per node (``runs.node``), where the record has it."""

    @property
    def cpu_s(self) -> float:
        return self.driver_cpu_s + self.ray_cpu_s

    def figures(self) -> dict[str, float | None]:
        return {
            "wall_s": self.wall_s,
            "process_s": self.process_s,
            "runs_per_s": self.runs / self.wall_s if self.wall_s > 0 else None,
            "jobs_per_s": self.jobs / self.wall_s if self.wall_s > 0 else None,
            "ms_per_run": self.wall_s / self.runs * 1000 if self.runs else None,
            "cpu_ms_per_run": self.cpu_s / self.runs * 1000 if self.runs else None,
            "driver_cpu_ms_per_run": self.driver_cpu_s / self.runs * 1000 if self.runs else None,
            "ray_cpu_ms_per_run": self.ray_cpu_s / self.runs * 1000 if self.runs else None,
            "engine_cpu_ms_per_run": (
                self.engine_cpu_s / self.runs * 1000
                if self.engine_cpu_s is not None and self.runs
                else None
            ),
        }


# -- CPU of the cluster's processes ---------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of ``pid``, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def children_of(parent: int) -> set[int]:
    """The live child processes of ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] == parent:
            found.add(int(entry))
    return found


def descendants_cpu(roots: set[int]) -> dict[int, float]:
    """CPU seconds of ``roots`` and of every live descendant of theirs, by pid."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, float] = {}
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][1]
        todo += children.get(pid, [])
    return found


class ClusterCpu:
    """CPU spent by the cluster's processes between ``start`` and ``stop``: the processes
    this benchmark started for Ray (its children at ``start`` but those in ``skip``, the
    engine) and theirs (workers, actors), sampled every ``SAMPLE_EVERY_S``, each counted
    to its last sample (workers of a driver exit with it). ``agentos run`` is started
    after ``start``, so it is not one of them (its CPU is counted by ``os.wait4``)."""

    def __init__(self, skip: set[int]) -> None:
        self.skip = skip
        self._roots: set[int] = set()
        self._before: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cluster-cpu", daemon=True)

    def start(self) -> ClusterCpu:
        self._roots = children_of(os.getpid()) - self.skip
        self._before = descendants_cpu(self._roots)
        self._last = dict(self._before)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._last.update(descendants_cpu(self._roots))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._last.update(descendants_cpu(self._roots))
        return sum(cpu - self._before.get(pid, 0.0) for pid, cpu in self._last.items())


# -- the cluster ----------------------------------------------------------------------------


class LocalCluster:
    """A ``ray.cluster_utils.Cluster`` in its own temp dir: the head first, the worker node
    on ``add_worker``; ``close`` shuts down exactly the processes it started."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        # Ray's socket paths must stay short (≤ 107 bytes), so not under a deep folder
        self.temp_dir = tempfile.mkdtemp(prefix="agentos-bench-ray-", dir="/tmp")
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "temp_dir": self.temp_dir},
        )
        self.address: str = self.cluster.address
        self.workers = 0

    def add_worker(self) -> None:
        self.cluster.add_node(num_cpus=1, temp_dir=self.temp_dir)
        self.cluster.wait_for_nodes()
        self.workers += 1

    def close(self) -> None:
        try:
            self.cluster.shutdown()
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


# -- one agentos run ------------------------------------------------------------------------


@dataclass
class Setup:
    folder: Path
    agents: Path
    config: Path
    bases: dict[str, Path]
    """A prepared database per part (its sink filled), copied for every measured run."""
    engine_pid: int


def prepare(folder: Path, url: str, engine_pid: int, args: argparse.Namespace) -> Setup:
    """The agents file, config, the task module beside them, and the filled sinks."""
    shutil.copy(TASKS_FILE, folder / TASKS_FILE.name)
    agents, config = folder / "agents.yaml", folder / "config.yaml"
    agents.write_text(
        AGENTS_YAML.format(
            system=json.dumps(SYSTEM),
            jobs=args.jobs,
            concurrency=RUN_CONCURRENCY,
            temperature=PARAMS["temperature"],
            max_tokens=PARAMS["max_tokens"],
            cpu_runs=args.cpu_runs,
            turns=args.turns,
        )
    )
    config.write_text(
        CONFIG_YAML.format(url=url, model=MODEL, concurrency=CONCURRENCY, max_batch=MAX_BATCH)
    )
    setup = Setup(folder, agents, config, {}, engine_pid)
    for part, feeder in (("runs", "feeder"), ("cpu", "cpu-feeder"), ("burst", None)):
        base = folder / f"base-{part}.db"
        if feeder is not None:
            agentos(setup, base, [feeder], folder / f"setup-{part}.log")
        setup.bases[part] = base
    return setup


def agentos(
    setup: Setup, db: Path, agents: list[str], log: Path, cluster: str | None = None
) -> tuple[float, float]:
    """``agentos run --once`` of ``agents`` on ``db``; (wall s, CPU s) of the process."""
    command = [sys.executable, "-m", "agentos", "run", str(setup.agents), "--once", "--plain"]
    command += ["--db", str(db), "--config", str(setup.config)]
    for name in agents:
        command += ["-a", name]
    if cluster is not None:
        command += ["--cluster", cluster]
    env = {**os.environ, "AGENTOS_HOME": str(setup.folder / "home"), "NO_COLOR": "1"}
    env.pop("AGENTOS_DB", None)
    status, process_s, usage = run_child(command, env, 600, log)
    if status != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-4:]
        raise RuntimeError(f"agentos run {' '.join(agents)} exited {status}: {' | '.join(tail)}")
    return process_s, usage.ru_utime + usage.ru_stime


def copy_db(source: Path, target: Path) -> None:
    if not source.exists():
        return  # the burst starts from an empty database
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def measure(
    setup: Setup,
    part: str,
    agent: str,
    where: str,
    round_: int,
    cluster: LocalCluster | None,
) -> Sample:
    work = setup.folder / f"{part}-{where.replace(' ', '-')}-{round_}"
    work.mkdir()
    db = work / "run.db"
    copy_db(setup.bases[part], db)
    engine_before = process_cpu_s(setup.engine_pid)
    sampler = ClusterCpu(skip={setup.engine_pid}).start() if cluster else None
    try:
        process_s, driver_cpu = agentos(
            setup, db, [agent], work / "run.log", cluster.address if cluster else None
        )
    finally:
        ray_cpu = sampler.stop() if sampler else 0.0
    engine_after = process_cpu_s(setup.engine_pid)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT count(*), sum(successes), sum(attempts), min(started_at), max(finished_at),"
            " sum(status != 'succeeded') FROM runs WHERE agent = ?",
            (agent,),
        ).fetchone()
        columns = {c[1] for c in conn.execute("PRAGMA table_info(runs)")}
        nodes: dict[str, int] = {}
        if "node" in columns:
            for node, count in conn.execute(
                "SELECT coalesce(node, '-'), count(*) FROM runs WHERE agent = ? GROUP BY 1",
                (agent,),
            ):
                nodes[str(node)] = int(count)
    if not row or not row[0] or row[4] is None:
        raise RuntimeError(f"no finished run of {agent} in {db}")
    runs, successes, attempts, started, finished, failed_runs = row
    if failed_runs:
        raise RuntimeError(f"{failed_runs} of {runs} runs of {agent} did not succeed ({db})")
    return Sample(
        part,
        where,
        round_,
        runs=int(runs),
        jobs=int(attempts),
        failed=int(attempts) - int(successes),
        wall_s=float(finished) - float(started),
        process_s=process_s,
        driver_cpu_s=driver_cpu,
        ray_cpu_s=ray_cpu,
        engine_cpu_s=(
            engine_after - engine_before
            if engine_before is not None and engine_after is not None
            else None
        ),
        nodes=nodes,
    )


# -- the benchmark --------------------------------------------------------------------------


def calibrate_turns(ms: float) -> int:
    """Loop turns of ``cluster_bench_tasks.spin`` for ``ms`` of this process's CPU."""
    from cluster_bench_tasks import spin

    turns = 300_000
    started = time.process_time()
    spin(turns)
    return max(1, int(turns / max(time.process_time() - started, 1e-6) * ms / 1000))


def run(args: argparse.Namespace, samples: list[Sample], log: Any) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="agentos-bench-cluster-") as tmp,
        loopback_engine(1) as (url, engine_pid),
    ):
        folder = Path(tmp)
        setup = prepare(folder, url, engine_pid, args)
        print(f"prepared in {folder} (engine {url})", file=log)
        started = time.perf_counter()
        cluster = LocalCluster()
        print(f"head node up in {time.perf_counter() - started:.1f} s", file=log)

        def record(sample: Sample) -> None:
            samples.append(sample)
            f = sample.figures()
            print(
                f"  {sample.part:5s} {sample.where:11s} round {sample.round}: "
                f"{sample.runs} runs, {sample.jobs} jobs in {sample.wall_s:.2f} s "
                f"({sample.process_s:.1f} s process), {f['ms_per_run']:.3f} ms/run, "
                f"CPU {f['cpu_ms_per_run']:.3f} ms/run"
                + (f", nodes {sample.nodes}" if sample.nodes else ""),
                file=log,
            )

        try:
            if not args.skip_cpu:
                record(measure(setup, "cpu", "crunch", "1 node", 1, cluster))
            started = time.perf_counter()
            cluster.add_worker()
            print(f"worker node up in {time.perf_counter() - started:.1f} s", file=log)
            if not args.skip_cpu:
                record(measure(setup, "cpu", "crunch", "2 nodes", 1, cluster))
                record(measure(setup, "cpu", "crunch", "one machine", 1, None))
            parts = [("runs", "asker")] + ([] if args.skip_burst else [("burst", "burst")])
            for round_ in range(1, args.rounds + 1):
                order: list[LocalCluster | None] = [None, cluster]
                if round_ % 2 == 0:
                    order.reverse()
                for part, agent in parts:
                    for on in order:
                        where = "cluster" if on else "one machine"
                        record(measure(setup, part, agent, where, round_, on))
        finally:
            cluster.close()


# -- the report -----------------------------------------------------------------------------


def median_of(samples: list[Sample], part: str, where: str, figure: str) -> float | None:
    values = [
        v
        for s in samples
        if s.part == part and s.where == where and (v := s.figures()[figure]) is not None
    ]
    return statistics.median(values) if values else None


def overheads(samples: list[Sample]) -> dict[str, list[float]]:
    """Per round and part: (cluster − one machine) per run, wall and CPU, in ms."""
    out: dict[str, list[float]] = {}
    for part in ("runs", "burst"):
        rounds = sorted({s.round for s in samples if s.part == part})
        for r in rounds:
            pair = {s.where: s for s in samples if s.part == part and s.round == r}
            if {"cluster", "one machine"} <= pair.keys():
                c, m = pair["cluster"], pair["one machine"]
                out.setdefault(f"{part}_overhead_ms_per_run", []).append(
                    (c.wall_s - m.wall_s) / c.runs * 1000
                )
                out.setdefault(f"{part}_overhead_cpu_ms_per_run", []).append(
                    (c.cpu_s - m.cpu_s) / c.runs * 1000
                )
                out.setdefault(f"{part}_overhead_ms_per_job", []).append(
                    (c.wall_s - m.wall_s) / c.jobs * 1000
                )
    return out


def summary(samples: list[Sample], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for part, where in sorted({(s.part, s.where) for s in samples}):
        rows = [s.figures() for s in samples if s.part == part and s.where == where]
        figures[f"{part}/{where}"] = {
            name: spread([r[name] for r in rows if r[name] is not None])  # type: ignore[misc]
            for name in rows[0]
        }
    over = {name: spread(values) for name, values in overheads(samples).items()}
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "elapsed_s": elapsed,
        "figures": figures,
        "overheads": over,
        "targets": {},
        "samples": [
            {
                "part": s.part,
                "where": s.where,
                "round": s.round,
                "runs": s.runs,
                "jobs": s.jobs,
                "failed": s.failed,
                "nodes": s.nodes,
                **s.figures(),
            }
            for s in samples
        ],
    }
    runs_over = over.get("runs_overhead_ms_per_run")
    if runs_over is not None:
        value = runs_over["median"]
        report["targets"]["overhead_ms_per_run"] = {
            "value": value,
            "target": f"< {TARGET_OVERHEAD_MS_PER_RUN}",
            "met": value < TARGET_OVERHEAD_MS_PER_RUN,
        }
    one = median_of(samples, "cpu", "1 node", "wall_s")
    two = median_of(samples, "cpu", "2 nodes", "wall_s")
    if one and two:
        report["targets"]["cpu_scaling"] = {
            "value": one / two,
            "target": f">= {TARGET_CPU_SCALING} (ideal 2.0)",
            "met": one / two >= TARGET_CPU_SCALING,
        }
    return report


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def print_tables(samples: list[Sample], report: dict[str, Any], log: Any) -> None:
    header = (
        f"{'':24s}{'runs':>7s}{'jobs':>8s}{'wall s':>9s}{'runs/s':>9s}{'jobs/s':>10s}"
        f"{'ms/run':>11s}{'CPU ms/run':>12s}{'driver':>11s}{'ray':>11s}{'engine':>9s}"
    )
    titles = {
        "runs": "runs: N runs of one chat job each (a sink reader)",
        "burst": "burst: one run of N chat jobs",
        "cpu": "cpu: a CPU-bound task agent, resources {num_cpus: 1}",
    }
    for part in ("runs", "burst", "cpu"):
        wheres = [
            w
            for w in ("one machine", "cluster", "1 node", "2 nodes")
            if any(s.part == part and s.where == w for s in samples)
        ]
        if not wheres:
            continue
        print(f"\n{titles[part]} (medians of {report['rounds'] if part != 'cpu' else 1})", file=log)
        print(header, file=log)
        for where in wheres:
            m = report["figures"][f"{part}/{where}"]

            def med(name: str, m: dict[str, Any] = m) -> float | None:
                return m[name]["median"] if m.get(name) else None

            count = next(s for s in samples if s.part == part and s.where == where)
            print(
                f"  {where:22s}{count.runs:>7d}{count.jobs:>8d}{_cell(med('wall_s')):>9s}"
                f"{_cell(med('runs_per_s'), 1):>9s}{_cell(med('jobs_per_s'), 1):>10s}"
                f"{_cell(med('ms_per_run'), 3):>11s}{_cell(med('cpu_ms_per_run'), 3):>12s}"
                f"{_cell(med('driver_cpu_ms_per_run'), 3):>11s}"
                f"{_cell(med('ray_cpu_ms_per_run'), 3):>11s}"
                f"{_cell(med('engine_cpu_ms_per_run'), 3):>9s}",
                file=log,
            )
        over = report["overheads"]
        if part in ("runs", "burst") and over.get(f"{part}_overhead_ms_per_run"):
            wall = over[f"{part}_overhead_ms_per_run"]
            cpu = over[f"{part}_overhead_cpu_ms_per_run"]
            line = (
                f"  overhead per run (cluster − one machine): wall {_cell(wall['median'], 3)} ms"
                f" [{_cell(wall['min'], 3)}–{_cell(wall['max'], 3)}],"
                f" CPU {_cell(cpu['median'], 3)} ms"
            )
            if part == "runs":
                line += f" (target < {TARGET_OVERHEAD_MS_PER_RUN} ms: "
                line += "met)" if report["targets"]["overhead_ms_per_run"]["met"] else "not met)"
            else:
                per_job = over["burst_overhead_ms_per_job"]
                line += f"; per job {_cell(per_job['median'], 3)} ms"
            print(line, file=log)
        if part == "cpu" and "cpu_scaling" in report["targets"]:
            t = report["targets"]["cpu_scaling"]
            print(
                f"  scaling, 1 node → 2 nodes: {t['value']:.2f}x "
                f"(target {t['target']}: {'met' if t['met'] else 'not met'})",
                file=log,
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="runs (and burst jobs)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cpu-runs", type=int, default=8)
    parser.add_argument("--cpu-ms", type=float, default=1000.0, help="CPU work per cpu run")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 4 cpu runs of 500 ms")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.cpu_runs, args.cpu_ms = 1_000, 4, 500.0
    for name in ("jobs", "rounds", "cpu_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("benchmarks/cluster.py needs Ray: pip install 'agentos[ray]'", file=sys.stderr)
        return 2
    args.turns = calibrate_turns(args.cpu_ms)
    started = time.perf_counter()
    samples: list[Sample] = []
    run(args, samples, sys.stderr)
    report = summary(samples, args, time.perf_counter() - started)
    print_tables(samples, report, sys.stderr)
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
