"""What every kind of agent run shares: the context it runs in, and the shape the
scheduler, the dashboard's controls and replay expect of it.

A run object is created per run by ``registry.make_run`` from the agent's spec and a
``RunContext``; the scheduler awaits ``run()`` and reads the counters while it goes
(``top`` shows them). Kinds: ``prompt.PromptAgentRun``, ``planner.PlannerRun``,
``task.TaskRun``, ``team.TeamRun``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.store import Store


class ModelRouter(Protocol):
    """What an agent needs of a router: ``Router``, or replay's record-serving stand-in."""

    async def submit(
        self,
        request: InferenceRequest,
        *,
        priority: str = "user",
        engine: str | None = None,
        retry: RetryPolicy | None = None,
        run_id: str | None = None,
        process: str = "",
        job_id: str | None = None,
        use_cache: bool = True,
        deadline_s: float | None = None,
    ) -> Completion: ...

    def reject(self, completion: Completion) -> None:
        """The agent's parser refused ``completion``: do not serve it from a cache again."""
        ...


class AgentRun(Protocol):
    """One run of one agent, of any kind."""

    spec: AgentSpec
    run_id: str
    status: str
    successes: int
    failed_attempts: int
    attempts: int
    sample_base: int

    @property
    def agent(self) -> str: ...

    @property
    def state(self) -> str: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def cancel(self, reason: str) -> None: ...

    async def run(self) -> RunOutcome: ...


ResultHook = Callable[[AgentSpec, str, Any], None]
"""Called with (agent spec, run id, result) for every result a run records."""


@dataclass
class RunContext:
    """Everything a run may use besides its spec; one per runtime, shared by its runs.

    ``tools`` and ``sinks`` are the tool registry and sink store of the runtime (None where
    a runtime has none, e.g. an exact replay); ``on_result`` hooks see every recorded
    result (publishing to output sinks is one).
    """

    router: ModelRouter
    store: Store
    display: Display
    agents_file: str | None = None
    agents: AgentsFile | None = None
    tools: Any = None
    sinks: Any = None
    config: Any = None
    memory: Any = None
    """Semantic memory (``agentos.memory.Memory``) when an engine serves embeddings."""
    on_result: list[ResultHook] = field(default_factory=list)

    def result(self, spec: AgentSpec, run_id: str, data: Any) -> None:
        for hook in self.on_result:
            hook(spec, run_id, data)


class RunControls:
    """The controls every run kind shares (``top``'s pause/resume/cancel, the agent's
    name and state, event recording). A subclass sets ``spec``, ``status``, ``paused``,
    ``cancel_reason``, ``_task`` (the task of ``run()``), ``_events`` and ``_resumed``
    (set while not paused); kinds that wait on something else override pause/resume."""

    spec: AgentSpec
    status: str
    paused: bool
    cancel_reason: str | None
    _task: Any
    _events: Any
    _resumed: Any

    sample_base: int = 0
    """Added to attempt numbers to make sample indices (:mod:`agentos.scheduler.samples`)."""

    def sample(self, number: int) -> int:
        """The sample index that attempt (or turn) ``number`` of this run asks for."""
        return self.sample_base + number

    @property
    def agent(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        if self.status == "running" and self.paused:
            return "paused"
        return self.status

    def pause(self) -> None:
        """Start no new work (what is under way finishes) until ``resume``."""
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    def cancel(self, reason: str) -> None:
        """End the run now, as ``cancelled`` with ``reason``; work in flight is dropped."""
        if self._task is not None and not self._task.done():
            self.cancel_reason = reason
            self._task.cancel()

    def event(self, type_: str, **payload: Any) -> None:
        assert self._events is not None
        self._events.add(type_, payload)


def retry_policy(spec: AgentSpec) -> RetryPolicy:
    """The router's retry policy for an agent's model requests, from its ``retry:``."""
    r = spec.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        backoff_initial=r.backoff_initial,
        backoff_max=r.backoff_max,
        jitter=r.jitter,
    )
