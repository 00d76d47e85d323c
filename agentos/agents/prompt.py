"""Prompt agents: render the prompt, ask the router, parse and validate the answer.

A run of a single-shot agent keeps up to ``life_cycle.concurrency`` attempts in flight
until it has ``life_cycle.length`` validated results or has made ``attempt_cap`` attempts.
Only a validated answer counts as a success; it never starts more attempts than it still
needs good results, so a run does not overshoot its target.

One attempt is: render → request → answer → parse. When the answer does not parse, the
same conversation is continued with the parse error as feedback, at most ``REASKS``
times, before the attempt counts as failed. Every step is an event of the run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentos.agents.base import ModelRouter, RunContext
from agentos.agents.instructions import format_instructions, reask_message
from agentos.agents.parsing import parse_answer
from agentos.errors import AgentosError, EngineError, NoEngineError, ParseError
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentSpec
from agentos.spec.templates import render
from agentos.store import Store, queries
from agentos.store.writer import Update

REASKS = 1
"""Follow-up questions within one attempt after an answer that does not parse."""


class PromptAgentRun:
    """One run of one prompt agent, recorded in the store as it happens."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        router: ModelRouter,
        store: Store,
        display: Display,
        agents_file: str | None = None,
        variables: dict[str, Any] | None = None,
        forked_from: str | None = None,
        context: RunContext | None = None,
    ) -> None:
        self.spec = spec
        self.router = router
        self.store = store
        self.display = display
        self.agents_file = agents_file
        self.forked_from = forked_from
        self.context = context
        self.variables = {**spec.vars, **(variables or {})}
        self.schema = spec.json_schema()
        self.wanted = spec.life_cycle.length
        self.cap = spec.life_cycle.attempt_cap
        self.successes = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.in_flight = 0
        self.status = "starting"
        self.paused = False
        self.cancel_reason: str | None = None
        self._task: asyncio.Task[RunOutcome] | None = None
        self.fatal: AgentosError | None = None
        self.run_id = ""
        self._events: queries.RunEvents | None = None
        self._changed = asyncio.Event()

    def messages(self) -> list[dict[str, Any]]:
        """The conversation of a first request: optional system, then the user prompt with
        the answer-format instructions appended."""
        prompt = render(self.spec.prompt or "", self.variables)
        if self.schema is not None:
            prompt = f"{prompt.rstrip()}\n\n{format_instructions(self.schema)}"
        messages: list[dict[str, Any]] = []
        if self.spec.system:
            messages.append({"role": "system", "content": render(self.spec.system, self.variables)})
        messages.append({"role": "user", "content": prompt})
        return messages

    def event(self, type_: str, **payload: Any) -> None:
        assert self._events is not None
        self._events.add(type_, payload)

    def pause(self) -> None:
        """Start no new attempts (those in flight finish) until ``resume``."""
        self.paused = True
        self._changed.set()

    def resume(self) -> None:
        self.paused = False
        self._changed.set()

    def cancel(self, reason: str) -> None:
        """End the run now, as ``cancelled`` with ``reason``; attempts in flight are dropped."""
        if self._task is not None and not self._task.done():
            self.cancel_reason = reason
            self._task.cancel()

    @property
    def agent(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        if self.status == "running" and self.paused:
            return "paused"
        return self.status

    async def run(self) -> RunOutcome:
        self._task = asyncio.current_task()
        first_messages = self.messages()
        self.run_id = await asyncio.to_thread(
            queries.create_run,
            self.store,
            agent=self.spec.name,
            kind=self.spec.kind,
            spec=self.spec.model_dump(mode="json"),
            wanted=self.wanted,
            agents_file=self.agents_file,
            forked_from=self.forked_from,
        )
        self._events = queries.RunEvents(self.store, self.run_id)
        self.status = "running"
        self.event(
            "run_started",
            wanted=self.wanted,
            attempt_cap=self.cap,
            variables=self.variables,
            json_schema=self.schema,
        )
        self.display.run_started(self.run_id, self.spec.name, self.wanted, self.cap)
        status: queries.RunStatus = "failed"
        error: str | None = None
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    while (
                        self.fatal is None
                        and not self.paused
                        and self.in_flight < self.spec.life_cycle.concurrency
                        and self.successes + self.in_flight < self.wanted
                        and self.attempts < self.cap
                    ):
                        self.attempts += 1
                        self.in_flight += 1
                        group.create_task(self._attempt(self.attempts, first_messages))
                    if self.in_flight == 0 and not self.paused:
                        break
                    await self._changed.wait()
                    self._changed.clear()
            if self.successes >= self.wanted:
                status = "succeeded"
            elif self.fatal is not None:
                error = self.fatal.message
            else:
                error = (
                    f"reached the attempt cap ({self.cap}) with {self.successes} of "
                    f"{self.wanted} good results"
                )
        except asyncio.CancelledError:
            status = "cancelled"
            error = self.cancel_reason or "interrupted"
            if self.cancel_reason is None:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            self.status = status
            self.event("run_finished", status=status, error=error, successes=self.successes)
            queries.finish_run(
                self.store,
                self.run_id,
                status=status,
                error=error,
                successes=self.successes,
                attempts=self.attempts,
            )
            outcome = RunOutcome(
                run_id=self.run_id,
                agent=self.spec.name,
                status=status,
                wanted=self.wanted,
                successes=self.successes,
                attempts=self.attempts,
                error=error,
            )
            self.display.run_finished(outcome)
        return outcome

    async def _attempt(self, number: int, first_messages: list[dict[str, Any]]) -> None:
        ok, detail = False, ""
        try:
            ok, detail = await self._ask(number, list(first_messages))
        except NoEngineError as exc:
            self.fatal = exc
            detail = exc.message
            self.event("error", attempt=number, error=exc.message, error_class="NoEngineError")
        except EngineError as exc:
            detail = exc.message
            self.event("error", attempt=number, error=exc.message, error_class=type(exc).__name__)
        except AgentosError as exc:
            self.fatal = exc
            detail = exc.message
            self.event("error", attempt=number, error=exc.message, error_class=type(exc).__name__)
        finally:
            self.in_flight -= 1
            if ok:
                self.successes += 1
            else:
                self.failed_attempts += 1
            self._changed.set()
            # progress for `agentos runs` and `top`; the writer groups these, so it is cheap
            self.store.submit(
                Update(
                    "runs", self.run_id, {"successes": self.successes, "attempts": self.attempts}
                )
            )
        self.display.attempt_finished(
            self.run_id, self.spec.name, ok, self.successes, number, detail
        )

    async def _ask(self, number: int, messages: list[dict[str, Any]]) -> tuple[bool, str]:
        spec = self.spec
        retry = RetryPolicy(
            max_attempts=spec.retry.max_attempts,
            backoff_initial=spec.retry.backoff_initial,
            backoff_max=spec.retry.backoff_max,
            jitter=spec.retry.jitter,
        )
        for turn in range(REASKS + 1):
            request = InferenceRequest(
                kind="chat",
                model=spec.model,
                messages=messages,
                params={"temperature": spec.temperature, "max_tokens": spec.max_tokens},
                json_schema=self.schema,
                sample=number,
            )
            self.event("request", attempt=number, turn=turn, messages=messages)
            completion = await self.router.submit(
                request,
                priority=spec.priority,
                engine=spec.engine,
                retry=retry,
                run_id=self.run_id,
                process=spec.name,
                job_id=f"{self.run_id}:{number}:{turn}",
                use_cache=spec.cache,
            )
            self.event(
                "answer",
                attempt=number,
                turn=turn,
                call_id=completion.call_id,
                engine=completion.engine,
                model=completion.model,
                text=completion.text,
                latency_ms=round(completion.latency_ms, 2),
                tokens=completion.prompt_tokens + completion.completion_tokens,
            )
            try:
                parsed = parse_answer(completion.text, self.schema)
            except ParseError as exc:
                self.event("parse_error", attempt=number, turn=turn, error=exc.message)
                if turn == REASKS:
                    return False, exc.message
                messages = [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    {"role": "user", "content": reask_message(exc)},
                ]
                continue
            self.event(
                "parsed", attempt=number, turn=turn, data=parsed.data, repairs=list(parsed.repairs)
            )
            queries.record_result(self.store, self.run_id, f"{self.run_id}:{number}", parsed.data)
            if self.context is not None:
                self.context.result(self.spec, self.run_id, parsed.data)
            summary = json.dumps(parsed.data, ensure_ascii=False)
            return True, summary[:120]
        return False, "no answer"
