"""What every kind of agent run shares: the context it runs in, and the shape the
scheduler, the dashboard's controls and replay expect of it.

A run object is created per run by ``registry.make_run`` from the agent's spec and a
``RunContext``; the scheduler awaits ``run()`` and reads the counters while it goes
(``top`` shows them). Kinds: ``prompt.PromptAgentRun``, ``planner.PlannerRun``,
``task.TaskRun``, ``team.TeamRun``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from agentos.errors import AgentosError
from agentos.router.jobs import Completion, InferenceRequest, RetryPolicy
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.store import Store, queries


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


OutcomeT = TypeVar("OutcomeT", bound=RunOutcome)


class RecordedRun(RunControls, Generic[OutcomeT]):
    """The life-cycle every run kind shares: open the run's row, do the kind's work,
    finish the run; a kind supplies the work (:meth:`_body`) and what differs around it.

    :meth:`run` is the whole life-cycle:

    1. ``_prepare`` (the kind's work before the row exists: rendering the prompt, say; an
       error here is raised and nothing is recorded);
    2. the ``runs`` row is created (``status`` becomes ``running``), the ``run_started``
       event recorded with ``_started()`` as its payload (a kind that returns None records
       its own), and the display told;
    3. ``_body()`` runs: None when the run succeeded, else its error. An ``AgentosError``
       from it fails the run with ``_run_error(exc)`` as the error;
    4. the run is finished whatever happened: the ``run_finished`` event (with
       ``_finished()``'s fields), ``finish_run``, the outcome (``_outcome``) and the
       display's line. A cancel ends it as ``cancelled`` with ``cancel_reason``, or
       ``interrupted`` for a cancel from outside (Ctrl-C), which is raised on afterwards;
       ``cancel(reason)`` (``top``) is not, and ``run()`` returns the outcome.

    The invariant: once the row exists, the run is finished. That holds also for a cancel
    that lands while the row is being created: the row is written in a worker thread,
    which goes on whatever happens to the task waiting for it, so the cancel waits for the
    row and then ends the run as ``cancelled`` like any other, rather than leave a row
    ``running`` (with no events) that nothing will ever finish.

    A subclass sets what :class:`RunControls` asks for, ``store``, ``display``, ``cap``,
    the counters and, where they apply, ``wanted``, ``agents_file`` and ``forked_from``.
    """

    store: Store
    display: Display
    run_id: str
    successes: int
    attempts: int
    failed_attempts: int
    cap: int
    """The most attempts the run makes (turns, for a team), as the display shows it."""
    wanted: int = 1
    """Results the run wants (the target shown, and stored as the row's ``wanted``)."""
    agents_file: str | None = None
    forked_from: str | None = None
    seeded: tuple[int, str | None] | None = None
    """Set (with ``run_id``) for a run whose row another process created and committed (a
    cluster's driver): its last event ``(seq, hash)``; the run then creates no row and
    reads nothing to start its events."""

    async def run(self) -> OutcomeT:
        self._task = asyncio.current_task()
        self._prepare()
        interrupted = await self._open()
        status: queries.RunStatus = "failed"
        error: str | None = None
        try:
            if interrupted is not None:
                raise interrupted
            error = await self._body()
            if error is None:
                status = "succeeded"
        except asyncio.CancelledError:
            status = "cancelled"
            error = self.cancel_reason or "interrupted"
            if self.cancel_reason is None:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except AgentosError as exc:
            error = self._run_error(exc)
        finally:
            outcome = self._finish(status, error)
        return outcome

    # -- what a kind supplies ----------------------------------------------------------

    def _prepare(self) -> None:
        """The kind's work before its row exists (no await: nothing can land in it)."""

    def _started(self) -> dict[str, Any] | None:
        """The ``run_started`` event's payload; None for a kind that records its own."""
        return None

    async def _body(self) -> str | None:
        """The kind's work once the run is open: None when it succeeded, else its error."""
        raise NotImplementedError

    def _run_error(self, exc: AgentosError) -> str:
        """The run's error for ``exc`` raised by ``_body`` (recorded as an ``error`` event)."""
        self.event("error", error=exc.message, error_class=type(exc).__name__)
        return exc.message

    def _finished(self, status: str) -> dict[str, Any]:
        """Fields of the ``run_finished`` event besides status, error and successes."""
        return {}

    def _outcome(self, status: str, error: str | None) -> OutcomeT:
        """How the run ended, as the scheduler, the display and the caller get it."""
        raise NotImplementedError

    # -- the life-cycle ------------------------------------------------------------------

    async def _open(self) -> asyncio.CancelledError | None:
        """Create the run's row and start recording; the cancel that landed meanwhile.

        The row is written in a worker thread, which a cancel (Ctrl-C) does not stop: the
        row is waited for, so that it is there to be finished, and the cancel handed back
        to end the run once it is open. An error creating the row is raised (no row, so
        nothing to finish). A run with ``seeded`` has its row already.
        """
        if self.seeded is not None:
            self._events = queries.RunEvents(self.store, self.run_id, seeded=self.seeded)
            return self._opened(None)
        creating = asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                queries.create_run,
                self.store,
                agent=self.spec.name,
                kind=self.spec.kind,
                spec=self.spec.model_dump(mode="json"),
                wanted=self.wanted,
                agents_file=self.agents_file,
                forked_from=self.forked_from,
            ),
        )
        interrupted: asyncio.CancelledError | None = None
        while True:
            try:
                self.run_id = await asyncio.shield(creating)
                break
            except asyncio.CancelledError as exc:
                if creating.cancelled():
                    raise
                interrupted = exc
        self._events = queries.RunEvents(self.store, self.run_id)
        return self._opened(interrupted)

    def _opened(self, interrupted: asyncio.CancelledError | None) -> asyncio.CancelledError | None:
        self.status = "running"
        started = self._started()
        if started is not None:
            self.event("run_started", **started)
        self.display.run_started(self.run_id, self.spec.name, self.wanted, self.cap)
        return interrupted

    def _finish(self, status: queries.RunStatus, error: str | None) -> OutcomeT:
        self.status = status
        self.event(
            "run_finished",
            status=status,
            error=error,
            successes=self.successes,
            **self._finished(status),
        )
        queries.finish_run(
            self.store,
            self.run_id,
            status=status,
            error=error,
            successes=self.successes,
            attempts=self.attempts,
        )
        outcome = self._outcome(status, error)
        self.display.run_finished(outcome)
        return outcome


def retry_policy(spec: AgentSpec) -> RetryPolicy:
    """The router's retry policy for an agent's model requests, from its ``retry:``."""
    r = spec.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        backoff_initial=r.backoff_initial,
        backoff_max=r.backoff_max,
        jitter=r.jitter,
    )
