"""Ids of runs, model calls, tool calls and jobs: one maker for every part of agentos.

It lives outside ``store`` and ``router`` so that both use it without depending on each
other; it takes no system call per id (``uuid4`` reads the OS's random source every time,
which showed in the profile of the router's per-job path).
"""

from __future__ import annotations

import secrets
import threading
import time

_id_lock = threading.Lock()
_last_ms = 0
_last_random = 0
_RANDOM_BITS = 40


def new_id() -> str:
    """A 22-character hex id that sorts by creation time.

    12 hex digits of milliseconds since the epoch, then 10 of randomness. Within one
    millisecond in one process the random part counts up, so ids made here never collide
    and always sort in the order they were made; across processes 40 random bits make a
    collision within the same millisecond negligible.
    """
    global _last_ms, _last_random
    now_ms = time.time_ns() // 1_000_000
    with _id_lock:
        if now_ms <= _last_ms:
            now_ms = _last_ms
            random_part = _last_random + 1
            if random_part >= 1 << _RANDOM_BITS:
                now_ms += 1
                random_part = secrets.randbits(_RANDOM_BITS - 1)
        else:
            # One bit of headroom, so counting up within a millisecond never overflows.
            random_part = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms, _last_random = now_ms, random_part
    return f"{now_ms:012x}{random_part:010x}"
