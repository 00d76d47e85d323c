"""The cost of watching: the runtime's throughput with ``agentos top`` attached and without.

    python benchmarks/top.py [--jobs 3000] [--rounds 3] [--warmup-jobs 200]

``agentos top`` reads the store once a second while ``agentos run`` writes to it; this
measures what that costs the runtime. A loopback test engine with a cost model fast
enough that the runtime itself is the bottleneck (2 ms per request, 8 slots) serves one
single-shot agent (``--jobs`` valid answers, 8 attempts in flight, cache off) run by a
real ``agentos run --plain`` subprocess on a fresh database, in two conditions:

- **without**: nothing else reads the database;
- **with**: a real ``agentos top --db`` on the same database, started first and running in
  a pseudo-terminal of 120×32 (``TERM=xterm-256color``), its output drained by a thread
  so that it never blocks on a full terminal; after the run it gets ``q`` and must exit.

Throughput is the run's successful attempts over its wall time, both from the ``runs``
table (started → finished, so the interpreter's start-up is not in it). The conditions
alternate over ``--rounds`` rounds in the order without/with, with/without, … (ABBA), so
that the machine warming up or drifting favours neither; an unmeasured warm-up run comes
first. Each attached run is checked: the pseudo-terminal must show the dashboard
("jobs done") and this run's runtime (its pid, drawn by the attach line), else the round
counts as an error. ``top``'s own CPU use over the run is shown beside it (from
``/proc``, where there is one), since on a machine with few cores it competes with the
runtime and the engine for them.

The last line of stdout is one JSON object with every figure (progress goes to stderr);
the benchmark reports whether the slowdown is within 5 % and does not fail on it.
Everything runs on 127.0.0.1 and every step has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import resource
import select
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PER_REQUEST_MS = 2
SLOTS = 8
CONCURRENCY = 8
TERMINAL_COLUMNS, TERMINAL_ROWS = 120, 32
TARGET_RATIO = 0.95
"""The slowdown with ``top`` attached is "within 5 %" when with/without ≥ this."""
DASHBOARD_MARK = "jobs done"
"""Text the dashboard draws in its header from its first frame on."""
ATTACHED_MARK = "attached: 1 runtime"
"""The attach line while a runtime writes snapshots (top read it during the run)."""
TOP_START_S = 30.0
TOP_SEES_RUN_S = 5.0
"""How long ``top`` gets after the run to draw its pid (it reads once a second)."""
TOP_QUIT_S = 10.0
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|.)")

AGENTS = """\
agents:
  - name: bench
    prompt: 'ANSWER: {{"n": 1}}'
    response_format: {{n: 1}}
    cache: false
    life_cycle: {{type: single-shot, length: {jobs}, concurrency: {concurrency}}}
"""
CONFIG = """\
engines:
  - name: loopback
    type: openai
    base_url: {url}
    max_requests: {slots}
"""

Condition = Literal["without", "with"]


@dataclass
class RunFigures:
    """One ``agentos run``: what the ``runs`` table says it did, and how top fared beside it.

    ``top_*`` fields are None for runs without ``top``; ``top_cpu_share`` is also None
    where ``/proc`` cannot be read.
    """

    condition: Condition
    round: int
    successes: int
    attempts: int
    elapsed_s: float
    process_s: float
    runtime_cpu_s: float
    top_saw_run: bool | None = None
    top_attached_live: bool | None = None
    top_cpu_share: float | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.successes / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Figures:
    """Every run, in the order they ran, and what went wrong."""

    runs: list[RunFigures] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def of(self, condition: Condition) -> list[RunFigures]:
        return [r for r in self.runs if r.condition == condition]

    def median_jobs_per_s(self, condition: Condition) -> float:
        rates = [r.jobs_per_s for r in self.of(condition)]
        return statistics.median(rates) if rates else math.nan


@contextlib.contextmanager
def loopback_engine() -> Iterator[str]:
    """The loopback engine in a child process (so that it never shares a GIL with the
    benchmark); yields its base URL and stops it on the way out, whatever happens."""
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "agentos.testing.engine", "--port", "0"),
            *("--per-request-ms", str(PER_REQUEST_MS), "--slots", str(SLOTS)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().strip() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the loopback engine did not start: {line!r}")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never a full pipe
        yield line.removeprefix("listening on ")
    finally:
        _stop(process, 10)


def _stop(process: subprocess.Popen[Any], grace_s: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PseudoTerminalTop:
    """A real ``agentos top --db DB`` in a pseudo-terminal of 120×32.

    A thread reads everything it draws (Textual would block once the terminal's buffer is
    full), kept so that :meth:`shows` can tell what the dashboard put on screen.
    """

    def __init__(self, db: Path, env: dict[str, str]) -> None:
        self._master, slave = os.openpty()
        size = struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentos", "top", "--db", str(db)],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={**env, "TERM": "xterm-256color"},
                start_new_session=True,
            )
        finally:
            os.close(slave)
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the last holder of the terminal's other side exits
                return
            if not chunk:
                return
            with self._lock:
                self._output.extend(chunk)

    def screen_text(self) -> str:
        """Everything drawn so far, escape sequences taken out."""
        with self._lock:
            raw = bytes(self._output)
        return ANSI_ESCAPE.sub(" ", raw.decode("utf-8", errors="replace"))

    def shows(self, *texts: str) -> bool:
        screen = self.screen_text()
        return all(text in screen for text in texts)

    def wait_until_shown(self, *texts: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.shows(*texts):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return self.shows(*texts)
            time.sleep(0.05)
        return True

    def cpu_s(self) -> float | None:
        """CPU seconds the process has used so far, from ``/proc`` (None where there is none)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def quit(self) -> bool:
        """Press ``q``; True when it then exits by itself (it is killed otherwise)."""
        exited = False
        try:
            os.write(self._master, b"q")
            self.process.wait(TOP_QUIT_S)
            exited = self.process.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            _stop(self.process, 2)
            self._reader.join(5)
            os.close(self._master)
        return exited


def write_agents(folder: Path, url: str, jobs: int) -> tuple[Path, Path]:
    agents, config = folder / f"agents-{jobs}.yaml", folder / "config.yaml"
    agents.write_text(AGENTS.format(jobs=jobs, concurrency=CONCURRENCY))
    config.write_text(CONFIG.format(url=url, slots=SLOTS))
    return agents, config


def run_agents(agents: Path, config: Path, db: Path, env: dict[str, str], jobs: int) -> RunFigures:
    """One ``agentos run --plain`` to the end (its log lines go to a file beside the db)."""
    timeout_s = 30 + jobs * 0.02
    with (
        open(db.with_suffix(".log"), "w") as log,
        subprocess.Popen(
            [
                sys.executable,
                *("-m", "agentos", "run", str(agents)),
                *("--config", str(config), "--db", str(db), "--plain"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        ) as process,
    ):
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        try:
            returncode = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _stop(process, 5)
            raise TimeoutError(f"agentos run took over {timeout_s:.0f} s") from None
        process_s = time.perf_counter() - started
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if returncode != 0:
        tail = db.with_suffix(".log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"agentos run exited {returncode}: {' | '.join(tail)}")
    cpu_s = sum(
        getattr(children_after, f) - getattr(children_before, f) for f in ("ru_utime", "ru_stime")
    )
    successes, attempts, elapsed_s = read_runs(db)
    return RunFigures("without", 0, successes, attempts, elapsed_s, process_s, cpu_s)


def read_runs(db: Path) -> tuple[int, int, float]:
    """Successes, attempts and wall time (first start → last finish) of the runs in ``db``."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT sum(successes), sum(attempts), min(started_at), max(finished_at) FROM runs"
        ).fetchone()
    if row is None or row[0] is None or row[3] is None:
        raise RuntimeError(f"no finished run in {db}")
    return int(row[0]), int(row[1]), float(row[3] - row[2])


def measured_run(
    condition: Condition, agents: Path, config: Path, db: Path, env: dict[str, str], jobs: int
) -> RunFigures:
    """A run on a fresh ``db``; with ``top`` started first (and fully drawn) when asked."""
    if condition == "without":
        return run_agents(agents, config, db, env, jobs)
    top = PseudoTerminalTop(db, env)
    try:
        if not top.wait_until_shown(DASHBOARD_MARK, timeout_s=TOP_START_S):
            raise RuntimeError(f"agentos top drew no dashboard: {top.screen_text()[-300:]!r}")
        cpu_before = top.cpu_s()
        figures = run_agents(agents, config, db, env, jobs)
        figures.condition = "with"
        cpu_after = top.cpu_s()
        # the run's pid is on the attach line, both while it runs and once it has ended
        pid = _runtime_pid(db)
        figures.top_saw_run = top.wait_until_shown(f"pid {pid}", timeout_s=TOP_SEES_RUN_S)
        figures.top_attached_live = top.shows(ATTACHED_MARK)
        if cpu_before is not None and cpu_after is not None and figures.process_s > 0:
            figures.top_cpu_share = (cpu_after - cpu_before) / figures.process_s
    finally:
        quit_cleanly = top.quit()
    if not figures.top_saw_run:
        raise RuntimeError("agentos top never showed the run's runtime: it was not attached")
    if not quit_cleanly:
        raise RuntimeError("agentos top did not exit on q")
    return figures


def _runtime_pid(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT pid FROM runs ORDER BY started_at LIMIT 1").fetchone()
    return int(row[0])


def abba(rounds: int) -> list[Condition]:
    """without, with | with, without | without, with | …: each round swaps the order."""
    order: list[Condition] = []
    for round_ in range(rounds):
        pair: list[Condition] = ["without", "with"]
        order.extend(pair if round_ % 2 == 0 else pair[::-1])
    return order


def run(args: argparse.Namespace) -> Figures:
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="agentos-top-bench-") as tmp, loopback_engine() as url:
        folder = Path(tmp)
        env = {**os.environ, "AGENTOS_HOME": str(folder / "home")}
        env.pop("AGENTOS_DB", None)
        env.pop("AGENTOS_CONFIG", None)
        if args.warmup_jobs:
            print(f"warm-up: {args.warmup_jobs} jobs", file=sys.stderr)
            agents, config = write_agents(folder, url, args.warmup_jobs)
            try:
                run_agents(agents, config, folder / "warmup.db", env, args.warmup_jobs)
            except (RuntimeError, TimeoutError) as exc:
                figures.errors.append(f"warm-up: {exc}")
        agents, config = write_agents(folder, url, args.jobs)
        for i, condition in enumerate(abba(args.rounds)):
            print(f"round {i // 2 + 1}: {condition} top, {args.jobs} jobs", file=sys.stderr)
            db = folder / f"run-{i}-{condition}.db"
            try:
                measured = measured_run(condition, agents, config, db, env, args.jobs)
                measured.round = i // 2 + 1
                figures.runs.append(measured)
            except (RuntimeError, TimeoutError, OSError) as exc:
                figures.errors.append(f"round {i // 2 + 1} ({condition} top): {exc}")
    return figures


def report(figures: Figures, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """The table and the JSON line's figures."""
    without = figures.median_jobs_per_s("without")
    with_top = figures.median_jobs_per_s("with")
    ratio = with_top / without if without > 0 else math.nan
    within = bool(ratio >= TARGET_RATIO) if not math.isnan(ratio) else None
    lines = [
        f"Runtime throughput with and without agentos top: loopback engine "
        f"{PER_REQUEST_MS} ms/request, {SLOTS} slots; {args.jobs} jobs, {CONCURRENCY} in "
        f"flight, cache off; top in a {TERMINAL_COLUMNS}×{TERMINAL_ROWS} pty",
        _row("round", "top", "jobs", "run s", "jobs/s", "cpu ms/job", "top cpu", "attached"),
    ]
    for r in figures.runs:
        share = "-" if r.top_cpu_share is None else f"{100 * r.top_cpu_share:.1f} %"
        attached = "-" if r.top_saw_run is None else ("live" if r.top_attached_live else "after")
        lines.append(
            _row(
                r.round,
                r.condition,
                r.successes,
                f"{r.elapsed_s:.2f}",
                f"{r.jobs_per_s:.1f}",
                f"{1000 * r.runtime_cpu_s / max(1, r.successes):.2f}",
                share,
                attached,
            )
        )
    lines.append(
        f"median jobs/s: without {without:.1f}, with {with_top:.1f}; "
        f"with/without = {ratio:.3f} "
        f"(slowdown within 5 %: {'-' if within is None else 'yes' if within else 'no'})"
    )
    shares = [r.top_cpu_share for r in figures.of("with") if r.top_cpu_share is not None]
    values: dict[str, Any] = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "jobs_per_s_without": without,
        "jobs_per_s_with": with_top,
        "ratio_with_to_without": ratio,
        "within_5_percent": within,
        "runs_without": [r.jobs_per_s for r in figures.of("without")],
        "runs_with": [r.jobs_per_s for r in figures.of("with")],
        "top_attached_every_run": bool(figures.of("with"))
        and all(r.top_saw_run for r in figures.of("with")),
        "top_attached_live_runs": sum(bool(r.top_attached_live) for r in figures.of("with")),
        "top_cpu_share": statistics.median(shares) if shares else None,
        "failed_jobs": sum(r.attempts - r.successes for r in figures.runs),
        "engine": {"per_request_ms": PER_REQUEST_MS, "slots": SLOTS},
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
    }
    return lines, values


def _row(name: object, *cells: object) -> str:
    return f"  {name!s:<6}" + "".join(f"{c!s:>12}" for c in cells)


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=3000, help="successful jobs per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one run each way")
    parser.add_argument(
        "--warmup-jobs", type=int, default=200, help="jobs of the unmeasured first run (0: none)"
    )
    args = parser.parse_args(argv)
    for name in ("jobs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup_jobs < 0:
        parser.error("--warmup-jobs must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    figures = run(args)
    lines, values = report(figures, args)
    print("\n".join(lines), flush=True)
    for error in figures.errors:
        print(f"error: {error}")
    result = {k: _json_value(v) for k, v in values.items()}
    result["errors"] = figures.errors
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 1 if figures.errors else 0


if __name__ == "__main__":
    sys.exit(main())
