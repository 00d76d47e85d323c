"""Prompt agents: render the prompt, ask the router, parse and validate the answer.

A run of a single-shot agent keeps up to ``life_cycle.concurrency`` attempts in flight
until it has ``life_cycle.length`` validated results or has made ``attempt_cap`` attempts.
Only a validated answer counts as a success; it never starts more attempts than it still
needs good results, so a run does not overshoot its target.

One attempt is: render → request → answer → parse. When the answer does not parse, the
same conversation is continued with the parse error as feedback, at most ``REASKS``
times, before the attempt counts as failed. An agent with ``tools`` may answer with tool
calls instead (natively, or in a ``command`` field: :mod:`agentos.tools.calling`); each
call is run, recorded, and its result continues the conversation, at most
``tools.max_calls`` calls per attempt. Every step is an event of the run.

An answer the response cache served (the same conversation answered before, e.g. the
agents run again) asks for calls that ran then: its calls of tools that change things
(:attr:`~agentos.tools.types.Tool.side_effects`) are not run again, and the run fails
saying so (:meth:`PromptAgentRun._not_again`); read-only tools are called anew.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentos.agents.base import ModelRouter, RecordedRun, RunContext, retry_policy
from agentos.agents.instructions import format_instructions, reask_message
from agentos.agents.parsing import ParsedAnswer, parse_answer
from agentos.errors import AgentosError, EngineError, EngineStatusError, NoEngineError, ParseError
from agentos.router.jobs import InferenceRequest
from agentos.scheduler.display import Display, RunOutcome
from agentos.spec.agents import AgentSpec
from agentos.spec.templates import render
from agentos.store import Store, queries
from agentos.store.writer import Update
from agentos.tools.calling import (
    REFUSING_STATUSES,
    ToolKit,
    assistant_message,
    command_of,
    command_result_message,
    native_calls,
)
from agentos.tools.registry import ToolResult

REASKS = 1
"""Follow-up questions within one attempt after an answer that does not parse."""


class PromptAgentRun(RecordedRun[RunOutcome]):
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
        self._first_messages: list[dict[str, Any]] = []

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

    def pause(self) -> None:
        """Start no new attempts (those in flight finish) until ``resume``."""
        self.paused = True
        self._changed.set()

    def resume(self) -> None:
        self.paused = False
        self._changed.set()

    # -- the run's life-cycle (RecordedRun) ----------------------------------------------

    def _prepare(self) -> None:
        self._first_messages = self.messages()

    def _started(self) -> dict[str, Any]:
        return {
            "wanted": self.wanted,
            "attempt_cap": self.cap,
            "variables": self.variables,
            "json_schema": self.schema,
        }

    async def _body(self) -> str | None:
        async with asyncio.TaskGroup() as group:
            while True:
                # every attempt queues a handful of rows: start no more while the
                # store's writer is far behind (memory stays bounded)
                await self.store.room()
                while (
                    self.fatal is None
                    and not self.paused
                    and self.in_flight < self.spec.life_cycle.concurrency
                    and self.successes + self.in_flight < self.wanted
                    and self.attempts < self.cap
                ):
                    self.attempts += 1
                    self.in_flight += 1
                    group.create_task(self._attempt(self.attempts, self._first_messages))
                if self.in_flight == 0 and not self.paused:
                    break
                await self._changed.wait()
                self._changed.clear()
        if self.successes >= self.wanted:
            return None
        if self.fatal is not None:
            return self.fatal.message
        return (
            f"reached the attempt cap ({self.cap}) with {self.successes} of "
            f"{self.wanted} good results"
        )

    def _outcome(self, status: str, error: str | None) -> RunOutcome:
        return RunOutcome(
            run_id=self.run_id,
            agent=self.spec.name,
            status=status,
            wanted=self.wanted,
            successes=self.successes,
            attempts=self.attempts,
            error=error,
        )

    # -- attempts ------------------------------------------------------------------------

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
        """One attempt's conversation: ask, run the tool calls the answer asks for (see
        :mod:`agentos.tools.calling`), re-ask after an answer that does not parse, until a
        parsed answer (recorded as a result) or a bound is reached."""
        spec = self.spec
        retry = retry_policy(spec)
        kit = self._toolkit()
        schema = self.schema
        if kit is not None and kit.mode == "command":
            schema = kit.command_schema(self.schema)
            messages = kit.with_instructions(messages, self.schema)
        reasks = calls = turn = 0
        while True:
            params: dict[str, Any] = {
                "temperature": spec.temperature,
                "max_tokens": spec.max_tokens,
            }
            if kit is not None and kit.mode == "native":
                params["tools"] = kit.openai_tools()
            request = InferenceRequest(
                kind="chat",
                model=spec.model,
                messages=messages,
                params=params,
                json_schema=schema,
                sample=self.sample(number),
            )
            self.event("request", attempt=number, turn=turn, messages=messages)
            try:
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
            except EngineStatusError as exc:
                if kit is None or kit.mode != "native" or exc.status not in REFUSING_STATUSES:
                    raise
                kit.mode = "command"
                self.event("tool_calling_fallback", attempt=number, turn=turn, error=exc.message)
                schema = kit.command_schema(self.schema)
                messages = kit.with_instructions(messages, self.schema)
                turn += 1
                continue
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
            turn += 1
            if kit is not None and kit.mode == "native":
                message, native = native_calls(completion.response)
                if native and message is not None:
                    if calls + len(native) > kit.max_calls:
                        return False, self._too_many_calls(number, kit)
                    if completion.cache_hit:
                        asked = [(call.name, call.arguments) for call in native]
                        refused = self._not_again(number, turn - 1, kit, asked)
                        if refused is not None:
                            return False, refused
                    messages = [*messages, assistant_message(message)]
                    for call in native:
                        result = await self._call_tool(kit, number, turn, call.name, call.arguments)
                        content = result.for_model()
                        messages.append(
                            {"role": "tool", "tool_call_id": call.id, "content": content}
                        )
                    calls += len(native)
                    continue
            try:
                if kit is not None and kit.mode == "command":
                    parsed = kit.parse(completion.text, schema)
                else:
                    parsed = parse_answer(completion.text, schema)
                command = command_of(parsed.data) if kit and kit.mode == "command" else None
                if kit is not None and command is not None:
                    if calls >= kit.max_calls:
                        return False, self._too_many_calls(number, kit)
                    name = str(command.get("tool"))
                    if completion.cache_hit:
                        asked = [(name, command.get("args"))]
                        refused = self._not_again(number, turn - 1, kit, asked)
                        if refused is not None:
                            return False, refused
                    result = await self._call_tool(kit, number, turn, name, command.get("args"))
                    calls += 1
                    messages = [
                        *messages,
                        {"role": "assistant", "content": completion.text},
                        command_result_message(name, result.for_model()),
                    ]
                    continue
                if kit is not None and kit.mode == "command":
                    parsed = _reparsed(kit.unwrap(parsed.data, self.schema), self.schema)
            except ParseError as exc:
                self.router.reject(completion)
                self.event("parse_error", attempt=number, turn=turn - 1, error=exc.message)
                if reasks == REASKS:
                    return False, exc.message
                reasks += 1
                messages = [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    {"role": "user", "content": reask_message(exc)},
                ]
                continue
            self.event(
                "parsed",
                attempt=number,
                turn=turn - 1,
                data=parsed.data,
                repairs=list(parsed.repairs),
            )
            queries.record_result(self.store, self.run_id, f"{self.run_id}:{number}", parsed.data)
            if self.context is not None:
                self.context.result(self.spec, self.run_id, parsed.data)
            summary = json.dumps(parsed.data, ensure_ascii=False)
            return True, summary[:120]

    def _toolkit(self) -> ToolKit | None:
        """The run's tools and how its model calls them (None for an agent without tools);
        made on first use, shared by the run's attempts."""
        if not self.spec.tools:
            return None
        kit: ToolKit | None = getattr(self, "_kit", None)
        if kit is None:
            kit = ToolKit.for_run(self.spec, self.context, self.store, self.run_id)
            self._kit = kit
            self.event(
                "tools",
                tools=[tool.name for tool in kit.tools],
                mode=kit.mode,
                max_calls=kit.max_calls,
            )
        return kit

    async def _call_tool(
        self, kit: ToolKit, number: int, turn: int, name: str, arguments: Any
    ) -> ToolResult:
        """Run one tool call the model asked for (recorded in ``tool_calls`` and as a
        ``tool_call`` event); a tool the agent may not use is a refused call."""
        step = kit.next_step()
        tool = kit.get(name)
        if tool is None:
            allowed = ", ".join(t.name for t in kit.tools)
            return kit.registry.refuse(
                name,
                arguments,
                f"'{name}' is not one of this agent's tools ({allowed})",
                context=kit.context,
                step=step,
                events=self._events,
                attempt=number,
                turn=turn,
            )
        return await kit.registry.call(
            tool,
            arguments,
            context=kit.context,
            step=step,
            events=self._events,
            attempt=number,
            turn=turn,
        )

    def _not_again(
        self, number: int, turn: int, kit: ToolKit, asked: list[tuple[str, Any]]
    ) -> str | None:
        """Why the tool calls of an answer served from the response cache are not run, or
        None when they may be.

        A cached answer is the model's answer to the same conversation asked before, and
        the calls it asks for ran then; running those that change things (adding a todo,
        a user tool) again because the model call was a cache hit would do twice what was
        asked once (the agents run twice). So none of the answer's calls is run, and the
        run ends failed (its next attempts would be served from the same cache), saying
        how to run them on every run (``cache: false``). Calls of read-only tools only
        run anew (a calculation, a fresh GET), as a planner's cached read-only plan does
        (:meth:`agentos.agents.planner.PlannerRun._not_again`).
        """
        if kit.registry.serves_record:
            return None  # a replay: its calls are answered from the record, not run
        changing = list(
            dict.fromkeys(
                name for name, _ in asked if (tool := kit.get(name)) and tool.side_effects
            )
        )
        if not changing:
            return None
        self.event(
            "tool_call_not_run",
            attempt=number,
            turn=turn,
            reason="cached answer with side effects",
            calls=[{"tool": name, "arguments": arguments} for name, arguments in asked],
        )
        plural = len(changing) > 1
        message = (
            f"the answer came from the response cache (this conversation was answered "
            f"before), and its tool call{'s' if plural else ''} {', '.join(changing)} "
            f"change{'' if plural else 's'} things; a cached answer's tool calls that change "
            f"things are not run again, so none of its calls was run. To run them on every "
            f"run, set cache: false on agent '{self.spec.name}'"
        )
        self.fatal = AgentosError(message)
        return message

    def _too_many_calls(self, number: int, kit: ToolKit) -> str:
        message = f"made {kit.max_calls} tool calls without an answer (tools.max_calls)"
        self.event("error", attempt=number, error=message, error_class="ToolCallLimit")
        return message


def _reparsed(data: Any, schema: dict[str, Any] | None) -> ParsedAnswer:
    """A command-mode answer, its command taken off, checked against the agent's own
    response format (text for a plain-text agent)."""
    if schema is None:
        return parse_answer(data if isinstance(data, str) else json.dumps(data), None)
    return parse_answer(json.dumps(data, ensure_ascii=False), schema)
