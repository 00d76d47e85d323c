"""Task agents: a Python callable (``run: package.module:function``), run with tracking.

One :class:`TaskRun` is one run of the agent for one *period*: it calls the function with
the agent's ``args`` as keyword arguments (plus ``context``, a :class:`TaskContext`, when
the function takes a parameter of that name or ``**kwargs``), and stores what it returns.
The life-cycle (single-shot, perpetual, scheduled) belongs to the scheduler, which creates
one run per fire; this module is what one fire does.

The collector pattern. A task returns its results: a list of items, one item (a dict), or
None. Each item is stored in ``task_results`` under (agent, period, item key), where the
key is the item's ``id`` field when it has one and else a hash of the item; that triple is
unique in the database, so running the task again for the same period stores nothing a
second time, also when the two runs are in different processes (a daemon and a ``cron``
call). Only the items that are new for the period become results of the run
(``results`` table) and go to the runtime's result hooks (output sinks); how many were new
and how many were already there is in the run's ``results`` event and its
:class:`TaskOutcome`.

The period (``task_results.task_period``) is the ``period`` variable, else the
``fire_time`` variable the scheduler sets, else the date the run started.

Retries. An exception from the function is one failed attempt, recorded as an ``error``
event with a traceback summary; the function is called again after a backoff, up to the
agent's ``retry.max_attempts`` tries in all, and the run then fails with the last error.
A function should therefore be safe to call again. Errors retrying cannot help are not
retried: a callable that cannot be imported or called with ``args``, an unusable return
value, and :class:`~agentos.errors.NoEngineError` from ``context.ask``. State written by a
failed attempt stays written.

Cancelling a run whose function is a plain (sync) function ends the run at once, but the
function goes on in its worker thread until it returns (Python cannot stop a thread);
an ``async`` function is cancelled where it awaits.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentos.agents.base import RecordedRun, RunContext, retry_policy
from agentos.agents.loading import load_callable
from agentos.agents.state import AgentState
from agentos.agents.task_results import item_key, result_items, task_period
from agentos.errors import AgentosError, NoEngineError, SpecError
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.scheduler.display import RunOutcome
from agentos.spec.agents import AgentSpec
from agentos.store import queries
from agentos.store.writer import Atomic, Execute, Update

TRACEBACK_FRAMES = 8
"""Innermost frames of a failed attempt's traceback kept in its ``error`` event."""

TRACEBACK_CHARS = 4000
"""Most characters of a traceback summary kept in an event."""

EVENT_KEYS = 50
"""Most item keys listed in a ``results`` event (the counts are always complete)."""

_INSERT_ITEM = (
    "INSERT OR IGNORE INTO task_results (agent, period, item_key, data, run_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass
class TaskOutcome(RunOutcome):
    """How one task run ended, with what it stored for its period."""

    period: str = ""
    new_results: int = 0
    """Items stored by this run (new for the period)."""
    duplicate_results: int = 0
    """Items the function returned that the period already had (or that repeated a key)."""


class TaskContext:
    """What a task's function gets as ``context``: its run, period, state and the model.

    ``ask`` (async) and ``ask_sync`` (from a plain function, which runs in a worker
    thread) ask the agent's model through the router, with the agent's priority, engine,
    model, temperature, token limit, retry policy and cache setting; every question and
    answer is an event of the run. ``log`` adds a ``log`` event and shows the line.
    """

    def __init__(self, run: TaskRun, attempt: int) -> None:
        self._run = run
        self._asks = 0
        self.agent: str = run.spec.name
        self.run_id: str = run.run_id
        self.period: str = run.period
        self.attempt: int = attempt
        """1 for the first call of the function, 2 for its first retry, …"""
        self.state: AgentState = run.agent_state
        self.variables: dict[str, Any] = dict(run.variables)
        """The agent's ``vars``, overridden by the run's variables (sink item fields,
        ``period``, ``fire_time``)."""
        self.base_dir: Path | None = run.base_dir
        """The agents file's folder (relative paths in ``args`` are usually meant from
        there); None when the agents were not loaded from a file."""

    async def ask(
        self,
        prompt: str,
        *,
        system: str | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The model's answer (text) to ``prompt``; ``json_schema`` asks for JSON."""
        self._asks += 1
        return await self._run.ask(
            self.attempt,
            self._asks,
            prompt,
            system=system,
            json_schema=json_schema,
            temperature=temperature,
            max_tokens=max_tokens,
        )

    def ask_sync(
        self,
        prompt: str,
        *,
        system: str | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """:meth:`ask` for a plain function: waits in its worker thread for the answer."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "context.ask_sync() blocks; in an async function use `await context.ask(...)`"
            )
        question = self.ask(
            prompt,
            system=system,
            json_schema=json_schema,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        assert self._run.loop is not None
        return asyncio.run_coroutine_threadsafe(question, self._run.loop).result()

    def log(self, message: str, **fields: Any) -> None:
        """Record ``message`` (and ``fields``, made JSON with ``str`` where they are not)
        as a ``log`` event of the run, and show it."""
        payload = {**_jsonable(fields), "attempt": self.attempt, "message": str(message)}
        self._run.event("log", **payload)
        self._run.show(f"run {self.run_id} {self.agent}: {message}")


class TaskRun(RecordedRun[TaskOutcome]):
    """One run of one task agent for one period, recorded in the store as it happens."""

    def __init__(
        self, spec: AgentSpec, context: RunContext, *, variables: dict[str, Any] | None = None
    ) -> None:
        if spec.kind != "task" or not spec.run:
            raise ValueError(f"agent '{spec.name}' is not a task agent")
        self.spec = spec
        self.context = context
        self.store = context.store
        self.display = context.display
        self.agents_file = context.agents_file
        self.variables: dict[str, Any] = {**spec.vars, **(variables or {})}
        self.base_dir = _base_dir(context)
        self.agent_state = AgentState(context.store, spec.name)
        self.cap = spec.retry.max_attempts
        self.retry = retry_policy(spec)
        self.run_id = ""
        self.period = ""
        self.status = "starting"
        self.successes = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.new_results = 0
        self.duplicate_results = 0
        self.paused = False
        self.cancel_reason: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop the run goes on (set when it starts)."""
        self._task: asyncio.Task[TaskOutcome] | None = None
        self._events: queries.RunEvents | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()

    # -- the run's life-cycle (RecordedRun) ----------------------------------------------

    def _prepare(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.period = task_period(self.spec, self.variables, time.time())

    def _started(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "run": self.spec.run,
            "args": self.spec.args,
            "attempt_cap": self.cap,
            "variables": _jsonable(self.variables),
        }

    async def _body(self) -> str | None:
        return await self._attempts()

    def _finished(self, status: str) -> dict[str, Any]:
        return {
            "period": self.period,
            "new_results": self.new_results,
            "duplicate_results": self.duplicate_results,
        }

    def _outcome(self, status: str, error: str | None) -> TaskOutcome:
        return TaskOutcome(
            run_id=self.run_id,
            agent=self.spec.name,
            status=status,
            wanted=1,
            successes=self.successes,
            attempts=self.attempts,
            error=error,
            period=self.period,
            new_results=self.new_results,
            duplicate_results=self.duplicate_results,
        )

    # -- recording -------------------------------------------------------------------

    def show(self, text: str) -> None:
        """A line for the display, from the event loop or from the function's thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop is None:
            self.display.message(text)
        else:
            self.loop.call_soon_threadsafe(self.display.message, text)

    # -- the attempts ----------------------------------------------------------------

    async def _attempts(self) -> str | None:
        """Call the function until it succeeds or the retries are spent; the run's error,
        or None when it succeeded."""
        try:
            function = load_callable(
                self.spec.run or "",
                self.base_dir,
                agent=self.spec.name,
                file=self.context.agents_file,
            )
            _arguments(self.spec, function, None)
        except SpecError as exc:
            self.event("error", attempt=0, error=exc.message, error_class="SpecError")
            return exc.message
        last_error = "no attempt was made"
        while self.attempts < self.cap:
            await self._resumed.wait()
            self.attempts += 1
            number = self.attempts
            self.event("attempt_started", attempt=number)
            context = TaskContext(self, number)
            try:
                value = await _call(function, _arguments(self.spec, function, context))
            except (NoEngineError, SpecError) as exc:
                self._failed(number, exc)
                return exc.message
            except Exception as exc:
                last_error = self._failed(number, exc)
                if number >= self.cap:
                    break
                wait = _backoff(number, self.retry)
                self.event("retry", attempt=number, wait_s=round(wait, 3))
                await asyncio.sleep(wait)
                continue
            try:
                items = result_items(value, self.spec)
                await self.agent_state.aflush()
                await self._store(number, items)
            except Exception as exc:
                # not retried: the function did its work; storing what it returned failed
                return self._failed(number, exc)
            self.successes = 1
            self._progress()
            self.display.attempt_finished(
                self.run_id,
                self.spec.name,
                True,
                self.successes,
                number,
                f"period {self.period}: {self.new_results} new, "
                f"{self.duplicate_results} already stored",
            )
            return None
        return f"{last_error} (gave up after {self.attempts} attempts)"

    def _failed(self, number: int, exc: BaseException) -> str:
        """Record a failed attempt; the error as the run would report it."""
        message = exc.message if isinstance(exc, AgentosError) else f"{type(exc).__name__}: {exc}"
        self.failed_attempts += 1
        self.event(
            "error",
            attempt=number,
            error=message,
            error_class=type(exc).__name__,
            traceback=traceback_summary(exc),
        )
        self._progress()
        self.display.attempt_finished(
            self.run_id, self.spec.name, False, self.successes, number, message
        )
        return message

    def _progress(self) -> None:
        self.store.submit(
            Update("runs", self.run_id, {"successes": self.successes, "attempts": self.attempts})
        )

    async def _store(self, number: int, items: list[Any]) -> None:
        """Store the items that are new for the period; results and hooks get those only.

        The unique (agent, period, item_key) index decides what is new, also against a run
        in another process: every item is inserted with this run's id (INSERT OR IGNORE),
        and the rows that carry this run's id afterwards are the ones it stored.
        """
        unique: dict[str, Any] = {}
        encoded: dict[str, str] = {}
        for item in items:
            key = item_key(item)
            if key not in unique:
                unique[key] = item
                encoded[key] = json.dumps(item, ensure_ascii=False)
        now = time.time()
        ops = tuple(
            Execute(_INSERT_ITEM, (self.spec.name, self.period, key, text, self.run_id, now))
            for key, text in encoded.items()
        )
        if ops:
            self.store.submit(Atomic(ops))
            await self.store.aflush()
        ours = {
            row[0]
            for row in self.store.db.execute(
                "SELECT item_key FROM task_results WHERE agent = ? AND period = ? AND run_id = ?",
                [self.spec.name, self.period, self.run_id],
            )
        }
        new_keys = [key for key in unique if key in ours]
        old_keys = [key for key in unique if key not in ours]
        self.new_results = len(new_keys)
        self.duplicate_results = len(items) - len(new_keys)
        self.event(
            "results",
            attempt=number,
            period=self.period,
            new=self.new_results,
            duplicates=self.duplicate_results,
            new_keys=new_keys[:EVENT_KEYS],
            duplicate_keys=old_keys[:EVENT_KEYS],
        )
        for key in new_keys:
            item = unique[key]
            queries.record_result(self.store, self.run_id, f"{self.run_id}:{key}", item)
            self.context.result(self.spec, self.run_id, item)

    async def ask(
        self,
        attempt: int,
        turn: int,
        prompt: str,
        *,
        system: str | None,
        json_schema: dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> str:
        """One question to the agent's model, recorded like a prompt agent's step (the
        ``request``/``answer`` events and the job id ``run:attempt:turn``)."""
        spec = self.spec
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        request = InferenceRequest(
            kind="chat",
            model=spec.model,
            messages=messages,
            params={
                "temperature": spec.temperature if temperature is None else temperature,
                "max_tokens": spec.max_tokens if max_tokens is None else max_tokens,
            },
            json_schema=json_schema,
            sample=self.sample(attempt),
        )
        self.event("request", attempt=attempt, turn=turn, messages=messages)
        completion = await self.context.router.submit(
            request,
            priority=spec.priority,
            engine=spec.engine,
            retry=self.retry,
            run_id=self.run_id,
            process=spec.name,
            job_id=f"{self.run_id}:{attempt}:{turn}",
            use_cache=spec.cache,
        )
        self.event(
            "answer",
            attempt=attempt,
            turn=turn,
            call_id=completion.call_id,
            engine=completion.engine,
            model=completion.model,
            text=completion.text,
            latency_ms=round(completion.latency_ms, 2),
            tokens=completion.prompt_tokens + completion.completion_tokens,
        )
        return completion.text


# -- pieces ------------------------------------------------------------------------------


def traceback_summary(exc: BaseException) -> str:
    """The innermost frames and the error, as Python prints them, at most
    ``TRACEBACK_CHARS`` long (the end is kept: that is where the error is)."""
    summary = traceback.TracebackException.from_exception(exc, limit=-TRACEBACK_FRAMES)
    return "".join(summary.format())[-TRACEBACK_CHARS:]


def _backoff(attempts_made: int, policy: RetryPolicy) -> float:
    """Seconds before the next call: the router's exponential backoff with jitter
    (``backoff_initial * 2**(n-1)`` capped at ``backoff_max``, plus up to ``jitter`` of it)."""
    base = min(policy.backoff_max, policy.backoff_initial * 2 ** max(0, attempts_made - 1))
    return min(policy.backoff_max, base * (1.0 + policy.jitter * random.random()))


def _arguments(
    spec: AgentSpec, function: Callable[..., Any], context: TaskContext | None
) -> dict[str, Any]:
    """The keyword arguments of one call: ``args``, and ``context`` where the function
    takes it. Raises SpecError when the function cannot be called with them."""
    kwargs = dict(spec.args)
    if "context" in kwargs:
        raise SpecError(
            f"agent '{spec.name}': 'context' is passed by agentos; use another argument name",
            key="args.context",
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        kwargs["context"] = context
        return kwargs
    params = signature.parameters.values()
    if any(p.name == "context" or p.kind is p.VAR_KEYWORD for p in params):
        kwargs["context"] = context
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        given = ", ".join(sorted(spec.args)) or "none"
        raise SpecError(
            f"agent '{spec.name}': '{spec.run}' cannot be called with args ({given}): {exc}",
            key="args",
        ) from None
    return kwargs


async def _call(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Await an async function; run a plain one in a worker thread."""
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__
    ):
        return await function(**kwargs)
    value = await asyncio.to_thread(function, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _base_dir(context: RunContext) -> Path | None:
    if context.agents_file:
        return Path(context.agents_file).resolve().parent
    if context.agents is not None:
        return Path(context.agents.path).resolve().parent
    return None


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would hold it (datetimes and the like as strings)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))
