"""What ``POST /runs`` asks for, and whether it may start.

The body is read after the client check and bounded as agents.yaml is (at most 1 MiB,
lists and objects nested at most 64 deep), then validated as :class:`RunRequest`. Before
anything starts, the request is checked as ``agentos run`` checks an agents file: an
inline agent with :func:`~agentos.spec.agents.load_agent_value` (errors name the key, as
``spec.KEY``), its engine and model against config.yaml, its team members against the
served file and its tools against the registry; a client key's ``priority`` is a ceiling
for the agent's (and a team's members') priority, as for its OpenAI requests (403); the
variables render; a configured engine serves the model (400, or 503 when the engine that
would serve it is down).

An inline agent may use the built-in tools only, and may not be a task agent: a client's
key must not let it name Python code for this machine to run (user tools and task
callables come from the served agents file, which its owner wrote).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request

from agentos.errors import NoEngineError, SpecError
from agentos.router.jobs import PRIORITY_RANK, InferenceRequest
from agentos.scheduler.fires import cron_series
from agentos.scheduler.lifecycle import FIRE_TIME_VARIABLE
from agentos.scheduler.runner import check_renderable
from agentos.serve.clients import Client
from agentos.serve.errors import ApiError, bad_request
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


async def read_body(request: Request) -> RunRequest:
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
        raise invalid(list(exc.errors())) from None


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


def invalid(errors: list[Any]) -> ApiError:
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


def checked_run(
    service: Service, caller: Client, body: RunRequest
) -> tuple[AgentSpec, dict[str, Any]]:
    """The agent ``body`` asks to run and the run's variables, once it may start (module
    docstring); else the :class:`ApiError` that says why not.

    A scheduled agent's run gets ``fire_time`` (as a fire of now would label it) unless
    the request gives one: its prompt may read it, and this run is for the present.
    """
    spec = _spec_of(service, body)
    variables = dict(body.variables)
    if spec.life_cycle.type == "scheduled" and FIRE_TIME_VARIABLE not in variables:
        variables[FIRE_TIME_VARIABLE] = cron_series(spec).label(time.time())
    _check_priority(service, caller, spec)
    _check_variables(service, spec, variables)
    _check_servable(service, spec, "spec.model" if body.spec is not None else None)
    return spec, variables


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
    """The prompts render with ``variables``; a sink reader's too, since a run over HTTP
    gets no sink item (``check_renderable`` leaves those to their items)."""
    checked = spec.model_copy(update={"input_sink": None}) if spec.input_sink else spec
    try:
        check_renderable([checked], variables, "the request")
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
