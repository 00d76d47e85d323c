"""Task functions of the cluster tests' agents files (imported by the workers from the
agents file's folder, which a local cluster shares with the driver)."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


def emit(count: int) -> list[dict[str, Any]]:
    """``count`` names, one item each."""
    return [{"id": f"n{i}", "name": f"name-{i}"} for i in range(count)]


def crunch(rounds: int, context: Any) -> dict[str, Any]:
    """CPU-bound work (``rounds`` SHA-256 of a growing digest) on the item's greeting."""
    started = time.monotonic()
    digest = str(context.variables["value"]).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return {
        "id": context.variables["value"],
        "digest": digest.hex()[:16],
        "pid": os.getpid(),
        "seconds": round(time.monotonic() - started, 3),
    }
