"""Connecting the driver (``agentos run --cluster``) to a Ray cluster.

The one place that imports ``ray`` for the CLI, and only when a cluster is asked for:
``agentos --help`` and a run without ``--cluster`` never load it. Every way this fails is
a :class:`~agentos.errors.ClusterError` that names what to do or the address tried.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from agentos.errors import ClusterError

CONNECT_TIMEOUT_S = 5.0
"""How long the address may take to accept a TCP connection before it counts as dead
(Ray's own connect retries for a minute or more)."""


def import_ray() -> Any:
    """The ``ray`` module, or a ClusterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "running on a cluster needs Ray, which is not installed: pip install 'agentos[ray]'"
        ) from None
    return ray


def probe(address: str) -> None:
    """Raise a ClusterError unless something accepts TCP connections at ``address``
    (``HOST:PORT`` or ``ray://HOST:PORT``); ``auto`` is Ray's to find."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address}: {exc} (start one with "
            "'ray start --head', or give the head node's address)"
        ) from None


def connect(address: str, *, runtime_env: dict[str, Any] | None = None) -> Any:
    """``ray.init`` to the cluster at ``address``; the ``ray`` module."""
    ray = import_ray()
    probe(address)
    try:
        ray.init(
            address=address,
            runtime_env=runtime_env,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray
