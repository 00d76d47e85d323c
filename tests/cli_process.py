"""``agentos`` as a user runs it: a subprocess of this Python, for the tests that check
what the CLI prints, exits with and writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentos.store import digests


def run_agentos(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m agentos ARGS`` in ``cwd``, its output captured. Its data folder is
    ``cwd/home``; nothing of the caller's ``AGENTOS_DB`` or audit key leaks in (``env``
    sets what a test wants), and output is 200 columns wide so lines are not wrapped."""
    full_env = {**os.environ, "AGENTOS_HOME": str(cwd / "home"), "COLUMNS": "200"}
    full_env.pop("AGENTOS_DB", None)
    full_env.pop(digests.AUDIT_KEY_ENV, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agentos", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
