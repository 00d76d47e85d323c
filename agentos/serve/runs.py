"""Runs over HTTP: ``POST /runs``, ``GET /runs/{id}``, ``GET /runs`` and ``GET /tools``.

``POST /runs`` starts one run of an agent of the served agents file (``{"agent": NAME}``)
or of an inline agent (``{"spec": {...}}``, written as one agent of agents.yaml), with
template ``variables``, and answers 202 as soon as the run's row exists; the run goes on
in the serve process's runtime (:mod:`agentos.serve.run_lanes`), so it batches with every
other client's work, shows in ``agentos top`` (which can pause and cancel it) and is
recorded like any run (``agentos runs`` and ``agentos replay`` show it).

Before anything starts, the request is checked as ``agentos run`` checks an agents file:
an inline agent with :func:`~agentos.spec.agents.load_agent_value` (errors name the key,
as ``spec.KEY``), its engine and model against config.yaml, its team members against the
served file and its tools against the registry; the variables render; the model is
served. An inline agent may use the built-in tools only, and may not be a task agent: a
client's key must not let it name Python code to run on this machine (user tools and
task callables come from the served agents file, which its owner wrote).

Every route but ``/health`` and the OpenAPI document goes through the client check of
the OpenAI routes (a key when ``serve.keys`` are configured; a key's ``priority`` is a
ceiling for the agents it starts, as for its requests), and every error is answered in
OpenAI's shape (:mod:`agentos.serve.errors`), FastAPI's validation of query parameters
too: 400 with ``param`` naming the field. The body of ``POST /runs`` is read after the
client check, and bounded as agents.yaml is (1 MiB, nested 64 deep), then validated as
:class:`RunRequest`, whose schema the OpenAPI document shows.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response

from agentos.errors import NoEngineError, SpecError, StoreError
from agentos.router.jobs import PRIORITY_RANK, InferenceRequest
from agentos.scheduler.runner import check_renderable
from agentos.serve.clients import Client
from agentos.serve.errors import ApiError, bad_request
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
from agentos.spec.agents import AgentsFile, AgentSpec, load_agent_value
from agentos.spec.yamlsrc import MAX_DEPTH, MAX_FILE_BYTES

if TYPE_CHECKING:
    from agentos.serve.service import Service

INLINE = "spec"
"""How errors name an inline agent: ``spec, key 'life_cycle.length': ...``."""


class RunRequest(BaseModel):
    """A run to start: an agent of the served agents file, or an inline agent."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {"agent": "capital-cities", "variables": {"country": "Peru"}},
                {
                    "spec": {
                        "name": "haiku",
                        "prompt": "Write a haiku about {{ topic }}.",
                        "response_format": {"haiku": "the haiku"},
                    },
                    "variables": {"topic": "autumn"},
                },
            ]
        },
    )

    agent: str | None = None
    """The name of an agent of the agents file ``agentos serve AGENTS`` was started with."""

    spec: dict[str, Any] | None = None
    """An inline agent, written as one agent of agents.yaml (keys as there, kebab-case or
    snake_case). Built-in tools only; not a task agent; team members are agents of the
    served file."""

    variables: dict[str, Any] = Field(default_factory=dict)
    """Template variables of the run (over the agent's ``vars``), as ``--var NAME=VALUE``
    gives them to ``agentos run``."""

    @model_validator(mode="after")
    def _one_agent(self) -> RunRequest:
        if (self.agent is None) == (self.spec is None):
            raise ValueError(
                "give either 'agent' (an agent of the served agents file) or 'spec' "
                "(an inline agent), not both or neither"
            )
        return self


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
            404: {"description": "No agent of that name in the served agents file"},
            403: {"description": "The agent's priority is above the client key's"},
            409: {"description": "A run of another spec under that name still goes"},
            413: {"description": "A body over 1 MiB"},
            503: {"description": "No engine can serve the agent's model now"},
        },
    )
    @_guarded(service)
    async def start_run(request: Request) -> Response:
        caller, _ = service.admit(request, None, 0)
        body = await _read_body(request)
        spec = _spec_of(service, body)
        _check_priority(service, caller, spec)
        _check_variables(service, spec, body.variables)
        _check_servable(service, spec, "spec.model" if body.spec is not None else None)
        run_id = await runs.start(spec, body.variables)
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
            Literal["running", "succeeded", "failed", "cancelled", "crashed"] | None,
            Query(description="Only runs with this status."),
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
            tools.extend(await asyncio.to_thread(list_tools, service.agents, service.config.tools))
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
                    reason = getattr(service, "abort_reason", "agentos serve stopped")
                    return ApiError(503, reason, code="shutting_down").response()

        return call

    return wrap


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's validation of a query parameter, as a 400 naming it."""
    assert isinstance(exc, RequestValidationError)
    return _invalid(list(exc.errors())).response()


async def _read_body(request: Request) -> RunRequest:
    """The body of ``POST /runs``: at most :data:`MAX_FILE_BYTES` of JSON (what an agents
    file may be), nested at most :data:`MAX_DEPTH` deep, that validates as a
    :class:`RunRequest`."""
    raw = await request.body()
    if len(raw) > MAX_FILE_BYTES:
        raise ApiError(
            413,
            f"the request body is {len(raw)} bytes; a run request may be at most "
            f"{MAX_FILE_BYTES} (1 MiB, as an agents file)",
            code="body_too_large",
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})") from None
    where = _too_deep(value)
    if where is not None:
        raise bad_request(
            f"the request body nests lists and objects more than {MAX_DEPTH} deep", where
        )
    try:
        return RunRequest.model_validate(value)
    except ValidationError as exc:
        raise _invalid(list(exc.errors())) from None


def _too_deep(value: Any) -> str | None:
    """The path of a value nested deeper than :data:`MAX_DEPTH`, or None."""
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while todo:
        item, path = todo.pop()
        if len(path) > MAX_DEPTH:
            return ".".join(str(p) for p in path[:3]) + "..."
        if isinstance(item, dict):
            todo.extend((v, (*path, k)) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, (*path, i)) for i, v in enumerate(item))
    return None


def _invalid(errors: list[Any]) -> ApiError:
    """Pydantic's first error (of the body or a query parameter) as a 400 naming the
    field, counting the others."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        allowed = ", ".join(RunRequest.model_fields)
        message = f"unknown key '{param}'; allowed keys: {allowed}"
    elif param:
        message = f"'{param}': {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return bad_request(message, param)


# -- checks before a run starts ----------------------------------------------------------------


def _spec_of(service: Service, body: RunRequest) -> AgentSpec:
    if body.agent is not None:
        agents = service.agents
        if agents is None:
            raise ApiError(
                404,
                f"no agent '{body.agent}': agentos serve was started without an agents file "
                "(start it as `agentos serve AGENTS`, or give an inline agent as 'spec')",
                code="agent_not_found",
                param="agent",
            )
        spec = agents.get(body.agent)
        if spec is None:
            raise ApiError(
                404,
                f"no agent named '{body.agent}' in {agents.path} "
                f"(agents: {', '.join(agents.names)})",
                code="agent_not_found",
                param="agent",
            )
        return spec
    try:
        return _inline(service, body.spec, body.variables)
    except SpecError as exc:
        param = f"{INLINE}.{exc.key}" if exc.key else INLINE
        raise bad_request(exc.message, param) from None


def _inline(service: Service, value: Any, variables: dict[str, Any]) -> AgentSpec:
    """An inline agent, checked as ``agentos run`` checks an agent of a file."""
    from agentos.agents.team import check_team_members
    from agentos.spec.crosscheck import check_agents_against_config
    from agentos.tools.registry import check_agent_tools

    one = load_agent_value(
        value,
        source=INLINE,
        variables=variables,
        no_value_hint="give it in 'variables', or set it under 'vars' of the spec",
    )
    (spec,) = one.agents
    if spec.kind == "task":
        raise one.error(
            spec.name,
            ("kind",),
            "an inline agent cannot be a task agent (it would name Python code for this "
            "machine to run); put it in the served agents file and start it by name",
        )
    for index, name in enumerate(spec.tools):
        if ":" in name:
            raise one.error(
                spec.name,
                ("tools", index),
                f"an inline agent may use built-in tools only, not the user tool '{name}' "
                "(Python code for this machine to run); put the agent in the served agents "
                "file and start it by name",
            )
    check_agents_against_config(one, service.config)
    if spec.kind == "team":
        # members are agents of the served file; the team itself is the inline one
        served = service.agents
        others = [a for a in served or [] if a.name != spec.name]
        with_file = AgentsFile(
            path=served.path if served is not None else Path(INLINE),
            agents=[spec, *others],
            locators=one.locators,
        )
        check_team_members(with_file)
    check_agent_tools(one, config=service.config.tools)
    return spec


def _check_priority(service: Service, caller: Client, spec: AgentSpec) -> None:
    """A client key's ``priority`` is a ceiling for runs too: its runs' jobs may not go
    before its own class (403), as its OpenAI requests may not."""
    if caller.ceiling is None:
        return
    specs = [spec, *_members(service, spec)]
    for s in specs:
        if PRIORITY_RANK[s.priority] < caller.ceiling:
            raise ApiError(
                403,
                f"agent '{s.name}' has priority {s.priority}; {caller.process} may start runs "
                f"at priority {caller.priority} or lower",
                code="priority_not_allowed",
                param="spec.priority" if s is spec else None,
            )


def _members(service: Service, spec: AgentSpec) -> list[AgentSpec]:
    """A team's members (agents of the served file); none for other kinds."""
    if spec.kind != "team" or service.agents is None:
        return []
    return [m for m in service.agents if m.name in spec.members]


def _check_variables(service: Service, spec: AgentSpec, variables: dict[str, Any]) -> None:
    try:
        check_renderable([spec], variables, "the request")
    except SpecError as exc:
        raise bad_request(f"{exc.reason} (give it in 'variables')", "variables") from None


def _check_servable(service: Service, spec: AgentSpec, param: str | None) -> None:
    """The agent's model (a team's members' models too) is served by a configured
    engine: 400 when none offers it, 503 when the one that would is down."""
    specs = [spec, *_members(service, spec)]
    router = service.router
    for s in specs:
        try:
            router.check_servable(InferenceRequest(kind="chat", model=s.model), engine=s.engine)
        except NoEngineError as exc:
            pool = [router.engines[s.engine]] if s.engine in router.engines else []
            pool = pool or list(router.engines.values())
            down = s.engine in router.engines or s.engine is None
            if down and any(not e.healthy for e in pool):
                raise ApiError(503, f"agent '{s.name}': {exc.message}", code="no_engine") from None
            raise ApiError(
                400, f"agent '{s.name}': {exc.message}", code="model_not_served", param=param
            ) from None
