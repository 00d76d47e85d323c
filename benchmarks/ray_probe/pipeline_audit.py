# ruff: noqa
"""`agentos run --cluster` as a user runs it, on a two-node local cluster, then audited.

1. A 200-item pipeline (task -> 200 prompt runs, concurrency 50) through `agentos run
   --cluster`, ROUNDS times, each on a fresh database: wall time and what `agentos audit`
   says (the record-order bug of docs/cluster.md §4 showed here as one run "not verified").
2. A prompt agent records a fact; with embeddings on, the driver embeds it; then a
   planner whose plan calls `memory_search` runs on the cluster and finds it.
3. `agentos runs`, `agentos replay RUN exact` on the pipeline's database.

Usage: PYTHONPATH=. python benchmarks/ray_probe/pipeline_audit.py [ROUNDS] (default 3).
The cluster gets its own temp dir and is shut down at the end (never `ray stop`).
"""

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from ray.cluster_utils import Cluster

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
TASKS = Path(__file__).resolve().parents[2] / "tests" / "cluster" / "pipeline_tasks.py"

PIPELINE = """
agents:
  - name: emitter
    kind: task
    run: pipeline_tasks:emit
    args: {count: 200}
    output_sink: names
  - name: greeter
    prompt: "Greet {{ name }}. ANSWER: hi {{ name }}"
    input_sink: names
    life_cycle: {overlap: allow, concurrency: 50}
"""

MEMORY = """
agents:
  - name: noter
    prompt: "Note it. ANSWER: The launch code for the orbital station is PELICAN-7"
  - name: recaller
    kind: planner
    prompt: 'Recall. ANSWER: {"steps": [{"tool": "memory_search", "query": "launch code of the orbital station", "limit": 1}]}'
    tools: [memory_search]
    temperature: 0
"""


def agentos(folder: Path, *args: str, timeout: float = 300) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "agentos", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "AGENTOS_HOME": str(folder / "home"), "NO_COLOR": "1", "COLUMNS": "200"},
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentos-trial-"))
    engine = subprocess.Popen(
        [sys.executable, "-m", "agentos.testing.engine", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = engine.stdout.readline().split()[-1]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "temp_dir": str(tmp / "ray")},
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        address = cluster.address
        print("cluster", address, flush=True)
        for round_ in range(1, ROUNDS + 1):
            folder = tmp / f"pipeline{round_}"
            folder.mkdir()
            (folder / "agents.yaml").write_text(textwrap.dedent(PIPELINE))
            (folder / "config.yaml").write_text(
                f"engines:\n  - {{name: loop, type: openai, base_url: '{url}'}}\n"
                "cache: {enabled: false}\nembeddings: {enabled: false}\n"
            )
            (folder / "pipeline_tasks.py").write_text(TASKS.read_text())
            rc, out, wall = agentos(
                folder, "run", "agents.yaml", "--db", "a.db", "--cluster", address
            )
            print(
                f"round {round_}: run rc={rc} wall={wall:.1f}s; {out.strip().splitlines()[-1] if out.strip() else ''}"
            )
            if rc != 0:
                print(out[-3000:])
            conn = sqlite3.connect(folder / "a.db")
            by = conn.execute(
                "SELECT agent, status, node, count(*) FROM runs GROUP BY agent, status, node"
            ).fetchall()
            conn.close()
            print(f"round {round_}: runs by agent/status/node: {by}")
            rc, out, _ = agentos(folder, "audit", "--db", "a.db")
            summary = [line for line in out.splitlines() if "audited" in line]
            print(f"round {round_}: audit rc={rc}: {summary or out[-2000:]}")
        folder = tmp / "pipeline1"
        rc, out, _ = agentos(folder, "runs", "--db", "a.db")
        print("runs (first lines):\n" + "\n".join(out.splitlines()[:6]))
        conn = sqlite3.connect(folder / "a.db")
        greeter = conn.execute("SELECT id FROM runs WHERE agent='greeter' LIMIT 1").fetchone()[0]
        conn.close()
        rc, out, _ = agentos(folder, "replay", greeter, "exact", "--db", "a.db")
        print(f"replay {greeter} exact rc={rc}: {out.strip().splitlines()[-1:]}")

        folder = tmp / "memory"
        folder.mkdir()
        (folder / "agents.yaml").write_text(textwrap.dedent(MEMORY))
        (folder / "config.yaml").write_text(
            f"engines:\n  - {{name: loop, type: openai, base_url: '{url}'}}\n"
            "cache: {enabled: false}\n"
        )
        rc, out, _ = agentos(
            folder, "run", "agents.yaml", "-a", "noter", "--db", "m.db", "--cluster", address
        )
        print(f"memory: noter rc={rc}: {out.strip().splitlines()[-1:]}")
        rc, out, _ = agentos(
            folder, "run", "agents.yaml", "-a", "recaller", "--db", "m.db", "--cluster", address
        )
        print(f"memory: recaller rc={rc}: {out.strip().splitlines()[-2:]}")
        conn = sqlite3.connect(folder / "m.db")
        print(
            "memory: recaller result:",
            conn.execute(
                "SELECT r.data, runs.node FROM results r JOIN runs ON runs.id = r.run_id WHERE runs.agent='recaller'"
            ).fetchall(),
        )
        conn.close()
        rc, out, _ = agentos(folder, "audit", "--db", "m.db")
        print(f"memory: audit rc={rc}: {[l for l in out.splitlines() if 'audited' in l]}")
    finally:
        cluster.shutdown()
        engine.terminate()
        engine.wait(10)


if __name__ == "__main__":
    main()
