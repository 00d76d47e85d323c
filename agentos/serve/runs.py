"""Runs over HTTP: ``POST /runs``, ``GET /runs/{id}``, ``GET /runs`` and ``GET /tools``.

``POST /runs`` starts one run of an agent of the served agents file (``{"agent": NAME}``)
or of an inline agent (``{"spec": {...}}``, written as one agent of agents.yaml), with
template ``variables``, and answers 202 as soon as the run's row exists; the run goes on
in the serve process's runtime (:mod:`agentos.serve.run_lanes`), so it batches with every
other client's work, shows in ``agentos top`` (which can pause and cancel it) and is
recorded like any run (``agentos runs`` and ``agentos replay`` show it).

What the request may ask, and the checks before a run starts, are in
:mod:`agentos.serve.run_request`.

Every route but ``/health`` and the OpenAPI document goes through the client check of
the OpenAI routes (a key when ``serve.keys`` are configured; a key's ``priority`` is a
ceiling for the agents it starts, as for its requests), and every error is answered in
OpenAI's shape (:mod:`agentos.serve.errors`), FastAPI's validation of query parameters
too: 400 with ``param`` naming the field.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from agentos.errors import StoreError
from agentos.serve.errors import ApiError
from agentos.serve.openai_api import json_response
from agentos.serve.run_lanes import HttpRuns
from agentos.serve.run_reads import (
    MAX_EVENTS,
    MAX_LIST,
    RunNotFound,
    list_runs,
    list_tools,
    read_run,
)
from agentos.serve.run_request import RunRequest, checked_run, invalid, read_body
from agentos.serve.service import STOPPED, Service
from agentos.store.queries import RunStatus


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    """The field at fault: ``spec.life_cycle.length``, ``variables``, ``agent``, ``events``."""
    code: str | None


class ErrorAnswer(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorAnswer, "description": "An error in OpenAI's shape"}
}
"""Documents the error answers (and keeps FastAPI from documenting a 422 it never gives)."""


class RunStarted(BaseModel):
    """The answer to ``POST /runs``: the run has its row and goes on."""

    id: str
    """The run's id (``agentos runs``, ``agentos replay ID``)."""
    status: Literal["running"]
    agent: str
    url: str
    """Where the run's status, results and events are: ``GET /runs/{id}``."""


def add_run_routes(app: FastAPI, service: Service) -> None:
    """The runs API's routes, with OpenAI-shaped answers for its errors."""
    runs = HttpRuns(service)
    db = service.session.context.store.path

    async def client(request: Request) -> None:
        service.admit(request, None, 0)

    admitted = [Depends(client)]
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post(
        "/runs",
        status_code=202,
        tags=["runs"],
        summary="Start a run",
        description=(
            "One run of an agent of the served agents file, or of an inline agent, with "
            "template variables; answered as soon as the run is recorded."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RunRequest.model_json_schema()}},
            }
        },
        response_model=None,
        responses={
            **_ERRORS,
            202: {"model": RunStarted, "description": "The run started; poll its url."},
            400: {"description": "A bad spec, variables that do not render, a bad model"},
            403: {"description": "The agent's priority is above the client key's"},
            404: {"description": "No agent of that name in the served agents file"},
            409: {"description": "A run of another spec under that name still goes"},
            413: {"description": "A body over 1 MiB"},
            503: {"description": "No engine can serve the agent's model now"},
        },
    )
    @_guarded(service)
    async def start_run(request: Request) -> Response:
        caller, _ = service.admit(request, None, 0)
        body = await read_body(request)
        spec, variables = checked_run(service, caller, body)
        run_id = await runs.start(spec, variables)
        started = RunStarted(id=run_id, status="running", agent=spec.name, url=f"/runs/{run_id}")
        return json_response(started.model_dump(), status=202)

    @app.get(
        "/runs",
        dependencies=admitted,
        tags=["runs"],
        summary="List runs",
        description="Runs, newest first, as `agentos runs --json` lists them.",
        response_model=None,
        responses=_ERRORS,
    )
    @_guarded(service)
    async def get_runs(
        agent: Annotated[str | None, Query(description="Only this agent's runs.")] = None,
        status: Annotated[
            RunStatus | None, Query(description="Only runs with this status.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST, description="How many runs.")] = 20,
    ) -> Response:
        rows = await asyncio.to_thread(list_runs, db, agent=agent, status=status, limit=limit)
        return json_response({"object": "list", "data": rows})

    @app.get(
        "/runs/{run_id}",
        dependencies=admitted,
        tags=["runs"],
        summary="A run: status, results and events",
        description=(
            "The run's row (status, agent, kind, wanted/successes/attempts, error, "
            "started_at/finished_at), its spec, the data of each result, and a page of its "
            "events as `agentos replay` reads them: `events` of them after sequence number "
            "`after`; `events_next` is the `after` of the next page (null at the end). "
            "The id may be the unique prefix `agentos runs` shows."
        ),
        response_model=None,
        responses={
            **_ERRORS,
            400: {"description": "An id prefix that matches several runs"},
            404: {"description": "No such run"},
        },
    )
    @_guarded(service)
    async def get_run(
        run_id: str,
        events: Annotated[
            int, Query(ge=0, le=MAX_EVENTS, description="The most events to give.")
        ] = 100,
        after: Annotated[
            int, Query(ge=0, description="Give events after this sequence number.")
        ] = 0,
    ) -> Response:
        try:
            run = await asyncio.to_thread(read_run, db, run_id, after=after, limit=events)
        except RunNotFound:
            raise ApiError(
                404, f"no run '{run_id}' (see GET /runs)", code="run_not_found"
            ) from None
        except StoreError as exc:
            raise ApiError(400, exc.message, code="ambiguous_run_id") from None
        return json_response(run)

    tools: list[dict[str, Any]] = []

    @app.get(
        "/tools",
        dependencies=admitted,
        tags=["runs"],
        summary="Tools agents may use",
        description=(
            "Built-in tools and the user tools of the served agents file: name, "
            "description, parameters (JSON Schema), side effects, and the agents that "
            "list each."
        ),
        response_model=None,
        responses=_ERRORS,
    )
    @_guarded(service)
    async def get_tools() -> Response:
        if not tools:
            found = await asyncio.to_thread(list_tools, service.agents, service.config.tools)
            if not tools:  # another request may have filled it meanwhile
                tools.extend(found)
        return json_response({"object": "list", "data": tools})


def _guarded(service: Service) -> Callable[[Callable[..., Awaitable[Response]]], Any]:
    """:func:`agentos.serve.app.guarded` for handlers that take FastAPI parameters: an
    :class:`ApiError` is answered in OpenAI's shape, and a request the shutdown ends gets
    503 with the reason."""

    def wrap(handler: Callable[..., Awaitable[Response]]) -> Any:
        @functools.wraps(handler)
        async def call(*args: Any, **kwargs: Any) -> Response:
            with service.in_flight() as task:
                try:
                    return await handler(*args, **kwargs)
                except ApiError as exc:
                    return exc.response()
                except asyncio.CancelledError:
                    if not service.aborting or task is None:
                        raise
                    task.uncancel()
                    reason = getattr(service, "abort_reason", STOPPED)
                    return ApiError(503, reason, code="shutting_down").response()

        return call

    return wrap


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's validation of a query parameter, as a 400 naming it."""
    assert isinstance(exc, RequestValidationError)
    return invalid(list(exc.errors())).response()
