"""agents.yaml: the agents a user describes, loaded into :class:`AgentSpec` models.

Two spellings load and mean the same thing, and keys may be kebab-case or snake_case
everywhere (``response-format`` is ``response_format``):

- native: a list of agents, or a mapping ``{agents: [...]}``; each item an agent mapping
  or ``{agent: {...}}``; the life cycle nested as ``life_cycle: {type, length, ...}``;
- AgencyOS, loaded unchanged: ``- agent: {name, input-sink, prompt-based: {...}}``, where
  ``prompt-based`` means kind ``prompt`` and holds the agent's prompt keys, and
  ``life-cycle-type`` / ``life-cycle-length`` / ``life-cycle-*`` (in the agent or in
  ``prompt-based``) are the fields of ``life_cycle``.

Every problem is one :class:`~agentos.errors.SpecError` naming the file, the line and the
key path as written (``agent[0].prompt-based.response-format``). The dump of an agent,
``agent.model_dump(mode="json")``, is the snapshot stored with each run and validates back
into an equal :class:`AgentSpec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agentos.errors import SpecError
from agentos.spec.base import CanonPath, Locator, SpecModel, normalise_keys, snake, spec_error
from agentos.spec.response_format import check_json_schema, shape_to_json_schema
from agentos.spec.templates import template_variables
from agentos.spec.yamlsrc import RawPath, SourceDocument, load_yaml

Priority = Literal["system", "kernel", "user", "background"]

MAX_NAME_LENGTH = 200
"""Longest name of an agent, sink, engine, model, member or tool: names are shown in logs
and ``top`` and stored with every run; prompts and values have no such bound."""

Name = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH)]
"""A job's priority class."""

PRIORITY_ORDER: tuple[Priority, ...] = ("system", "kernel", "user", "background")
"""Priority classes from first served to last: system > kernel > user > background."""


def priority_rank(priority: Priority) -> int:
    """0 for ``system`` up to 3 for ``background``; lower ranks are served first."""
    return PRIORITY_ORDER.index(priority)


class RetryPolicy(SpecModel):
    """How one model request is retried on transient engine errors."""

    max_attempts: int = Field(default=3, ge=1)
    """Tries of one model request, the first included, when the engine fails transiently
    (timeouts, dropped connections, 5xx, 429)."""

    backoff_initial: float = Field(default=0.5, ge=0)
    """Seconds to wait before the first retry; each further wait doubles."""

    backoff_max: float = Field(default=30.0, ge=0)
    """Longest wait between two tries, in seconds."""

    jitter: float = Field(default=0.5, ge=0, le=1)
    """Fraction (0 to 1) of each wait that is randomised, so retries do not arrive in step."""

    @model_validator(mode="after")
    def _backoff_in_order(self) -> RetryPolicy:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) is below backoff_initial "
                f"({self.backoff_initial})"
            )
        return self


class Resources(SpecModel):
    """What one run asks of a Ray cluster's node (``agentos run --cluster``). A run with a
    request is a Ray task holding these while it goes, so CPU-bound runs spread over the
    nodes' cores; without one it runs in a node's shared run host. Ignored off a cluster."""

    num_cpus: float = Field(default=1, ge=0)
    """CPUs the run holds on its node."""

    num_gpus: float = Field(default=0, ge=0)
    """GPUs the run holds on its node."""

    memory_mb: int | None = Field(default=None, ge=1)
    """Memory the run is placed by, in MiB (Ray's ``memory`` resource)."""

    custom: dict[Name, float] = Field(default_factory=dict)
    """Custom Ray resources (a node started with ``--resources``), by name."""

    @field_validator("custom")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, amount in value.items() if amount <= 0]
        if bad:
            raise ValueError(f"amounts must be above 0; not so for {', '.join(bad)}")
        return value

    def ray_options(self) -> dict[str, Any]:
        """These as Ray task options."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_mb is not None:
            options["memory"] = self.memory_mb * 1024 * 1024
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


LifeCycleType = Literal["single-shot", "perpetual", "scheduled"]
OverlapPolicy = Literal["skip", "queue", "allow"]


class LifeCycle(SpecModel):
    """When an agent runs, and when one run of it is done."""

    type: LifeCycleType = "single-shot"
    """``single-shot``: one run until ``length`` good results, then stop. ``perpetual``: a
    run every ``every``, or one per item of the input sink as items arrive. ``scheduled``:
    a run at each time of the ``cron`` expression."""

    length: int = Field(default=1, ge=1)
    """Successful parsed results wanted from one run."""

    max_attempts: int | None = Field(default=None, ge=1)
    """Cap on attempts of one run, failed ones included; unset means 3 × ``length`` (at
    least 3)."""

    concurrency: int = Field(default=4, ge=1)
    """Attempts in flight at once."""

    every: str | None = None
    """``perpetual``: time between runs, e.g. ``30s``, ``5m``, ``1h``. Unset: a run whenever
    the input sink has items."""

    cron: str | None = None
    """``scheduled``: a cron expression (5 fields, e.g. ``0 9 * * mon-fri``)."""

    timezone: str | None = None
    """``scheduled``: the IANA time zone the cron expression is read in (e.g.
    ``Europe/Berlin``); unset means the machine's local time."""

    overlap: OverlapPolicy = "skip"
    """What a fire does while the previous run still goes: ``skip`` it, ``queue`` one run
    to start after, or ``allow`` runs side by side."""

    catch_up: bool = True
    """After downtime, run once for all the fires that were missed (they are coalesced
    into one); false: skip them."""

    @model_validator(mode="after")
    def _consistent(self) -> LifeCycle:
        if self.max_attempts is not None and self.max_attempts < self.length:
            raise ValueError(
                f"max_attempts ({self.max_attempts}) is below length ({self.length}), "
                "so the agent could never finish"
            )
        if self.type == "scheduled" and not self.cron:
            raise ValueError("a scheduled life cycle needs 'cron' (e.g. cron: '0 9 * * *')")
        if self.type != "scheduled" and (self.cron or self.timezone):
            raise ValueError("'cron' and 'timezone' belong to type: scheduled")
        if self.type != "perpetual" and self.every:
            raise ValueError("'every' belongs to type: perpetual")
        if self.cron:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"cron expression {self.cron!r} is not valid")
        if self.timezone:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if self.every:
            from agentos.router.cache import parse_duration

            try:
                parse_duration(self.every)
            except SpecError as exc:
                raise ValueError(exc.reason) from None
        return self

    @property
    def attempt_cap(self) -> int:
        """Attempts allowed in all: ``max_attempts``, or 3 × ``length`` and at least 3."""
        return self.max_attempts if self.max_attempts is not None else max(3, 3 * self.length)

    @property
    def every_s(self) -> float | None:
        if not self.every:
            return None
        from agentos.router.cache import parse_duration

        return parse_duration(self.every)


class Mention(SpecModel):
    """A team ends when one of ``sources`` says ``text``."""

    text: str = Field(min_length=1)
    """The words that end the conversation, e.g. ``APPROVED``."""

    sources: list[str] = Field(default_factory=list)
    """Members whose messages count; empty means every member (never the task itself)."""


class Termination(SpecModel):
    """When a team's conversation ends (whichever comes first)."""

    max_turns: int = Field(default=10, ge=1)
    """Messages in all, one per member's turn."""

    mention: Mention | None = None
    """A text that ends it when a named member says it."""

    token_budget: int | None = Field(default=None, ge=1)
    """Tokens spent by all members together."""

    timeout: str | None = None
    """Wall time, e.g. ``5m``."""


class Budget(SpecModel):
    """What an agent may spend per day (local time, midnight to midnight); when spent, it
    is paused until the next day, with the reason recorded.

    Counted from the record (``llm_calls`` of the agent since local midnight, as ``agentos
    usage`` counts them: cached answers are free) at each run's start, then answer by
    answer while the run goes. Spent mid-run: no new attempt starts, the attempts in
    flight finish, and a run short of its target ends ``cancelled`` with the reason."""

    tokens_per_day: int | None = Field(default=None, ge=1)
    """Prompt plus completion tokens per day."""

    cost_per_day: Decimal | None = Field(default=None, gt=0)
    """Money per day, in ``pricing.currency`` of config.yaml (calls with no price count
    as 0 here; ``agentos usage`` lists them)."""

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.tokens_per_day is None and self.cost_per_day is None:
            raise ValueError("a budget needs tokens_per_day or cost_per_day")
        return self


class AgentSpec(SpecModel):
    """One agent as described in agents.yaml."""

    name: Name = Field(min_length=1)
    """The agent's name, unique in its file; runs and `--agent` refer to it."""

    kind: Literal["prompt", "planner", "task", "team"] = "prompt"
    """What the agent is: ``prompt`` renders a prompt, asks a model and parses the answer
    (the AgencyOS ``prompt-based:`` block means this kind); ``planner`` turns its prompt (a
    request) into a plan of tool steps and runs it; ``task`` calls a Python function
    (``run``); ``team`` lets ``members`` take turns on its prompt."""

    prompt: str | None = Field(default=None, validate_default=True)
    """The prompt, a Jinja2 template: ``{{ var }}`` is filled from ``vars`` and from the
    items of ``input_sink``. Required for prompt, planner and team agents."""

    system: str | None = None
    """System message sent before the prompt; a template like ``prompt``."""

    vars: dict[str, Any] = Field(default_factory=dict)
    """Values for the template variables; items of ``input_sink`` add to and override them."""

    response_format: dict[str, Any] | list[Any] | None = None
    """The answer wanted: a shape written by example (keys with descriptions, ``[x]`` for
    lists) or a JSON Schema. Unset means plain text."""

    life_cycle: LifeCycle = Field(default_factory=LifeCycle)
    """When the agent is done (AgencyOS: ``life-cycle-type``, ``life-cycle-length``)."""

    engine: Name | None = None
    """Name of the engine in config.yaml to use; unset means any engine serving ``model``."""

    model: Name | None = None
    """Model name to ask for; unset means the engine's first model."""

    temperature: float = Field(default=0.7, ge=0, le=2)
    """Sampling temperature, 0 to 2."""

    max_tokens: int = Field(default=512, ge=1)
    """Most tokens a model may generate for one answer."""

    priority: Priority = "user"
    """Priority class of the agent's jobs: ``system`` > ``kernel`` > ``user`` > ``background``."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Retries of one model request on transient engine errors."""

    input_sink: Name | None = None
    """Sink whose items start this agent's runs: each item is one run, its fields the
    template variables (with ``vars`` as defaults)."""

    output_sink: Name | None = None
    """Sink that receives each result, as an item for the agents that read it."""

    cache: bool = True
    """Look requests up in the response cache before asking an engine."""

    tools: list[Name] = Field(default_factory=list)
    """Tools the agent may call: built-in names (``calculator``, ``file_writer``, ``todo``,
    ``http_get``, ``web_fetch``, ``web_search``, ``memory_search``) or
    ``package.module:function``."""

    run: str | None = Field(default=None, validate_default=True)
    """``task``: the Python callable to run, ``package.module:function``."""

    args: dict[str, Any] = Field(default_factory=dict)
    """``task``: keyword arguments for ``run``."""

    members: list[Name] = Field(default_factory=list)
    """``team``: the agents (of this file) that take turns, in order."""

    termination: Termination = Field(default_factory=Termination)
    """``team``: when the conversation ends."""

    max_replans: int = Field(default=2, ge=0)
    """``planner``: new plans asked for when a plan does not validate."""

    resources: Resources | None = None
    """On a Ray cluster (``agentos run --cluster``): what each run holds on its node, e.g.
    ``{num_cpus: 1}`` for a CPU-bound task agent; unset runs share a node's run host."""

    budget: Budget | None = None
    """Tokens or money per day; spent, the agent pauses until the next day."""

    @field_validator("prompt")
    @classmethod
    def _prompt_for_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind", "prompt")
        if value is None and kind in ("prompt", "planner", "team"):
            raise ValueError(f"missing required key 'prompt' (a {kind} agent needs one)")
        return value

    @field_validator("run")
    @classmethod
    def _run_for_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind", "prompt")
        if kind == "task" and (not value or ":" not in value):
            raise ValueError("a task agent needs 'run: package.module:function'")
        if kind != "task" and value is not None:
            raise ValueError("'run' belongs to task agents (kind: task)")
        return value

    @model_validator(mode="after")
    def _kind_has_what_it_needs(self) -> AgentSpec:
        if self.kind == "team" and len(self.members) < 1:
            raise ValueError("a team agent needs 'members' (agents of this file)")
        if self.kind != "team" and self.members:
            raise ValueError("'members' belongs to team agents (kind: team)")
        if self.life_cycle.type == "perpetual" and not (self.life_cycle.every or self.input_sink):
            raise ValueError(
                "a perpetual agent needs life_cycle.every, or an input_sink whose items start "
                "its runs"
            )
        return self

    @field_validator("engine", "model", "input_sink", "output_sink")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("should not be empty; leave the key out instead")
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _valid_format(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict | list):
            raise ValueError(
                "should be a shape (a mapping or list written by example) or a JSON Schema"
            )
        if value is not None:
            try:
                check_json_schema(shape_to_json_schema(value))
            except SpecError as exc:
                raise ValueError(exc.reason) from None
        return value

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema answers must match, or ``None`` when plain text is wanted."""
        if self.response_format is None:
            return None
        return shape_to_json_schema(self.response_format)


@dataclass(frozen=True)
class AgentsFile:
    """The agents of one agents.yaml, in file order, with a lookup by name.

    ``locators`` (one per agent, when loaded from a file) let later checks point at the
    line of an agent's key; see :meth:`error`.
    """

    path: Path
    agents: list[AgentSpec]
    locators: tuple[Locator, ...] = field(default=(), repr=False, compare=False)

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self.agents)

    def __len__(self) -> int:
        return len(self.agents)

    def __getitem__(self, name: str) -> AgentSpec:
        agent = self.get(name)
        if agent is None:
            known = ", ".join(a.name for a in self.agents) or "none"
            raise KeyError(f"no agent named '{name}' in {self.path} (agents: {known})")
        return agent

    def get(self, name: str) -> AgentSpec | None:
        """The agent called ``name``, or ``None``."""
        return next((agent for agent in self.agents if agent.name == name), None)

    @property
    def names(self) -> list[str]:
        """The agents' names in file order."""
        return [agent.name for agent in self.agents]

    def error(self, name: str, key: CanonPath, message: str) -> SpecError:
        """A :class:`SpecError` about ``key`` (a model path) of agent ``name``."""
        index = self.names.index(name)
        if index < len(self.locators):
            locator = self.locators[index]
            return locator.error(message, locator.raw_path(key))
        return SpecError(message, file=str(self.path), key=".".join(map(str, key)) or None)


def load_agents(path: str | Path) -> AgentsFile:
    """Load and check an agents file; every problem raises one :class:`SpecError`."""
    path = Path(path)
    doc = load_yaml(path)
    items = _agent_items(doc)
    agents: list[AgentSpec] = []
    locators: list[Locator] = []
    seen: dict[str, Locator] = {}
    for root, label in items:
        locator = Locator(doc, root=root, label=label)
        value = _lookup(doc.data, root)
        if not isinstance(value, dict):
            raise locator.error(
                "each item should be an agent mapping (name, prompt, ...) or 'agent: {...}'",
                root,
            )
        agent = _validated(value, locator)
        if agent.name in seen:
            first = seen[agent.name]
            raise locator.error(
                f"agent name '{agent.name}' is already used at line "
                f"{doc.line_of(first.raw_path(('name',)))}; names must be unique",
                locator.raw_path(("name",)),
            )
        seen[agent.name] = locator
        _check_templates(agent, locator)
        agents.append(agent)
        locators.append(locator)
    return AgentsFile(path=path, agents=agents, locators=tuple(locators))


_NO_VALUE_HINT = "set it under 'vars', or give the agent an input-sink whose items supply it"


def load_agent_value(
    value: Any,
    *,
    source: str,
    variables: Iterable[str] = (),
    no_value_hint: str = _NO_VALUE_HINT,
) -> AgentsFile:
    """One agent given as a value instead of a file (an inline agent of ``agentos
    serve``'s ``POST /runs``), checked as :func:`load_agents` checks each agent of a file.

    Errors name ``source`` and the key path (no line: there is no file). ``variables``:
    the names the run supplies, which templates may read without a ``vars`` default;
    ``no_value_hint``: what the error for a variable without a value tells to do.
    """
    doc = SourceDocument(file=source, data=value, lines={}, nodes={}, text_lines=())
    locator = Locator(doc)
    if not isinstance(value, dict):
        raise SpecError("should be an agent mapping (name, prompt, ...)", file=source)
    agent = _validated(value, locator)
    _check_templates(agent, locator, supplied=variables, hint=no_value_hint)
    return AgentsFile(path=Path(source), agents=[agent], locators=(locator,))


def _validated(value: dict[str, Any], locator: Locator) -> AgentSpec:
    data = _normalise_agent(value, locator)
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, AgentSpec, locator, show_inputs=True) from None


def _agent_items(doc: SourceDocument) -> list[tuple[RawPath, tuple[RawPath, str] | None]]:
    """The raw path of each agent mapping, and its display label for AgencyOS items."""
    data = doc.data
    top = Locator(doc)
    if data is None:
        raise SpecError("file is empty; it should list agents", file=doc.file)
    prefix: RawPath = ()
    if isinstance(data, dict):
        for key in data:
            if key != "agents":
                raise top.error(f"unknown key '{key}'; allowed keys: agents", (key,))
        if "agents" not in data:
            raise top.error("should be a list of agents, or a mapping with an 'agents' key", ())
        data, prefix = data["agents"], ("agents",)
    if not isinstance(data, list):
        raise top.error("should be a list of agents", prefix)
    if not data:
        raise top.error("no agents are defined", prefix)
    items: list[tuple[RawPath, tuple[RawPath, str] | None]] = []
    for index, item in enumerate(data):
        raw = (*prefix, index)
        if isinstance(item, dict) and "agent" in item:
            if len(item) > 1:
                others = ", ".join(k for k in item if k != "agent")
                raise top.error(
                    f"'agent:' should be the only key of its item (also given: {others})", raw
                )
            label = None if prefix else ((index, "agent"), f"agent[{index}]")
            items.append(((*raw, "agent"), label))
        else:
            items.append((raw, None))
    return items


def _lookup(data: Any, path: RawPath) -> Any:
    for segment in path:
        data = data[segment]
    return data


def _normalise_agent(value: dict[str, Any], locator: Locator) -> dict[str, Any]:
    """The agent's keys in model form: snake_case, ``prompt-based`` and life-cycle flattened.

    Records in ``locator`` where each model key was written, so errors point there.
    """
    result: dict[str, Any] = {}
    flat_cycle: list[tuple[str, Any, RawPath]] = []
    prompt_based: RawPath | None = None

    def put(name: str, item: Any, raw: RawPath) -> None:
        if name.startswith("life_cycle_"):
            flat_cycle.append((name.removeprefix("life_cycle_"), item, raw))
            return
        if name in result:
            raise locator.duplicate(locator.origin[(name,)], raw)
        locator.origin[(name,)] = raw
        member = AgentSpec.model_fields.get(name)
        annotation = None if member is None else member.annotation
        result[name] = normalise_keys(item, annotation, raw, (name,), locator)

    for key, item in value.items():
        raw = (*locator.root, key)
        if snake(key) != "prompt_based":
            put(snake(key), item, raw)
            continue
        if not isinstance(item, dict):
            raise locator.error(
                "should be a mapping of the agent's prompt keys (prompt, response-format, ...)",
                raw,
            )
        prompt_based = raw
        for inner_key, inner_item in item.items():
            put(snake(inner_key), inner_item, (*raw, inner_key))
    if prompt_based is not None and "kind" not in result:
        result["kind"] = "prompt"
        locator.origin[("kind",)] = prompt_based
    if flat_cycle:
        cycle = result.setdefault("life_cycle", {})
        locator.origin.setdefault(("life_cycle",), flat_cycle[0][2])
        if isinstance(cycle, dict):
            for name, item, raw in flat_cycle:
                if name in cycle:
                    raise locator.duplicate(locator.origin[("life_cycle", name)], raw)
                cycle[name] = item
                locator.origin[("life_cycle", name)] = raw
    return result


def _check_templates(
    agent: AgentSpec,
    locator: Locator,
    *,
    supplied: Iterable[str] = (),
    hint: str = _NO_VALUE_HINT,
) -> None:
    """Both templates parse, and each variable they read has a value at run time.

    Variables come from ``vars`` (and ``supplied``, what the caller gives every run); an
    agent with an ``input_sink`` gets the rest from the sink's items, which are only known
    at run time.
    """
    for name in ("system", "prompt"):
        template = getattr(agent, name)
        if template is None:
            continue
        raw = locator.raw_path((name,))
        try:
            variables = template_variables(template)
        except jinja2.TemplateSyntaxError as exc:
            raise locator.error(
                f"template does not parse: {exc.message}",
                raw,
                line=_template_line(locator, raw, template, exc.lineno),
            ) from None
        if agent.input_sink is not None:
            continue
        known = {*agent.vars, *supplied}
        if agent.life_cycle.type == "scheduled":
            known.add("fire_time")  # every fire sets it: the ISO time of the fire
        for variable, line in variables:
            if variable not in known:
                raise locator.error(
                    f"template variable '{variable}' has no value: {hint}",
                    raw,
                    line=_template_line(locator, raw, template, line),
                )


def _template_line(locator: Locator, raw: RawPath, template: str, line: int) -> int | None:
    """The file line of line ``line`` (1-based) of a template written at ``raw``."""
    offset = 0
    for _ in range(max(line, 1) - 1):
        newline = template.find("\n", offset)
        if newline < 0:
            break
        offset = newline + 1
    found = locator.doc.value_line(raw, offset)
    return found if found is not None else locator.doc.line_of(raw)
