"""Runs over HTTP (built by the runs API part of issue 13)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from agentos.serve.service import Service


def add_run_routes(app: FastAPI, service: Service) -> None:
    """The runs API's routes; none yet."""
